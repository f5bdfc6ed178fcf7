/* One policy decision for a new connection, as every hook that enforces takes it: the
 * verdict of the endpoint's entries, reported as a policy-verdict event; a denial is
 * counted and reported as a drop, unless the endpoint is in policy-audit-mode, where it
 * is reported with the verdict AUDIT and the connection goes on (Cilium's audit mode:
 * nothing is dropped by policy, every verdict can be read in the flows). */
#ifndef CILIUMPY_VERDICT_H
#define CILIUMPY_VERDICT_H

#include "lib/maps.h"
#include "lib/events.h"
#include "lib/policy.h"

/* REASON_FORWARDED to pass (allowed, or denied in audit mode), else the drop reason
 * (the drop already counted and reported). ``key``: the endpoint's policy key (its
 * ifindex, or HOST_EP_KEY); ``peer_id``: the other side's identity; ``src_id`` and
 * ``dst_id`` as the events report them. */
static __always_inline __u8 decide(__u32 ep_flags, __u32 key, __u8 dir, __u32 peer_id,
				   struct flow *f, __u16 *proxy, __u32 src_id, __u32 dst_id)
{
	__u8 reason = policy_verdict(key, dir, peer_id, f, proxy);

	if (reason == REASON_FORWARDED) {
		emit(EVENT_POLICY_VERDICT, reason, dir, VERDICT_ALLOWED, key, src_id, dst_id, f);
		return reason;
	}
	if (ep_flags & EP_AUDIT) {
		*proxy = 0;
		emit(EVENT_POLICY_VERDICT, reason, dir, VERDICT_AUDIT, key, src_id, dst_id, f);
		return REASON_FORWARDED;
	}
	emit(EVENT_POLICY_VERDICT, reason, dir, VERDICT_DENIED, key, src_id, dst_id, f);
	count(reason, dir, f->len);
	emit(EVENT_DROP, reason, dir, VERDICT_DENIED, key, src_id, dst_id, f);
	return reason;
}

#endif
