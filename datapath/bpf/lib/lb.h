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

#endif
