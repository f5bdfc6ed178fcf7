/* The overlay: packets to endpoints on other nodes leave through one VXLAN (or
 * Geneve) device in external mode. The tunnel key carries the remote node (from the
 * ipcache) and, as the VNI, the sender's security identity, so the receiving node
 * enforces its ingress policy on the identity the sender's node vouched for. */
#ifndef CILIUMPY_OVERLAY_H
#define CILIUMPY_OVERLAY_H

#include "lib/maps.h"
#include "lib/policy.h"

/* A redirect into the overlay, or -1 when the packet is not for a remote endpoint (or
 * the node is not in tunnel mode): the caller then lets the host route it. ``dst``:
 * the destination's ipcache entry, which the caller has looked up already. */
static __always_inline int encap_to_remote(struct __sk_buff *skb, struct ipcache_val *dst,
					   __u32 src_identity)
{
	__u32 zero = 0;
	struct dp_config *cfg = cp_config.lookup(&zero);
	struct bpf_tunnel_key key = {};

	if (!cfg || cfg->mode != MODE_TUNNEL || !cfg->tunnel_ifindex)
		return -1;
	if (!dst || !dst->tunnel_ip || dst->ifindex)
		return -1;
	key.remote_ipv4 = dst->tunnel_ip; /* host byte order, as the helper expects */
	key.tunnel_id = src_identity & VNI_MASK;
	key.tunnel_ttl = 64;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), OVERLAY_KEY_FLAGS) < 0)
		return -1;
	skb->mark = MARK_OVERLAY_KEYED;
	return bpf_redirect(cfg->tunnel_ifindex, 0);
}

#endif
