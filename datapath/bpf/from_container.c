/* tc ingress of an endpoint's host-side veth: packets leaving the container.
 * Enforces the endpoint's egress policy against the destination's identity, and for a
 * destination on the host itself the host's ingress policy (host firewall); sends
 * connections to L7 ports (the endpoint's egress rules, or a local destination's
 * ingress rules) to the L7 proxy; in tunnel mode, sends packets for endpoints on other
 * nodes into the overlay. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/events.h"
#include "lib/conntrack.h"
#include "lib/policy.h"
#include "lib/verdict.h"
#include "lib/hostfw.h"
#include "lib/overlay.h"
#include "lib/proxy.h"
#include "lib/bandwidth.h"
#include "lib/lb.h"

/* An established connection to a local endpoint whose ingress already accepted it:
 * hand the packet to that container directly (bpf_redirect_peer), skipping the host's
 * routing and the destination veth. New connections never take this path, so the
 * destination's ingress policy always sees them first. */
static __always_inline int deliver_local(struct __sk_buff *skb, struct flow *f,
					 struct ipcache_val *dst)
{
	struct ep_info *peer;
	__u32 peer_ifindex;

	if (!dst || !dst->ifindex)
		return -1;
	peer_ifindex = dst->ifindex;
	peer = cp_endpoints.lookup(&peer_ifindex);
	if (!peer || (peer->flags & EP_SHAPED_INGRESS))
		return -1; /* a shaped destination is reached through its veth's qdisc */
	if (bpf_skb_store_bytes(skb, 0, peer->mac, 6, 0) < 0 ||
	    bpf_skb_store_bytes(skb, 6, peer->host_mac, 6, 0) < 0)
		return -1;
	count(REASON_FORWARDED, DIR_INGRESS, f->len);
	return bpf_redirect_peer(peer_ifindex, 0);
}

/* The L7 proxy port a local destination's ingress policy gives a new connection (0 if
 * none, or if the destination's own hook will refuse it anyway). Only a tc ingress hook
 * can hand a connection to the proxy, so this hook decides for the destination. */
static __always_inline __u16 local_ingress_proxy(struct ipcache_val *dst, __u32 src_id,
						 struct flow *f)
{
	struct ep_info *peer;
	__u32 peer_ifindex;
	__u16 proxy = 0;

	if (!dst || !dst->ifindex || f->proto != IPPROTO_TCP)
		return 0;
	peer_ifindex = dst->ifindex;
	peer = cp_endpoints.lookup(&peer_ifindex);
	if (!peer || !(peer->flags & EP_ENFORCE_INGRESS))
		return 0;
	if (policy_verdict(peer_ifindex, DIR_INGRESS, src_id, f, &proxy) != REASON_FORWARDED)
		return 0;
	return proxy;
}

/* A new connection to one of the host's addresses: the host's ingress policy (the host
 * firewall) decides, here, as no other hook sees it. CT_INGRESS_OK when the host
 * endpoint exists (tracked as the host's), 0 without the host firewall, -1 to drop. */
static __always_inline int to_host(struct ep_info *ep, struct flow *f)
{
	struct ep_info *host = host_endpoint();
	__u16 proxy = 0;

	if (!host)
		return 0;
	if ((host->flags & EP_ENFORCE_INGRESS) &&
	    decide(host->flags, HOST_EP_KEY, DIR_INGRESS, ep->identity, f, &proxy, ep->identity,
		   ID_HOST) != REASON_FORWARDED)
		return -1;
	return CT_INGRESS_OK;
}

static __always_inline int to_proxy_or_drop(struct __sk_buff *skb, struct flow *f,
					    __u16 proxy, __u32 ifindex, __u32 src_id,
					    __u32 dst_id)
{
	if (redirect_to_proxy(skb, f, proxy) == TC_ACT_OK) {
		count(REASON_FORWARDED, DIR_EGRESS, f->len);
		return TC_ACT_OK;
	}
	count(REASON_PROXY_UNAVAILABLE, DIR_EGRESS, f->len);
	emit(EVENT_DROP, REASON_PROXY_UNAVAILABLE, DIR_EGRESS, 0, ifindex, src_id, dst_id, f);
	return TC_ACT_SHOT;
}

