/* Identity resolution (ipcache) and the policy verdict.
 *
 * Lookup order follows Cilium's (bpf/lib/policy.h): the peer's identity, then the
 * wildcard identity 0 (L4-only rules); within each, the exact protocol, then protocol
 * 0 (any, L3-only rules); each lookup is a longest-prefix match on the port, so port
 * ranges are a few prefixes. Deny entries live in their own map and are checked
 * first: a matching deny always wins, whatever its specificity. */
#ifndef CILIUMPY_POLICY_H
#define CILIUMPY_POLICY_H

#include "lib/maps.h"

#define ICMP_PORT_BASE 0x100

static __always_inline struct ipcache_val *ipcache_lookup(__u8 family, __u8 *addr)
{
	struct ipcache_key key = {};
	key.family = family;
	key.prefixlen = 32 + (family == 4 ? 32 : 128);
	__builtin_memcpy(key.addr, addr, 16);
	return cp_ipcache.lookup(&key);
}

static __always_inline __u32 identity_of(__u8 family, __u8 *addr)
{
	struct ipcache_val *v = ipcache_lookup(family, addr);
	return v ? v->identity : ID_WORLD;
}

static __always_inline struct policy_val *policy_hit(int deny, __u32 ep, __u8 dir,
						     __u32 identity, __u8 proto, __u16 dport)
{
	struct policy_key key = {};
	key.prefixlen = 96 + 16;
	key.ep = ep;
	key.dir = dir;
	key.proto = proto;
	key.identity = identity;
	key.dport[0] = dport >> 8;
	key.dport[1] = dport & 0xff;
	/* bcc binds map.lookup() to the map's fd: the map cannot be a parameter */
	if (deny)
		return cp_policy_deny.lookup(&key);
	return cp_policy_allow.lookup(&key);
}

static __always_inline struct policy_val *policy_match(int deny, __u32 ep, __u8 dir,
						       __u32 identity, __u8 proto, __u16 dport)
{
	struct policy_val *v = policy_hit(deny, ep, dir, identity, proto, dport);
	if (!v)
		v = policy_hit(deny, ep, dir, 0, proto, dport);
	if (!v)
		v = policy_hit(deny, ep, dir, identity, 0, 0);
	if (!v)
		v = policy_hit(deny, ep, dir, 0, 0, 0);
	return v;
}

/* REASON_FORWARDED if allowed, else the drop reason. ``proxy``: the L7 proxy port of
 * the allowing entry (0 = forward in the datapath). */
static __always_inline __u8 policy_verdict(__u32 ep, __u8 dir, __u32 identity, struct flow *f,
					   __u16 *proxy)
{
	struct policy_val *allow;
	__u16 dport = f->dport;

	/* ICMP rules (icmps) name a type: entries carry it as port 0x100 + type, so that
	 * type 0 is not "any port" (policies/icmp.py) */
	if (f->proto == IPPROTO_ICMP || f->proto == IPPROTO_ICMPV6)
		dport = ICMP_PORT_BASE | f->icmp_type;
	if (policy_match(1, ep, dir, identity, f->proto, dport))
		return REASON_POLICY_DENY;
	allow = policy_match(0, ep, dir, identity, f->proto, dport);
	if (!allow)
		return REASON_POLICY_DENIED;
	/* L7: HTTP and Kafka over TCP; DNS over TCP and UDP (the DNS proxy takes both) */
	if (f->proto == IPPROTO_TCP || f->proto == IPPROTO_UDP)
		*proxy = allow->proxy_port;
	return REASON_FORWARDED;
}

#endif
