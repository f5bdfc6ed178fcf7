/* An endpoint's ingress policy, shared by the two ways a packet reaches a container:
 * through its host veth (to_container) and straight from the overlay (from_overlay,
 * which then hands the packet to the container with bpf_redirect_peer). */
#ifndef CILIUMPY_INGRESS_H
#define CILIUMPY_INGRESS_H

#include "lib/maps.h"
#include "lib/events.h"
#include "lib/conntrack.h"
#include "lib/policy.h"
#include "lib/verdict.h"

/* TC_ACT_OK to deliver, TC_ACT_SHOT once the drop is counted and reported.
 * ``src_id`` 0: the sender's identity comes from the ipcache (looked up only for new
 * connections); the overlay passes the identity its VNI carried, the L7 proxy's
 * upstream side the identity of its client (and never goes back to the proxy).
 * ``proxy``: set when an accepted packet must go through the L7 proxy. */
static __always_inline int ingress_verdict(struct ep_info *ep, __u32 ifindex, struct flow *f,
					   __u32 src_id, int from_proxy, __u16 *proxy)
{
	__u64 now = bpf_ktime_get_ns();
	__u8 reason;
	int both = 0;

	if (ct_known(f, CT_INGRESS_OK, CT_EGRESS_OK, now, &both, proxy)) {
		count(REASON_FORWARDED, DIR_INGRESS, f->len);
		return TC_ACT_OK;
	}
	if (!src_id)
		src_id = identity_of(f->family, f->saddr);
	if (ep->flags & EP_ENFORCE_INGRESS) {
		reason = decide(ep->flags, ifindex, DIR_INGRESS, src_id, f, proxy, src_id,
				ep->identity);
		if (reason != REASON_FORWARDED)
			return TC_ACT_SHOT;
	}
	if (from_proxy)
		*proxy = 0; /* judged by the proxy already: its upstream side goes straight in */
	ct_allow(f, CT_INGRESS_OK, src_id, ep->identity, now, *proxy);
	count(REASON_FORWARDED, DIR_INGRESS, f->len);
	emit(EVENT_TRACE, REASON_FORWARDED, DIR_INGRESS, 1, ifindex, src_id, ep->identity, f);
	return TC_ACT_OK;
}

#endif
