/* The egress bandwidth backstop of an endpoint (struct bw_state in cp_bandwidth).
 * Shaping itself happens in the flow-queued HTB inside the container's namespace (see
 * datapath/shaper.py), which paces TCP through backpressure without loss. This check
 * only catches what arrives faster than the limit anyway (a container that removed its
 * qdisc, or a packet sent before the shaper was installed): a token bucket in virtual
 * time that admits a packet while the backlog it represents stays within the horizon,
 * and drops it otherwise, so a limit fails closed. */
#ifndef CILIUMPY_BANDWIDTH_H
#define CILIUMPY_BANDWIDTH_H

#include "lib/common.h"
#include "lib/maps.h"

static __always_inline int bandwidth_admit(__u32 ifindex, __u32 len, __u64 now)
{
	struct bw_state *bw = cp_bandwidth.lookup(&ifindex);
	__u64 next, cost;

	if (!bw || !bw->egress_bps)
		return 1;
	next = bw->t_next > now ? bw->t_next : now;
	if (next - now > bw->horizon_ns) {
		__sync_fetch_and_add(&bw->drops, 1);
		return 0;
	}
	cost = (__u64)len * 8ULL * 1000000000ULL / bw->egress_bps;
	bw->t_next = next + cost; /* a lost race between CPUs only loosens it by a packet */
	return 1;
}

#endif
