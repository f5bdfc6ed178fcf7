/* Services (load balancing) shared by the socket hooks: the frontend table, each
 * service's Maglev lookup table, the backends, the reverse translation a connected or
 * sending socket needs to show the service address again, and the client address of
 * each network namespace this agent serves. The tables are computed by the agent
 * (services/maglev.py); the flow hash here must stay bit-identical to
 * services.maglev.flow_hash, which predicts a connection's backend. */
#ifndef CILIUMPY_LB_H
#define CILIUMPY_LB_H

#include "lib/common.h"

#ifndef PIN_DIR
#define PIN_DIR "/sys/fs/bpf/ciliumpy"
#endif

#define LB_AFFINITY_CLIENT 1 /* hash the client address and the service only */
#define LB_HOST_PORT 2       /* a published port: the host's addresses (addr 0 = any) */
#define LB_FAMILY_V4 4
#define LB_FAMILY_V6 6
#ifndef ECONNREFUSED
#define ECONNREFUSED 111
#endif

struct lb_svc_key { /* a frontend: address, port (network order), protocol */
	__u8 addr[16];  /* IPv4 in the first 4 bytes */
	__u16 port;
	__u8 proto;
	__u8 family;
};

struct lb_svc_val {
	__u32 svc_id;     /* the Maglev table's key */
	__u32 table_size; /* M; 0 = no backend: connections are refused */
	__u32 flags;      /* LB_AFFINITY_* */
	__u32 pad;
};

struct lb_slot_key {
	__u32 svc_id;
	__u32 slot;
};

struct lb_backend {
	__u8 addr[16];
	__u16 port; /* network order */
	__u8 family;
	__u8 pad;
};

struct lb_revsk_key { /* a socket and the backend it was sent to */
	__u64 cookie;
	__u8 addr[16];
	__u16 port;
	__u8 family;
	__u8 pad;
	__u32 pad2;
};

struct lb_netns_val { /* the client address a namespace's sockets hash with */
	__u32 addr4;  /* network order */
	__u8 addr6[16];
};

BPF_TABLE_PINNED("hash", struct lb_svc_key, struct lb_svc_val, cp_lb_services, 65536,
		 PIN_DIR "/cp_lb_services_v1");
