/* tc egress of the overlay device: packets the host itself sends to endpoints on other
 * nodes (the L7 proxy's connections and replies, host processes), routed to this device
 * without a tunnel key. Picks the remote node from the ipcache and the VNI: the proxy's
 * client identity (its mark), else the sender's identity (the host as remote-node).
 * Packets from_container encapsulated already carry MARK_OVERLAY_KEYED and pass. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/policy.h"
#include "lib/proxy.h"

int to_overlay(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = {};
	struct ipcache_val *dst, *src;
	struct flow f = {};
	__u32 identity;

	if ((skb->mark & MARK_MAGIC_MASK) == MARK_OVERLAY_KEYED)
		return TC_ACT_OK;
	if (parse_flow(skb, &f) != 0)
		return TC_ACT_SHOT; /* nothing but IP is ever routed here */
	dst = ipcache_lookup(f.family, f.daddr);
	if (!dst || !dst->tunnel_ip)
		return TC_ACT_SHOT; /* no node to send it to */
	identity = identity_from_proxy(skb);
	if (!identity) {
		src = ipcache_lookup(f.family, f.saddr);
		identity = src ? src->identity : ID_HOST;
	}
	/* what this host is to the other node; an address of a third node (node-local
	 * identity) is not vouched for by the VNI either */
	if (identity == ID_HOST || is_node_scope(identity))
		identity = ID_REMOTE_NODE;
	else if (identity > VNI_MASK)
		identity = ID_WORLD; /* a CIDR identity: node-local, the VNI cannot carry it */
	key.remote_ipv4 = dst->tunnel_ip;
	key.tunnel_id = identity & VNI_MASK;
	key.tunnel_ttl = 64;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), OVERLAY_KEY_FLAGS) < 0)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}
