/* tc ingress of the host's own network device (the one holding the node address):
 * connections from outside the host to a published port (docker run -p) go to the
 * port's container. The first packet of a connection picks the backend (Maglev, like
 * the socket hooks) and records both directions in cp_lb_nat; every packet of it then
 * gets the backend's address and port, and from_container gives its replies the host's
 * address and port back. Everything else continues untouched to the next filter
 * (TC_ACT_UNSPEC), so agents sharing a device do not hide each other's ports. IPv4. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/policy.h"
#include "lib/lb.h"

/* The published port's service for this destination: its own address, else any of
 * the host's (address 0), and only for the host's addresses. */
static __always_inline struct lb_svc_val *host_port_service(struct flow *f)
{
	struct lb_svc_key key = {};
	struct lb_svc_val *svc;
	struct ipcache_val *dst = ipcache_lookup(4, f->daddr);

	if (!dst || dst->identity != ID_HOST)
		return NULL;
	__builtin_memcpy(key.addr, f->daddr, 4);
	key.port = bpf_htons(f->dport);
	key.proto = f->proto;
	key.family = LB_FAMILY_V4;
	svc = cp_lb_services.lookup(&key);
	if (!svc) {
		__builtin_memset(key.addr, 0, 4);
		svc = cp_lb_services.lookup(&key);
	}
	return svc && (svc->flags & LB_HOST_PORT) ? svc : NULL;
}

int from_netdev(struct __sk_buff *skb)
{
	struct flow f = {};
	struct lb_nat_key fwd = {}, rev = {};
	struct lb_nat_val *known, pick = {}, back = {};
	struct lb_svc_val *svc;
	struct lb_backend *be;

	if (parse_flow(skb, &f) != 0 || f.passthrough || f.family != 4 ||
	    (f.proto != IPPROTO_TCP && f.proto != IPPROTO_UDP))
		return TC_ACT_UNSPEC;
	__builtin_memcpy(&fwd.saddr, f.saddr, 4);
	__builtin_memcpy(&fwd.daddr, f.daddr, 4);
	fwd.sport = bpf_htons(f.sport);
	fwd.dport = bpf_htons(f.dport);
	fwd.proto = f.proto;
	known = cp_lb_nat.lookup(&fwd);
	if (known) {
		pick.addr = known->addr;
		pick.port = known->port;
	} else {
		svc = host_port_service(&f);
		if (!svc)
			return TC_ACT_UNSPEC;
		be = lb_pick(svc, lb_flow_hash(bpf_ntohl(fwd.saddr), bpf_ntohl(fwd.daddr), f.sport,
					       f.dport, f.proto));
		if (!be)
			return TC_ACT_UNSPEC; /* no container: the host answers (a reset) */
		__builtin_memcpy(&pick.addr, be->addr, 4);
		pick.port = be->port;
		cp_lb_nat.update(&fwd, &pick);
		rev.saddr = pick.addr;
		rev.daddr = fwd.saddr;
		rev.sport = pick.port;
		rev.dport = fwd.sport;
		rev.proto = f.proto;
		back.addr = fwd.daddr;
		back.port = fwd.dport;
		back.ifindex = skb->ifindex;
		cp_lb_nat.update(&rev, &back);
	}
	if (lb4_rewrite(skb, f.proto, 0, fwd.daddr, pick.addr, fwd.dport, pick.port) < 0)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}
