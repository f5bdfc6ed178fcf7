/* tc ingress of the host's own network device (the one holding the node address):
 * connections from outside the host to a frontend on one of the host's addresses (a
 * published port, docker run -p, or a service whose frontend is the host's address)
 * go to a backend. The first packet of a connection picks the backend (Maglev, like
 * the socket hooks) and records it in cp_lb_nat; every packet of it then gets the
 * backend's address and port.
 *
 * A backend on this host: the reverse entry lets from_container give its replies the
 * frontend's address back. A backend on another node: direct server return. The
 * connection's first packet carries the frontend in an IP option (lb.h) and every
 * packet goes to that node without this host's stack (into the overlay with the
 * world identity, or routed natively); the backend's node answers the client itself,
 * from the frontend's address, so replies never come back through here.
 *
 * With the host firewall (--enable-host-firewall), what else comes in for the host's
 * own addresses meets the host's ingress policy (lib/hostfw.h), IPv4 and IPv6.
 *
 * Everything else continues untouched to the next filter (TC_ACT_UNSPEC), so agents
 * sharing a device do not hide each other's ports. Services: IPv4. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/policy.h"
#include "lib/overlay.h"
#include "lib/lb.h"
#include "lib/hostfw.h"

/* The service of this destination when it is one of the host's addresses: a service
 * on that very address, else a published port on any of them (address 0). */
static __always_inline struct lb_svc_val *host_frontend(struct flow *f)
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
	if (svc)
		return svc;
	__builtin_memset(key.addr, 0, 4);
	svc = cp_lb_services.lookup(&key);
	return svc && (svc->flags & LB_HOST_PORT) ? svc : NULL;
}

/* A backend that is an endpoint of another node (DSR), not one of this host's. */
static __always_inline int backend_is_remote(__u32 addr)
{
	struct ipcache_val *be = lb_ipcache4(addr);

	return be && !be->ifindex && be->identity != ID_HOST && be->identity != ID_WORLD &&
	       !is_remote_node(be->identity);
}

/* A DSR packet, already addressed to its backend: the option on a connection's first
 * packet, then to the backend's node, never through this host's stack. */
static __always_inline int send_direct(struct __sk_buff *skb, struct flow *f,
				       struct lb_nat_key *fwd, __u32 backend)
{
	int first = f->proto == IPPROTO_UDP ||
		    (f->tcp_flags & (LB_TCP_SYN | LB_TCP_ACK)) == LB_TCP_SYN;
	int redirected;

	if (first && lb4_dsr_insert(skb, fwd->daddr, fwd->dport) < 0)
		return TC_ACT_SHOT;
	redirected = encap_to_remote(skb, lb_ipcache4(backend), ID_WORLD);
	if (redirected >= 0)
		return redirected;
	redirected = lb4_route_ifindex(skb, fwd->saddr, backend);
	return redirected > 0 ? lb_redirect_neigh(redirected, NULL, 0, 0) : TC_ACT_SHOT;
}

#define NOT_A_FRONTEND -1

/* A published port's or host-address service's packet: translated to its backend (the
 * return value is the tc action), or NOT_A_FRONTEND. */
static __always_inline int to_frontend(struct __sk_buff *skb, struct flow *f)
{
	struct lb_nat_key fwd = {}, rev = {};
	struct lb_nat_val *known, pick = {}, back = {};
	struct lb_svc_val *svc;
	struct lb_backend *be;

	__builtin_memcpy(&fwd.saddr, f->saddr, 4);
	__builtin_memcpy(&fwd.daddr, f->daddr, 4);
	fwd.sport = bpf_htons(f->sport);
	fwd.dport = bpf_htons(f->dport);
	fwd.proto = f->proto;
	known = cp_lb_nat.lookup(&fwd);
	if (known) {
		pick.addr = known->addr;
		pick.port = known->port;
		pick.flags = known->flags;
	} else {
		svc = host_frontend(f);
		if (!svc)
			return NOT_A_FRONTEND;
		be = lb_pick(svc, lb_flow_hash(bpf_ntohl(fwd.saddr), bpf_ntohl(fwd.daddr), f->sport,
					       f->dport, f->proto));
		if (!be)
			return NOT_A_FRONTEND; /* no backend: the host answers (a reset) */
		__builtin_memcpy(&pick.addr, be->addr, 4);
		pick.port = be->port;
		if (backend_is_remote(pick.addr))
			pick.flags = LB_NAT_DSR; /* its node answers: no reverse entry here */
		cp_lb_nat.update(&fwd, &pick);
		if (!(pick.flags & LB_NAT_DSR)) {
			rev.saddr = pick.addr;
			rev.daddr = fwd.saddr;
			rev.sport = pick.port;
			rev.dport = fwd.sport;
			rev.proto = f->proto;
			back.addr = fwd.daddr;
			back.port = fwd.dport;
			back.ifindex = skb->ifindex;
			cp_lb_nat.update(&rev, &back);
		}
	}
	if (lb4_rewrite(skb, f->proto, 0, fwd.daddr, pick.addr, fwd.dport, pick.port) < 0)
		return TC_ACT_SHOT;
	if (pick.flags & LB_NAT_DSR)
		return send_direct(skb, f, &fwd, pick.addr);
	return TC_ACT_OK;
}

/* The host firewall's ingress: a packet for one of the host's own addresses. */
static __always_inline int to_this_host(struct flow *f)
{
	struct ep_info *host = host_endpoint();
	struct ipcache_val *dst;
	__u32 src_id;

	if (!host)
		return TC_ACT_UNSPEC;
	dst = ipcache_lookup(f->family, f->daddr);
	if (!dst || dst->identity != ID_HOST)
		return TC_ACT_UNSPEC; /* routed on to an endpoint: its own policy decides */
	src_id = identity_of(f->family, f->saddr);
	if (overlay_packet(f, src_id))
		return TC_ACT_UNSPEC;
	return host_allows(host, DIR_INGRESS, src_id, f) ? TC_ACT_UNSPEC : TC_ACT_SHOT;
}

int from_netdev(struct __sk_buff *skb)
{
	struct flow f = {};
	int action;

	if (parse_flow(skb, &f) != 0 || f.passthrough)
		return TC_ACT_UNSPEC;
	/* the overlay's own packets (the device owns the port): no frontend lookups, only
	 * the host firewall's check when one is enforced */
	if (f.proto == IPPROTO_UDP &&
	    (f.dport == OVERLAY_PORT_VXLAN || f.dport == OVERLAY_PORT_GENEVE))
		return to_this_host(&f);
	if (f.family == 4 && (f.proto == IPPROTO_TCP || f.proto == IPPROTO_UDP)) {
		action = to_frontend(skb, &f);
		if (action != NOT_A_FRONTEND)
			return action;
	}
	return to_this_host(&f);
}
