/* tc ingress of the overlay device: packets from endpoints on other nodes, already
 * decapsulated. The VNI is the sender's security identity: the destination endpoint's
 * ingress policy is enforced on it right here (no ipcache lookup for the source; a
 * host's own packets, VNI reserved:remote-node, take the identity of the node that
 * sent them: the ipcache's for the outer source address), and
 * an accepted packet goes straight into the container with bpf_redirect_peer, skipping
 * the host stack and the host veth, or to the L7 proxy when its port has L7 rules. A
 * connection another node balanced to this endpoint with direct server return is
 * learnt here (lb.h, lb4_dsr_learn). */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/events.h"
#include "lib/conntrack.h"
#include "lib/policy.h"
#include "lib/ingress.h"
#include "lib/proxy.h"
#include "lib/lb.h"

int from_overlay(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = {};
	struct flow f = {};
	struct ipcache_val *dst, *node;
	struct ep_info *ep;
	__u32 ifindex, src_id;
	__u16 proxy = 0;
	int parsed;

	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) < 0)
		return TC_ACT_OK; /* not from a tunnel: nothing to add */
	parsed = parse_flow(skb, &f);
	if (parsed != 0)
		return parsed > 0 ? TC_ACT_OK : TC_ACT_SHOT;
	dst = ipcache_lookup(f.family, f.daddr);
	if (!dst || !dst->ifindex) {
		/* not a local endpoint: the host's own (replies to its proxy, say). The inner
		 * frame was addressed to the sender's side: make the stack take it. */
		bpf_skb_change_type(skb, 0 /* PACKET_HOST */);
		return TC_ACT_OK;
	}
	ifindex = dst->ifindex;
	ep = cp_endpoints.lookup(&ifindex);
	if (!ep)
		return TC_ACT_OK;
	src_id = key.tunnel_id & VNI_MASK;
	if (src_id == ID_REMOTE_NODE) {
		/* the sending host itself: which node it is (its labels, for fromNodes) is
		 * the identity the ipcache has for the outer source address */
		node = lb_ipcache4(bpf_htonl(key.remote_ipv4));
		if (node && is_node_scope(node->identity))
			src_id = node->identity;
	}
	if (!f.passthrough && ingress_verdict(ep, ifindex, &f, src_id ? src_id : ID_WORLD, 0,
					      &proxy) != TC_ACT_OK)
		return TC_ACT_SHOT;
	lb4_dsr_learn(skb, &f); /* a DSR connection: its replies leave from the frontend */
	if (proxy) {
		if (redirect_to_proxy(skb, &f, proxy) == TC_ACT_OK)
			return TC_ACT_OK;
		count(REASON_PROXY_UNAVAILABLE, DIR_INGRESS, f.len);
		emit(EVENT_DROP, REASON_PROXY_UNAVAILABLE, DIR_INGRESS, 0, ifindex, src_id,
		     ep->identity, &f);
		return TC_ACT_SHOT;
	}
	/* the inner frame was addressed to the sender's gateway: readdress it the way the
	 * host would (from our gateway to the container) */
	if (bpf_skb_store_bytes(skb, 0, ep->mac, 6, 0) < 0 ||
	    bpf_skb_store_bytes(skb, 6, ep->host_mac, 6, 0) < 0)
		return TC_ACT_SHOT;
	if (ep->flags & EP_SHAPED_INGRESS) /* through the host veth, whose qdisc shapes it */
		return bpf_redirect(ifindex, 0);
	return bpf_redirect_peer(ifindex, 0);
}
