/* tc egress of the host's own network device: the host firewall's egress. A packet the
 * host itself sends (its source is one of the host's addresses) meets the host's egress
 * policy (lib/hostfw.h); what the host forwards for its containers (their own policy
 * judged it), the overlay's packets and the replies of published ports pass. Attached
 * only with --enable-host-firewall. IPv4 and IPv6. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/policy.h"
#include "lib/lb.h"
#include "lib/hostfw.h"

/* A reply of a published port or host-address service, from_container gave it the
 * frontend's (the host's) address back: the connection is the backend's. */
static __always_inline int frontend_reply(struct flow *f)
{
	struct lb_nat_key fwd = {};

	if (f->family != 4 || (f->proto != IPPROTO_TCP && f->proto != IPPROTO_UDP))
		return 0;
	__builtin_memcpy(&fwd.saddr, f->daddr, 4);
	__builtin_memcpy(&fwd.daddr, f->saddr, 4);
	fwd.sport = bpf_htons(f->dport);
	fwd.dport = bpf_htons(f->sport);
	fwd.proto = f->proto;
	return cp_lb_nat.lookup(&fwd) != NULL;
}

int to_netdev(struct __sk_buff *skb)
{
	struct ep_info *host = host_endpoint();
	struct ipcache_val *src;
	struct flow f = {};
	__u32 dst_id;

	if (!host)
		return TC_ACT_UNSPEC;
	if (parse_flow(skb, &f) != 0 || f.passthrough)
		return TC_ACT_UNSPEC;
	src = ipcache_lookup(f.family, f.saddr);
	if (!src || src->identity != ID_HOST)
		return TC_ACT_UNSPEC; /* forwarded for an endpoint: its own policy judged it */
	dst_id = identity_of(f.family, f.daddr);
	if (overlay_packet(&f, dst_id) || frontend_reply(&f))
		return TC_ACT_UNSPEC;
	return host_allows(host, DIR_EGRESS, dst_id, &f) ? TC_ACT_UNSPEC : TC_ACT_SHOT;
}
