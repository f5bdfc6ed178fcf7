/* Shared types and constants of the ciliumpy datapath. Every struct here has a ctypes
 * twin in datapath/maps.py: change both together (and the map's version suffix). */
#ifndef CILIUMPY_COMMON_H
#define CILIUMPY_COMMON_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/in.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>
#include <uapi/linux/icmp.h>
#include <uapi/linux/icmpv6.h>

/* uapi/linux/stddef.h defines __always_inline as plain inline, which clang may ignore;
 * a call left out-of-line becomes an opcode bcc's loader cannot relocate. */
#undef __always_inline
#define __always_inline inline __attribute__((always_inline))

#define ID_UNKNOWN 0
#define ID_HOST 1
#define ID_WORLD 2
#define ID_REMOTE_NODE 6

/* Another node with labels (fromNodes/toNodes) has a node-local identity of Cilium's
 * remote-node scope (ciliumpy/node_identities.py) in the ipcache; it is never sent on
 * the wire: what goes into the VNI for a host's own packets stays ID_REMOTE_NODE. */
#define ID_SCOPE_MASK 0xFF000000
#define ID_NODE_SCOPE 0x02000000

static inline int is_node_scope(__u32 identity)
{
	return (identity & ID_SCOPE_MASK) == ID_NODE_SCOPE;
}

/* reserved:remote-node, or a node identity: another node of the cluster */
static inline int is_remote_node(__u32 identity)
{
	return identity == ID_REMOTE_NODE || is_node_scope(identity);
}

/* The overlay carries the sender's identity as the VNI: 24 bits, so cluster
 * identities must fit in them (node-local CIDR and node identities never go on the
 * wire). */
#define VNI_MASK 0x00FFFFFF
/* Tunnel keys leave the outer UDP checksum zero (IPv4 allows it; the inner packet keeps
 * its own; Cilium sends it so): one software checksum less per segment of a GSO packet. */
#define OVERLAY_KEY_FLAGS BPF_F_ZERO_CSUM_TX

/* datapath modes (struct dp_config.mode) */
#define MODE_ROUTED 0 /* the host's routing table carries everything (routed, native) */
#define MODE_TUNNEL 1 /* remote endpoints are reached through the overlay device */

#define DIR_INGRESS 0 /* to the container */
#define DIR_EGRESS 1  /* from the container */

/* endpoint flags */
#define EP_ENFORCE_INGRESS 1
#define EP_ENFORCE_EGRESS 2
#define EP_SHAPED_EGRESS 4  /* cp_bandwidth holds its egress limit (backstop) */
#define EP_SHAPED_INGRESS 8 /* deliver through the host veth, whose qdisc shapes it */
#define EP_AUDIT 16 /* policy-audit-mode: denials are reported (verdict AUDIT), not dropped */

/* The host endpoint (reserved:host, the host firewall): its key in cp_endpoints and its
 * policy entries' ``ep``. No interface has this ifindex. The entry exists only while
 * the agent runs with --enable-host-firewall. */
#define HOST_EP_KEY 0xFFFFFFFF

/* struct event.verdict */
#define VERDICT_DENIED 0
#define VERDICT_ALLOWED 1
#define VERDICT_AUDIT 2 /* denied by policy, passed because of policy-audit-mode */

/* skb marks of the L7 redirect (lib/proxy.h); the low byte tells them apart */
#define MARK_MAGIC_MASK 0xFF
#define MARK_TO_PROXY 0xA6   /* policy routing delivers it to the local proxy socket */
#define MARK_FROM_PROXY 0xA5 /* the proxy's upstream side: identity in bits 8..31 */
/* ... of a client with a node-local identity (24 bits + its scope in the magic) */
#define MARK_FROM_PROXY_CIDR 0xA8 /* scope 1: CIDR/FQDN identities */
#define MARK_FROM_PROXY_NODE 0xA9 /* scope 2: node identities */
#define ID_LOCAL_SCOPE 0x01000000
#define MARK_OVERLAY_KEYED 0xA7 /* from_container set the tunnel key: to_overlay passes */

/* policy entry flags */
#define POLICY_DENY 1

