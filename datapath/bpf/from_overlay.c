/* tc ingress of the overlay device: packets from endpoints on other nodes, already
 * decapsulated. The VNI is the sender's security identity: the destination endpoint's
 * ingress policy is enforced on it right here (no ipcache lookup for the source), and
 * an accepted packet goes straight into the container with bpf_redirect_peer, skipping
 * the host stack and the host veth. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/events.h"
#include "lib/conntrack.h"
#include "lib/policy.h"
#include "lib/ingress.h"

int from_overlay(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = {};
	struct flow f = {};
	struct ipcache_val *dst;
	struct ep_info *ep;
	__u32 ifindex, src_id;
	int parsed;

	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) < 0)
		return TC_ACT_OK; /* not from a tunnel: nothing to add */
	parsed = parse_flow(skb, &f);
	if (parsed != 0)
		return parsed > 0 ? TC_ACT_OK : TC_ACT_SHOT;
	dst = ipcache_lookup(f.family, f.daddr);
	if (!dst || !dst->ifindex)
		return TC_ACT_OK; /* not a local endpoint: the host decides */
	ifindex = dst->ifindex;
	ep = cp_endpoints.lookup(&ifindex);
	if (!ep)
		return TC_ACT_OK;
	src_id = key.tunnel_id & VNI_MASK;
	if (!f.passthrough && ingress_verdict(ep, ifindex, &f, src_id ? src_id : ID_WORLD)
	    != TC_ACT_OK)
		return TC_ACT_SHOT;
	/* the inner frame was addressed to the sender's gateway: readdress it the way the
	 * host would (from our gateway to the container) */
	if (bpf_skb_store_bytes(skb, 0, ep->mac, 6, 0) < 0 ||
	    bpf_skb_store_bytes(skb, 6, ep->host_mac, 6, 0) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect_peer(ifindex, 0);
}