int from_container(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct ep_info *ep = cp_endpoints.lookup(&ifindex);
	struct ipcache_val *dst;
	struct flow f = {};
	__u64 now;
	__u32 dst_id;
	__u16 proxy = 0;
	__u8 reason;
	int parsed, both = 0, redirected, nat_dev = 0, host_ok = 0;

	if (!ep)
		return TC_ACT_OK; /* not a ciliumpy endpoint */
	parsed = parse_flow(skb, &f);
	if (parsed > 0)
		return TC_ACT_OK; /* ARP and other non-IP */
	if (parsed < 0) {
		count(REASON_MALFORMED, DIR_EGRESS, skb->len);
		emit(EVENT_DROP, REASON_MALFORMED, DIR_EGRESS, 0, ifindex, ep->identity, 0, &f);
		return TC_ACT_SHOT;
	}
	now = bpf_ktime_get_ns();
	if ((ep->flags & EP_SHAPED_EGRESS) && !bandwidth_admit(ifindex, skb->len, now)) {
		count(REASON_BANDWIDTH, DIR_EGRESS, skb->len);
		emit(EVENT_DROP, REASON_BANDWIDTH, DIR_EGRESS, 0, ifindex, ep->identity, 0, &f);
		return TC_ACT_SHOT;
	}
	if (f.passthrough) {
		count(REASON_FORWARDED, DIR_EGRESS, f.len);
		return TC_ACT_OK;
	}
	dst = ipcache_lookup(f.family, f.daddr); /* once: identity, local peer, remote node */
	if (ct_known(&f, CT_EGRESS_OK, CT_INGRESS_OK, now, &both, &proxy)) {
		if (proxy)
			return to_proxy_or_drop(skb, &f, proxy, ifindex, ep->identity,
						dst ? dst->identity : ID_WORLD);
		count(REASON_FORWARDED, DIR_EGRESS, f.len);
		if (both) {
			nat_dev = lb4_reply_from_host(skb, &f); /* a published port's reply */
			if (nat_dev < 0)
				return TC_ACT_SHOT;
			redirected = nat_dev ? -1 : deliver_local(skb, &f, dst);
			if (redirected >= 0)
				return redirected;
		}
		redirected = encap_to_remote(skb, dst, ep->identity);
		if (redirected >= 0)
			return redirected;
		return nat_dev ? lb_redirect_neigh(nat_dev, NULL, 0, 0) : TC_ACT_OK;
	}
	dst_id = dst ? dst->identity : ID_WORLD;
	if (ep->flags & EP_ENFORCE_EGRESS) {
		reason = decide(ep->flags, ifindex, DIR_EGRESS, dst_id, &f, &proxy, ep->identity,
				dst_id);
		if (reason != REASON_FORWARDED)
			return TC_ACT_SHOT;
	}
	if (dst_id == ID_HOST) {
		host_ok = to_host(ep, &f);
		if (host_ok < 0)
			return TC_ACT_SHOT;
	}
	if (!proxy)
		proxy = local_ingress_proxy(dst, ep->identity, &f);
	ct_allow(&f, CT_EGRESS_OK | host_ok, ep->identity, dst_id, now, proxy);
	emit(EVENT_TRACE, REASON_FORWARDED, DIR_EGRESS, 1, ifindex, ep->identity, dst_id, &f);
	if (proxy)
		return to_proxy_or_drop(skb, &f, proxy, ifindex, ep->identity, dst_id);
	count(REASON_FORWARDED, DIR_EGRESS, f.len);
	redirected = encap_to_remote(skb, dst, ep->identity);
	return redirected >= 0 ? redirected : TC_ACT_OK;
}
