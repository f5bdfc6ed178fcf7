/* Services (load balancing) shared by the socket hooks: the frontend table, each
 * service's Maglev lookup table, the backends, the reverse translation a connected or
 * sending socket needs to show the service address again, and the client address of
 * each network namespace this agent serves. The tables are computed by the agent
 * (services/maglev.py); the flow hash here must stay bit-identical to
 * services.maglev.flow_hash, which predicts a connection's backend. */
#ifndef CILIUMPY_LB_H
#define CILIUMPY_LB_H

#include "lib/common.h"
#include "lib/policy.h"

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
	__u16 flags;   /* LB_NAT_* */
	__u32 ifindex; /* replies: the device the connection came in on (0: route it) */
};

/* Direct server return: a connection from outside to a frontend on this host whose
 * backend is on another node goes there without this host in its reply path. The
 * frontend travels to the backend's node in an IPv4 option of the connection's first
 * packet (TCP SYN; every UDP datagram), Cilium's DSR option: type 0x9a (copied,
 * number 26), length 8, then the frontend's port and address. The backend's node
 * learns from it (lb4_dsr_learn) and its replies leave from the frontend's address,
 * straight to the client (lb4_reply_from_host). */
#define LB_NAT_DSR 1 /* cp_lb_nat forward entry: the backend is remote, DSR */
#define LB_DSR_OPT_TYPE 0x9a
#define LB_DSR_OPT_LEN 8
#define LB_TCP_SYN 0x02
#define LB_TCP_ACK 0x10

struct lb_dsr_opt {
	__u8 type;
	__u8 len;
	__u16 port; /* network order */
	__u32 addr; /* network order */
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

/* The ipcache entry of an IPv4 address (network order); ipcache_lookup reads 16
 * bytes whatever the family. */
static __always_inline struct ipcache_val *lb_ipcache4(__u32 addr)
{
	__u8 padded[16] = {};

	__builtin_memcpy(padded, &addr, 4);
	return ipcache_lookup(4, padded);
}

/* The device this host's routing table sends ``daddr`` out of (addresses in network
 * order), or -1: a lookup as if the packet came in on its current device. */
static __always_inline int lb4_route_ifindex(struct __sk_buff *skb, __u32 saddr, __u32 daddr)
{
	struct bpf_fib_lookup fib = {};
	long rc;

	fib.family = 2; /* AF_INET */
	fib.ipv4_src = saddr;
	fib.ipv4_dst = daddr;
	fib.ifindex = skb->ifindex;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return -1;
	return fib.ifindex;
}

/* A reply of a published-port connection leaving its backend: from the host's
 * address and port again (from_container, once conntrack knows the connection); or a
 * reply of a DSR connection (learnt by lb4_dsr_learn): from the frontend's address,
 * on another node. Returns the device to send it from (> 0), 0 when the packet is no
 * such reply, -1 when rewriting failed. The caller sends it on without the stack,
 * which would drop it: a packet from a veth with one of the host's own addresses (or
 * another node's) as its source is a martian. */
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
	if (from.ifindex)
		return from.ifindex;
	return lb4_route_ifindex(skb, from.addr, rev.daddr); /* DSR: this node's route */
}

/* The first packet of a DSR connection (after the DNAT to its remote backend) gets the
 * frontend in an IP option. 1 = inserted, 0 = not (the header has options already: no
 * room is taken from them), -1 = the packet could not be changed. */
static __always_inline int lb4_dsr_insert(struct __sk_buff *skb, __u32 addr, __u16 port)
{
	struct lb_dsr_opt opt = {};
	__u32 old_word, new_word;
	__u8 *bytes = (__u8 *)&new_word;
	__u16 total;
	__s64 sum;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &old_word, 4) < 0)
		return -1;
	new_word = old_word; /* version and IHL, TOS, total length */
	if ((bytes[0] & 0x0f) != 5)
		return 0;
	total = ((__u16)bytes[2] << 8 | bytes[3]) + LB_DSR_OPT_LEN;
	bytes[0] += LB_DSR_OPT_LEN / 4;
	bytes[2] = total >> 8;
	bytes[3] = total & 0xff;
	opt.type = LB_DSR_OPT_TYPE;
	opt.len = LB_DSR_OPT_LEN;
	opt.port = port;
	opt.addr = addr;
	sum = bpf_csum_diff(&old_word, 4, &new_word, 4, 0);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&opt, sizeof(opt), sum);
	if (bpf_skb_adjust_room(skb, LB_DSR_OPT_LEN, BPF_ADJ_ROOM_NET, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &new_word, 4, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(struct iphdr), &opt, sizeof(opt), 0) < 0 ||
	    bpf_l3_csum_replace(skb, ETH_HLEN + __builtin_offsetof(struct iphdr, check), 0, sum,
				0) < 0)
		return -1;
	return 1;
}

/* On the backend's node, a packet accepted for a local endpoint: when it carries the
 * DSR option, its replies must come from the frontend the option names. Only another
 * node's address is believed as a frontend (a client must not choose the address the
 * replies come from). */
static __always_inline void lb4_dsr_learn(struct __sk_buff *skb, struct flow *f)
{
	struct lb_nat_key rev = {};
	struct lb_nat_val from = {};
	struct lb_dsr_opt opt;
	struct ipcache_val *node;
	__u8 first;

	if (f->family != 4)
		return;
	if (f->proto == IPPROTO_TCP) {
		if ((f->tcp_flags & (LB_TCP_SYN | LB_TCP_ACK)) != LB_TCP_SYN)
			return;
	} else if (f->proto != IPPROTO_UDP) {
		return;
	}
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &first, 1) < 0 || (first & 0x0f) < 7 ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(struct iphdr), &opt, sizeof(opt)) < 0 ||
	    opt.type != LB_DSR_OPT_TYPE || opt.len != LB_DSR_OPT_LEN)
		return;
	node = lb_ipcache4(opt.addr);
	if (!node || !is_remote_node(node->identity))
		return;
	__builtin_memcpy(&rev.saddr, f->daddr, 4);
	__builtin_memcpy(&rev.daddr, f->saddr, 4);
	rev.sport = bpf_htons(f->dport);
	rev.dport = bpf_htons(f->sport);
	rev.proto = f->proto;
	from.addr = opt.addr;
	from.port = opt.port;
	from.flags = LB_NAT_DSR;
	cp_lb_nat.update(&rev, &from);
}

#endif