/* conntrack flags */
#define CT_EGRESS_OK 1   /* the source endpoint's egress allowed the original direction */
#define CT_INGRESS_OK 2  /* the destination endpoint's ingress allowed it */
#define CT_SYN 4
#define CT_ESTABLISHED 8
#define CT_CLOSING 16

/* timeouts (ns) */
#define CT_TIMEOUT_SYN (60ULL * 1000000000ULL)
#define CT_TIMEOUT_TCP (21600ULL * 1000000000ULL)
#define CT_TIMEOUT_CLOSE (10ULL * 1000000000ULL)
#define CT_TIMEOUT_OTHER (60ULL * 1000000000ULL)

/* metrics/event reasons */
#define REASON_FORWARDED 0
#define REASON_POLICY_DENIED 1 /* no allow entry matched */
#define REASON_POLICY_DENY 2   /* a deny entry matched */
#define REASON_MALFORMED 3
#define REASON_PROXY_UNAVAILABLE 4 /* an L7 port, and no proxy socket took it */
#define REASON_BANDWIDTH 5 /* above the endpoint's egress limit (lib/bandwidth.h) */
#define REASON_MAX 6
#define EVENTS_LOST_INDEX 15 /* cp_metrics slot: events the ring buffer had no room for */

#define EVENT_DROP 1
#define EVENT_POLICY_VERDICT 2
#define EVENT_TRACE 3 /* a new connection forwarded by a hook */

struct bw_state {
	__u64 egress_bps;
	__u64 horizon_ns; /* the backlog (in time at the limit) admitted before dropping */
	__u64 t_next;     /* when the bucket is empty again */
	__u64 drops;
};

struct ep_info {
	__u32 identity;
	__u32 flags;
	__u8 mac[6];      /* the container side's MAC */
	__u8 host_mac[6]; /* the host side's MAC: the container's gateway */
	__u32 pad;
};

struct dp_config {
	__u32 mode;
	__u32 tunnel_ifindex; /* the VXLAN/Geneve device in external (collect_md) mode */
};

struct ipcache_key {
	__u32 prefixlen; /* 32 (family + pad) + address bits */
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

struct ipcache_val {
	__u32 identity;
	__u32 tunnel_ip; /* the owning node's underlay IPv4, host order; 0 = local/none */
	__u32 ifindex; /* host-side veth of a local endpoint, 0 otherwise */
	__u32 flags;
};

struct policy_key {
	__u32 prefixlen; /* 96 + port prefix bits */
	__u32 ep;        /* host-side ifindex of the endpoint */
	__u8 dir;
	__u8 proto;      /* 0 = any protocol */
	__u16 pad;
	__u32 identity;  /* 0 = any identity */
	__u8 dport[2];   /* big endian, matched by prefix (port ranges) */
	__u16 pad2;
};

struct policy_val {
	__u16 proxy_port;
	__u8 flags;
	__u8 pad;
	__u32 rule;
};

struct ct_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 family;
	__u16 pad;
};

struct ct_val {
	__u64 created;
	__u64 last_seen;
	__u64 packets;
	__u64 bytes;
	__u32 flags;
	__u32 src_identity;
	__u32 dst_identity;
	__u16 proxy_port; /* the original direction goes through the L7 proxy */
	__u16 pad;
};

struct metric_val {
	__u64 packets;
	__u64 bytes;
};

struct event {
	__u8 type;
	__u8 reason;
	__u8 dir;
	__u8 family;
	__u32 ifindex;
	__u32 src_identity;
	__u32 dst_identity;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 verdict; /* VERDICT_* */
	__u16 len;
	__u64 ts;
	__u8 tcp_flags; /* of the packet the event is about (TCP) */
	__u8 icmp_type; /* ICMP/ICMPv6 */
	__u8 pad[6];
};

/* A parsed packet: addresses, ports in host order, and what the policy needs. */
struct flow {
	__u8 family;
	__u8 proto;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 passthrough; /* ARP, neighbour discovery, ICMP errors: never policed */
	__u16 sport;
	__u16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 len;
};

#endif
