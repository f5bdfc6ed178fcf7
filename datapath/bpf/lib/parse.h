/* Packet parsing into struct flow (direct packet access, bounds-checked). */
#ifndef CILIUMPY_PARSE_H
#define CILIUMPY_PARSE_H

#include "lib/common.h"

/* 0: parsed IP packet; 1: not IP (pass); -1: malformed */
static __always_inline int parse_flow(struct __sk_buff *skb, struct flow *f)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	void *l4;

	if ((void *)(eth + 1) > data_end)
		return 1;
	f->len = skb->len;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end || ip->ihl < 5)
			return -1;
		f->family = 4;
		f->proto = ip->protocol;
		__builtin_memcpy(f->saddr, &ip->saddr, 4);
		__builtin_memcpy(f->daddr, &ip->daddr, 4);
		if ((f->daddr[0] & 0xf0) == 0xe0 || ip->daddr == 0xffffffff ||
		    f->proto == IPPROTO_IGMP) {
			f->passthrough = 1; /* multicast, broadcast, IGMP: link-local chatter */
			return 0;
		}
		if (ip->frag_off & bpf_htons(0x1fff))
			return 0; /* later fragment: no L4 header */
		l4 = (void *)ip + ip->ihl * 4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return -1;
		f->family = 6;
		f->proto = ip6->nexthdr;
		__builtin_memcpy(f->saddr, &ip6->saddr, 16);
		__builtin_memcpy(f->daddr, &ip6->daddr, 16);
		if (f->daddr[0] == 0xff || f->proto == 0 /* hop-by-hop: MLD */) {
			f->passthrough = 1; /* multicast and MLD: link-local chatter */
			return 0;
		}
		l4 = (void *)(ip6 + 1);
	} else {
		return 1;
	}

	if (f->proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > data_end)
			return -1;
		f->sport = bpf_ntohs(tcp->source);
		f->dport = bpf_ntohs(tcp->dest);
		f->tcp_flags = ((__u8 *)tcp)[13];
	} else if (f->proto == IPPROTO_UDP || f->proto == IPPROTO_SCTP) {
		struct udphdr *udp = l4; /* SCTP's first 4 bytes are ports too */
		if ((void *)(udp + 1) > data_end)
			return -1;
		f->sport = bpf_ntohs(udp->source);
		f->dport = bpf_ntohs(udp->dest);
	} else if (f->proto == IPPROTO_ICMP || f->proto == IPPROTO_ICMPV6) {
		struct icmphdr *icmp = l4; /* same layout for the fields used */
		if ((void *)(icmp + 1) > data_end)
			return -1;
		__u8 type = icmp->type;
		__u16 id = bpf_ntohs(icmp->un.echo.id);
		f->icmp_type = type;
		if ((f->proto == IPPROTO_ICMP && type == 8) ||
		    (f->proto == IPPROTO_ICMPV6 && type == 128)) {
			f->sport = id; /* echo request: the id plays the source port */
		} else if ((f->proto == IPPROTO_ICMP && type == 0) ||
			   (f->proto == IPPROTO_ICMPV6 && type == 129)) {
			f->dport = id; /* echo reply mirrors the request */
		} else {
			/* neighbour discovery, router messages and errors relate to
			 * existing traffic: never policed (docs/decisions.md) */
			f->passthrough = 1;
		}
	}
	return 0;
}

#endif