BPF_TABLE_PINNED("hash", struct lb_slot_key, __u32, cp_lb_maglev, 4194304,
		 PIN_DIR "/cp_lb_maglev_v1", BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("hash", __u32, struct lb_backend, cp_lb_backends, 65536,
		 PIN_DIR "/cp_lb_backends_v1");
BPF_TABLE_PINNED("lru_hash", struct lb_revsk_key, struct lb_svc_key, cp_lb_revsk, 262144,
		 PIN_DIR "/cp_lb_revsk_v1");
BPF_TABLE_PINNED("hash", __u64, struct lb_netns_val, cp_lb_netns, 16384,
		 PIN_DIR "/cp_lb_netns_v1");
/* Published ports reached from outside the host (tc, IPv4): a connection's backend,
 * and for its replies the host address and port they must come from. One map, both
 * directions: (client, host, client port, host port) -> backend and (backend, client,
 * backend port, client port) -> host. Addresses and ports in network order. */
struct lb_nat_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct lb_nat_val {
	__u32 addr;
	__u16 port;
	__u16 pad;
	__u32 ifindex; /* replies: the device the connection came in on */
};

BPF_TABLE_PINNED("lru_hash", struct lb_nat_key, struct lb_nat_val, cp_lb_nat, 262144,
		 PIN_DIR "/cp_lb_nat_v1");

/* slot 0: 1 = translate sockets of namespaces not in cp_lb_netns too (one agent per
 * machine); 0 = only this agent's (several agents share the machine's cgroup root) */
BPF_TABLE_PINNED("array", __u32, __u32, cp_lb_config, 1, PIN_DIR "/cp_lb_config_v1");

/* Linux's jhash_3words (include/linux/jhash.h). */
static __always_inline __u32 lb_rol32(__u32 word, unsigned int shift)
{
	return (word << shift) | (word >> ((-shift) & 31));
}

static __always_inline __u32 lb_jhash_3words(__u32 a, __u32 b, __u32 c, __u32 initval)
{
	initval += 0xdeadbeef + (3 << 2);
	a += initval;
	b += initval;
	c += initval;
	c ^= b; c -= lb_rol32(b, 14);
	a ^= c; a -= lb_rol32(c, 11);
	b ^= a; b -= lb_rol32(a, 25);
	c ^= b; c -= lb_rol32(b, 16);
	a ^= c; a -= lb_rol32(c, 4);
	b ^= a; b -= lb_rol32(a, 14);
	c ^= b; c -= lb_rol32(b, 24);
	return c;
}

/* services.maglev.flow_hash: addresses as host-order integers (IPv6 folded by XOR of
 * its four words), ports in host order. */
static __always_inline __u32 lb_flow_hash(__u32 saddr, __u32 daddr, __u16 sport,
					  __u16 dport, __u8 proto)
{
	return lb_jhash_3words(saddr, daddr, ((__u32)sport << 16) | dport, proto);
}

/* The backend a new connection of this service gets; NULL when it has none. */
static __always_inline struct lb_backend *lb_pick(struct lb_svc_val *svc, __u32 hash)
{
	struct lb_slot_key slot = {};
	__u32 *backend_id;

	if (!svc->table_size)
		return NULL;
	slot.svc_id = svc->svc_id;
	slot.slot = hash % svc->table_size;
	backend_id = cp_lb_maglev.lookup(&slot);
	if (!backend_id)
		return NULL;
	return cp_lb_backends.lookup(backend_id);
}

/* Rewrites one IPv4 address (source or destination) and the matching port of a TCP
 * or UDP packet, checksums included. */
static __always_inline int lb4_rewrite(struct __sk_buff *skb, __u8 proto, int source,
				       __u32 old_addr, __u32 new_addr, __u16 old_port,
				       __u16 new_port)
{
	int addr_off = ETH_HLEN + (source ? __builtin_offsetof(struct iphdr, saddr)
					  : __builtin_offsetof(struct iphdr, daddr));
	__u8 first;
	int l4, csum_off, mangled = 0;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &first, 1) < 0)
		return -1;
	l4 = ETH_HLEN + (first & 0x0f) * 4;
	if (proto == IPPROTO_TCP) {
		csum_off = l4 + __builtin_offsetof(struct tcphdr, check);
	} else {
		csum_off = l4 + __builtin_offsetof(struct udphdr, check);
		mangled = BPF_F_MARK_MANGLED_0; /* a UDP checksum of 0 means none: keep it */
	}
	if (bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr,
				BPF_F_PSEUDO_HDR | mangled | 4) < 0 ||
	    bpf_l3_csum_replace(skb, ETH_HLEN + __builtin_offsetof(struct iphdr, check), old_addr,
				new_addr, 4) < 0 ||
	    bpf_skb_store_bytes(skb, addr_off, &new_addr, 4, 0) < 0)
		return -1;
	if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port, mangled | 2) < 0 ||
	    bpf_skb_store_bytes(skb, l4 + (source ? 0 : 2), &new_port, 2, 0) < 0)
		return -1;
	return 0;
}

/* The kernel's bpf_redirect_neigh takes (ifindex, params, plen, flags); bcc 0.26's
 * helpers.h declares three of them, which leaves R4 unset for the verifier. */
static long (*lb_redirect_neigh)(__u32 ifindex, void *params, int plen, __u64 flags) =
	(void *)BPF_FUNC_redirect_neigh;

/* A reply of a published-port connection leaving its backend: from the host's
 * address and port again (from_container, once conntrack knows the connection).
 * Returns the device the connection came in on (> 0), 0 when the packet is no such
 * reply, -1 when rewriting failed. The caller sends it on without the stack, which
 * would drop it: a packet from a veth with one of the host's own addresses as its
 * source is a martian. */
static __always_inline int lb4_reply_from_host(struct __sk_buff *skb, struct flow *f)
{
	struct lb_nat_key rev = {};
	struct lb_nat_val *host, from = {};

	if (f->family != 4 || (f->proto != IPPROTO_TCP && f->proto != IPPROTO_UDP))
		return 0;
	__builtin_memcpy(&rev.saddr, f->saddr, 4);
	__builtin_memcpy(&rev.daddr, f->daddr, 4);
	rev.sport = bpf_htons(f->sport);
	rev.dport = bpf_htons(f->dport);
	rev.proto = f->proto;
	host = cp_lb_nat.lookup(&rev);
	if (!host)
		return 0;
	from.addr = host->addr;
	from.port = host->port;
	from.ifindex = host->ifindex;
	if (lb4_rewrite(skb, f->proto, 1, rev.saddr, from.addr, rev.sport, from.port) < 0)
		return -1;
	return from.ifindex ? from.ifindex : -1;
}

#endif
