/* tc egress of an endpoint's host-side veth: packets about to enter the container.
 * Enforces the endpoint's ingress policy against the source's identity (ipcache, or
 * the mark of the L7 proxy's upstream side). An L7 port cannot be redirected from
 * here (only tc ingress hooks can): what reaches it without the proxy is dropped. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/events.h"
#include "lib/conntrack.h"
#include "lib/policy.h"
#include "lib/ingress.h"
#include "lib/proxy.h"
#include "lib/lb.h"

int to_container(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct ep_info *ep = cp_endpoints.lookup(&ifindex);
	struct flow f = {};
	__u32 via_proxy;
	__u16 proxy = 0;
	int parsed, verdict;

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
	via_proxy = identity_from_proxy(skb);
	verdict = ingress_verdict(ep, ifindex, &f, via_proxy, via_proxy != 0, &proxy);
	if (verdict == TC_ACT_OK && proxy) {
		count(REASON_PROXY_UNAVAILABLE, DIR_INGRESS, f.len);
		emit(EVENT_DROP, REASON_PROXY_UNAVAILABLE, DIR_INGRESS, 0, ifindex, 0,
		     ep->identity, &f);
		return TC_ACT_SHOT;
	}
	if (verdict == TC_ACT_OK)
		lb4_dsr_learn(skb, &f); /* routed natively from a DSR frontend's node */
	return verdict;
}
