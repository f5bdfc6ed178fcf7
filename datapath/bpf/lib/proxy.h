/* The L7 redirect: connections whose policy entry names a proxy port are handed to the
 * agent's transparent proxy in the host namespace, keeping their original destination.
 *
 * Only a tc *ingress* hook can do this (bpf_sk_assign works there alone): the proxy's
 * socket is assigned to the packet, which is marked MARK_TO_PROXY so that the policy
 * routing rule the agent installs (fwmark -> a table with a `local` default route)
 * delivers it to the host's stack, where TCP takes the assigned socket. The first
 * lookup finds the proxy's established socket for this connection (every packet after
 * the SYN); the second, the proxy's listener (the SYN), which then accepts with the
 * original destination as its local address (IP_TRANSPARENT). UDP (DNS to the DNS
 * proxy) takes the proxy's UDP socket on the same port; the proxy reads the original
 * destination from IP_ORIGDSTADDR and answers from that address.
 *
 * The proxy's own upstream connections carry MARK_FROM_PROXY with the client's
 * identity in the upper 24 bits (a node-local one's scope in the low byte), so the
 * destination's ingress policy judges the client, not the host, and they are never
 * redirected again.
 *
 * Fail closed: with no proxy socket the packet is dropped (REASON_PROXY_UNAVAILABLE);
 * it is never delivered past the proxy. */
#ifndef CILIUMPY_PROXY_H
#define CILIUMPY_PROXY_H

#include "lib/common.h"

static __always_inline __u32 identity_from_proxy(struct __sk_buff *skb)
{
	switch (skb->mark & MARK_MAGIC_MASK) {
	case MARK_FROM_PROXY:
		return skb->mark >> 8;
	case MARK_FROM_PROXY_CIDR: /* a node-local identity does not fit in 24 bits */
		return ID_LOCAL_SCOPE | (skb->mark >> 8);
	case MARK_FROM_PROXY_NODE:
		return ID_NODE_SCOPE | (skb->mark >> 8);
	}
	return 0;
}

static __always_inline struct bpf_sock *proxy_lookup(struct __sk_buff *skb, struct flow *f,
						     __u16 sport, __u16 dport, int any_addr)
{
	struct bpf_sock_tuple tuple = {};

	if (f->family == 4) {
		if (!any_addr) {
			__builtin_memcpy(&tuple.ipv4.saddr, f->saddr, 4);
			__builtin_memcpy(&tuple.ipv4.daddr, f->daddr, 4);
		}
		tuple.ipv4.sport = bpf_htons(sport);
		tuple.ipv4.dport = bpf_htons(dport);
		if (f->proto == IPPROTO_UDP)
			return bpf_sk_lookup_udp(skb, &tuple, sizeof(tuple.ipv4),
						 BPF_F_CURRENT_NETNS, 0);
		return (struct bpf_sock *)bpf_skc_lookup_tcp(skb, &tuple, sizeof(tuple.ipv4),
							     BPF_F_CURRENT_NETNS, 0);
	}
	if (!any_addr) {
		__builtin_memcpy(tuple.ipv6.saddr, f->saddr, 16);
		__builtin_memcpy(tuple.ipv6.daddr, f->daddr, 16);
	}
	tuple.ipv6.sport = bpf_htons(sport);
	tuple.ipv6.dport = bpf_htons(dport);
	if (f->proto == IPPROTO_UDP)
		return bpf_sk_lookup_udp(skb, &tuple, sizeof(tuple.ipv6), BPF_F_CURRENT_NETNS, 0);
	return (struct bpf_sock *)bpf_skc_lookup_tcp(skb, &tuple, sizeof(tuple.ipv6),
						     BPF_F_CURRENT_NETNS, 0);
}

/* TC_ACT_OK once the packet is on its way to the proxy, TC_ACT_SHOT if no proxy
 * socket takes it (the caller has counted nothing yet). */
static __always_inline int redirect_to_proxy(struct __sk_buff *skb, struct flow *f,
					     __u16 proxy_port)
{
	struct bpf_sock *sk = NULL;
	long assigned;

	if (f->proto == IPPROTO_TCP) {
		sk = proxy_lookup(skb, f, f->sport, f->dport, 0);
		if (sk && (sk->state == BPF_TCP_LISTEN || sk->state == BPF_TCP_TIME_WAIT)) {
			bpf_sk_release(sk); /* a host listener on the original port: not the proxy */
			sk = NULL;
		}
	}
	/* UDP (DNS): every datagram goes to the proxy's socket; a socket bound to the
	 * original address (the proxy's answers come from one) must not take it */
	if (!sk)
		sk = proxy_lookup(skb, f, 0, proxy_port, 1);
	if (!sk)
		return TC_ACT_SHOT;
	assigned = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	if (assigned < 0)
		return TC_ACT_SHOT;
	skb->mark = MARK_TO_PROXY;
	/* the frame was addressed to the container's gateway MAC (the host veth): the
	 * host's stack takes it as its own (from the overlay device too) */
	bpf_skb_change_type(skb, 0 /* PACKET_HOST */);
	return TC_ACT_OK;
}

#endif
