/* Connection tracking: one LRU map keyed by the original direction's 5-tuple.
 *
 * An entry records which side's policy allowed the connection: the source endpoint's
 * egress (CT_EGRESS_OK) and/or the destination endpoint's ingress (CT_INGRESS_OK). A
 * packet in the original direction passes a hook once that hook's flag is set; a
 * reply passes when the other side's flag is set. Policy is evaluated only for new
 * connections, so established ones survive policy changes, as in Cilium. TCP entries
 * age by state: SYN seen 60 s, established 6 h, after FIN/RST 10 s; others 60 s. */
#ifndef CILIUMPY_CONNTRACK_H
#define CILIUMPY_CONNTRACK_H

#include "lib/maps.h"

static __always_inline void ct_key_of(struct flow *f, struct ct_key *key, int reverse)
{
	if (reverse) {
		__builtin_memcpy(key->saddr, f->daddr, 16);
		__builtin_memcpy(key->daddr, f->saddr, 16);
		key->sport = f->dport;
		key->dport = f->sport;
	} else {
		__builtin_memcpy(key->saddr, f->saddr, 16);
		__builtin_memcpy(key->daddr, f->daddr, 16);
		key->sport = f->sport;
		key->dport = f->dport;
	}
	key->proto = f->proto;
	key->family = f->family;
}

static __always_inline __u64 ct_timeout(struct ct_val *v)
{
	if (v->flags & CT_CLOSING)
		return CT_TIMEOUT_CLOSE;
	if (v->flags & CT_ESTABLISHED)
		return CT_TIMEOUT_TCP;
	if (v->flags & CT_SYN)
		return CT_TIMEOUT_SYN;
	return CT_TIMEOUT_OTHER;
}

/* Whether an entry has outlived its timeout at ``now``. Both directions of a flow are
 * handled by hooks on different CPUs at once: one may store a last_seen later than
 * the ``now`` another read a moment before, and an unsigned difference would then
 * look like an expired entry (a reply taken for a new connection). */
static __always_inline int ct_expired(struct ct_val *v, __u64 now)
{
	return now > v->last_seen && now - v->last_seen > ct_timeout(v);
}

/* Updates state and counters of a live entry; 0 if the entry expired. */
static __always_inline int ct_touch(struct ct_val *v, struct flow *f, __u64 now, int reply)
{
	if (ct_expired(v, now))
		return 0;
	if (now > v->last_seen)
		v->last_seen = now;
	v->packets += 1;
	v->bytes += f->len;
	if (f->proto == IPPROTO_TCP) {
		__u8 flags = f->tcp_flags;
		if (flags & (0x01 | 0x04)) /* FIN or RST */
			v->flags |= CT_CLOSING;
		else if (reply && (flags & 0x10)) /* an ACK from the other side */
			v->flags |= CT_ESTABLISHED;
	}
	return 1;
}

static __always_inline void ct_create(struct flow *f, __u32 flag, __u32 src_id, __u32 dst_id,
				      __u64 now, __u16 proxy_port)
{
	struct ct_key key = {};
	struct ct_val v = {};
	ct_key_of(f, &key, 0);
	v.created = now;
	v.last_seen = now;
	v.packets = 1;
	v.bytes = f->len;
	v.flags = flag;
	if (f->proto == IPPROTO_TCP)
		v.flags |= CT_SYN;
	v.src_identity = src_id;
	v.dst_identity = dst_id;
	v.proxy_port = proxy_port;
	cp_ct.update(&key, &v);
}

/* The hook's view of a packet: 1 = pass without policy (known connection),
 * 0 = new for this hook (evaluate policy, then ct_allow()). ``both`` tells whether the
 * other side's policy has accepted the connection too (always so for a reply), which
 * is what allows delivering it straight to the peer. ``proxy``: the L7 proxy port of a
 * known connection's original direction (0 for replies and datapath-only flows). */
static __always_inline int ct_known(struct flow *f, __u32 my_flag, __u32 peer_flag, __u64 now,
				    int *both, __u16 *proxy)
{
	struct ct_key key = {};
	struct ct_val *v;

	ct_key_of(f, &key, 0);
	v = cp_ct.lookup(&key);
	if (v && (v->flags & my_flag) && ct_touch(v, f, now, 0)) {
		*both = (v->flags & peer_flag) != 0;
		*proxy = v->proxy_port;
		return 1;
	}
	ct_key_of(f, &key, 1);
	v = cp_ct.lookup(&key);
	if (v && (v->flags & peer_flag) && ct_touch(v, f, now, 1)) {
		*both = 1;
		return 1;
	}
	return 0;
}

/* Records that this hook allowed a new connection (creating or completing the entry);
 * ``proxy_port``: the connection goes through the L7 proxy. */
static __always_inline void ct_allow(struct flow *f, __u32 my_flag, __u32 src_id, __u32 dst_id,
				     __u64 now, __u16 proxy_port)
{
	struct ct_key key = {};
	struct ct_val *v;

	ct_key_of(f, &key, 0);
	v = cp_ct.lookup(&key);
	if (v && !ct_expired(v, now)) {
		v->flags |= my_flag; /* both hooks run per packet in order: no race on one flow */
		if (now > v->last_seen)
			v->last_seen = now;
		if (proxy_port)
			v->proxy_port = proxy_port;
		return;
	}
	ct_create(f, my_flag, src_id, dst_id, now, proxy_port);
}

#endif
