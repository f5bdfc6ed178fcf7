/* tc egress of an endpoint's host-side veth: packets about to enter the container.
 * Enforces the endpoint's ingress policy against the source's identity: the one the
 * overlay carried (the VNI, handed over by from_overlay) or else the ipcache's. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/events.h"
#include "lib/conntrack.h"
#include "lib/policy.h"
#include "lib/overlay.h"

int to_container(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct ep_info *ep = cp_endpoints.lookup(&ifindex);
	struct flow f = {};
	__u64 now;
	__u32 src_id, overlay_id = take_overlay_identity(skb);
	__u8 reason;
	int parsed, both = 0;

	if (!ep)
		return TC_ACT_OK;
	parsed = parse_flow(skb, &f);
	if (parsed > 0)
		return TC_ACT_OK;
	if (parsed < 0) {
		count(REASON_MALFORMED, DIR_INGRESS, skb->len);
		emit(EVENT_DROP, REASON_MALFORMED, DIR_INGRESS, 0, ifindex, 0, ep->identity, &f);
		return TC_ACT_SHOT;
	}
	if (f.passthrough) {
		count(REASON_FORWARDED, DIR_INGRESS, f.len);
		return TC_ACT_OK;
	}
	now = bpf_ktime_get_ns();
	if (ct_known(&f, CT_INGRESS_OK, CT_EGRESS_OK, now, &both)) {
		count(REASON_FORWARDED, DIR_INGRESS, f.len);
		return TC_ACT_OK;
	}
	src_id = overlay_id ? overlay_id : identity_of(f.family, f.saddr);
	if (ep->flags & EP_ENFORCE_INGRESS) {
		reason = policy_verdict(ifindex, DIR_INGRESS, src_id, &f);
		emit(EVENT_POLICY_VERDICT, reason, DIR_INGRESS, reason == REASON_FORWARDED, ifindex,
		     src_id, ep->identity, &f);
		if (reason != REASON_FORWARDED) {
			count(reason, DIR_INGRESS, f.len);
			emit(EVENT_DROP, reason, DIR_INGRESS, 0, ifindex, src_id, ep->identity, &f);
			return TC_ACT_SHOT;
		}
	}
	ct_allow(&f, CT_INGRESS_OK, src_id, ep->identity, now);
	count(REASON_FORWARDED, DIR_INGRESS, f.len);
	emit(EVENT_TRACE, REASON_FORWARDED, DIR_INGRESS, 1, ifindex, src_id, ep->identity, &f);
	return TC_ACT_OK;
}
