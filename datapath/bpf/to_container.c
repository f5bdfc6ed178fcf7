/* tc egress of an endpoint's host-side veth: packets about to enter the container.
 * Enforces the endpoint's ingress policy against the source's identity (ipcache). */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/events.h"
#include "lib/conntrack.h"
#include "lib/policy.h"
#include "lib/ingress.h"

int to_container(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct ep_info *ep = cp_endpoints.lookup(&ifindex);
	struct flow f = {};
	int parsed;

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
	return ingress_verdict(ep, ifindex, &f, 0);
}
