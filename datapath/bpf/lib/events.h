/* Per-CPU counters by reason and direction, and events to the agent's ring buffer. */
#ifndef CILIUMPY_EVENTS_H
#define CILIUMPY_EVENTS_H

#include "lib/maps.h"

static __always_inline void count(__u32 reason, __u8 dir, __u32 len)
{
	__u32 index = reason * 2 + dir;
	struct metric_val *m = cp_metrics.lookup(&index);
	if (m) {
		m->packets += 1;
		m->bytes += len;
	}
}

static __always_inline void emit(__u8 type, __u8 reason, __u8 dir, __u8 verdict,
				 __u32 ifindex, __u32 src_id, __u32 dst_id, struct flow *f)
{
	struct event *e = cp_events.ringbuf_reserve(sizeof(struct event));
	if (!e) { /* the agent is behind: count the loss where it can be seen */
		__u32 lost = EVENTS_LOST_INDEX;
		struct metric_val *m = cp_metrics.lookup(&lost);
		if (m)
			m->packets += 1;
		return;
	}
	e->type = type;
	e->reason = reason;
	e->dir = dir;
	e->family = f->family;
	e->ifindex = ifindex;
	e->src_identity = src_id;
	e->dst_identity = dst_id;
	__builtin_memcpy(e->saddr, f->saddr, 16);
	__builtin_memcpy(e->daddr, f->daddr, 16);
	e->sport = f->sport;
	e->dport = f->dport;
	e->proto = f->proto;
	e->verdict = verdict;
	e->len = f->len > 0xffff ? 0xffff : f->len;
	e->ts = bpf_ktime_get_ns();
	e->tcp_flags = f->proto == IPPROTO_TCP ? f->tcp_flags : 0;
	e->icmp_type = f->icmp_type;
	__builtin_memset(e->pad, 0, sizeof(e->pad));
	cp_events.ringbuf_submit(e, 0);
}

#endif
