/* Socket-level load balancing: cgroup hooks attached at the cgroup v2 root, so every
 * socket of the host and of its containers passes them. connect() and UDP sendmsg() to
 * a service's frontend get a backend then and there (Maglev, lib/lb.h): the packets
 * carry the backend's address from the start, so nothing is translated per packet and
 * the destination's policy sees the backend's own identity. getpeername() and UDP
 * recvmsg() show the frontend again (the reverse entry of the socket). */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/policy.h"
#include "lib/lb.h"

/* A published port (docker run -p) answers on the host's addresses: when no service
 * has this exact frontend and the destination is the host itself (loopback, or an
 * address the ipcache holds as the host's), the port's any-address entry. */
static __always_inline struct lb_svc_val *lb_host_port(struct lb_svc_key *key, int loopback)
{
	struct lb_svc_val *svc;
	struct ipcache_val *dst;

	if (!loopback) {
		dst = ipcache_lookup(key->family, key->addr);
		if (!dst || dst->identity != ID_HOST)
			return NULL;
	}
	__builtin_memset(key->addr, 0, 16);
	svc = cp_lb_services.lookup(key);
	return svc && (svc->flags & LB_HOST_PORT) ? svc : NULL;
}

/* Whether this agent translates this socket's namespace, and the namespace's client
 * address (for "affinity client" and for predictable 5-tuple hashing). */
static __always_inline int lb_in_scope(struct bpf_sock_addr *ctx, struct lb_netns_val **client)
{
	__u64 netns = bpf_get_netns_cookie(ctx);
	__u32 zero = 0, *all;

	*client = cp_lb_netns.lookup(&netns);
	if (*client)
		return 1;
	all = cp_lb_config.lookup(&zero);
	return all && *all;
}

/* The source port the hash uses: the bound port, none for client affinity, and a
 * random one for a socket not bound yet (its port is chosen after connect()). */
static __always_inline __u16 lb_hash_sport(struct lb_svc_val *svc, __u16 bound)
{
	if (svc->flags & LB_AFFINITY_CLIENT)
		return 0;
	return bound ? bound : (__u16)bpf_get_prandom_u32();
}

static __always_inline int lb_refuse(void)
{
	bpf_set_retval(-ECONNREFUSED); /* what a reset would give: no black hole */
	return 0;
}

static __always_inline void lb_remember(struct bpf_sock_addr *ctx, struct lb_backend *be,
					struct lb_svc_key *frontend)
{
	struct lb_revsk_key rev = {};

	rev.cookie = bpf_get_socket_cookie(ctx);
	__builtin_memcpy(rev.addr, be->addr, 16);
	rev.port = be->port;
	rev.family = be->family;
	cp_lb_revsk.update(&rev, frontend);
}

static __always_inline int lb4_translate(struct bpf_sock_addr *ctx)
{
	struct lb_svc_key key = {};
	struct lb_netns_val *client;
	struct lb_svc_val *svc;
	struct lb_backend *be;
	struct bpf_sock *sk = ctx->sk;
	__u32 daddr = ctx->user_ip4, saddr = 0, backend_addr;
	__u16 dport = (__u16)ctx->user_port, bound = 0;

	__builtin_memcpy(key.addr, &daddr, 4);
	key.port = dport;
	key.proto = ctx->protocol;
	key.family = LB_FAMILY_V4;
	svc = cp_lb_services.lookup(&key);
	if (!svc)
		svc = lb_host_port(&key, (bpf_ntohl(daddr) >> 24) == 127);
	if (!svc || !lb_in_scope(ctx, &client))
		return 1;
	if (sk) {
		saddr = sk->src_ip4;
		bound = sk->src_port;
	}
	if (!saddr && client)
		saddr = client->addr4;
	be = lb_pick(svc, lb_flow_hash(bpf_ntohl(saddr), bpf_ntohl(daddr),
				       lb_hash_sport(svc, bound), bpf_ntohs(dport), key.proto));
	if (!be)
		return lb_refuse();
	__builtin_memcpy(&backend_addr, be->addr, 4);
	ctx->user_ip4 = backend_addr;
	ctx->user_port = be->port;
	__builtin_memcpy(key.addr, &daddr, 4); /* the address the socket asked for */
	lb_remember(ctx, be, &key);
	return 1;
}

static __always_inline __u32 lb_fold6(__u32 w0, __u32 w1, __u32 w2, __u32 w3)
{
	return bpf_ntohl(w0) ^ bpf_ntohl(w1) ^ bpf_ntohl(w2) ^ bpf_ntohl(w3);
}

static __always_inline int lb6_translate(struct bpf_sock_addr *ctx)
{
	struct lb_svc_key key = {};
	struct lb_netns_val *client;
	struct lb_svc_val *svc;
	struct lb_backend *be;
	struct bpf_sock *sk = ctx->sk;
	__u32 d[4], s[4] = {}, b[4];
	__u16 dport = (__u16)ctx->user_port, bound = 0;

	d[0] = ctx->user_ip6[0];
	d[1] = ctx->user_ip6[1];
	d[2] = ctx->user_ip6[2];
	d[3] = ctx->user_ip6[3];
	__builtin_memcpy(key.addr, d, 16);
	key.port = dport;
	key.proto = ctx->protocol;
	key.family = LB_FAMILY_V6;
	svc = cp_lb_services.lookup(&key);
	if (!svc)
		svc = lb_host_port(&key, !(d[0] | d[1] | d[2]) && d[3] == bpf_htonl(1));
	if (!svc || !lb_in_scope(ctx, &client))
		return 1;
	if (sk) {
		s[0] = sk->src_ip6[0];
		s[1] = sk->src_ip6[1];
		s[2] = sk->src_ip6[2];
		s[3] = sk->src_ip6[3];
		bound = sk->src_port;
	}
	if (!(s[0] | s[1] | s[2] | s[3]) && client)
		__builtin_memcpy(s, client->addr6, 16);
	be = lb_pick(svc, lb_flow_hash(lb_fold6(s[0], s[1], s[2], s[3]),
				       lb_fold6(d[0], d[1], d[2], d[3]),
				       lb_hash_sport(svc, bound), bpf_ntohs(dport), key.proto));
	if (!be)
		return lb_refuse();
	__builtin_memcpy(b, be->addr, 16);
	ctx->user_ip6[0] = b[0];
	ctx->user_ip6[1] = b[1];
	ctx->user_ip6[2] = b[2];
	ctx->user_ip6[3] = b[3];
	ctx->user_port = be->port;
	__builtin_memcpy(key.addr, d, 16); /* the address the socket asked for */
	lb_remember(ctx, be, &key);
	return 1;
}

/* getpeername() and recvmsg(): the backend's address back to the frontend's. */
static __always_inline int lb4_reverse(struct bpf_sock_addr *ctx)
{
	struct lb_revsk_key rev = {};
	struct lb_svc_key *frontend;
	__u32 addr = ctx->user_ip4;

	rev.cookie = bpf_get_socket_cookie(ctx);
	__builtin_memcpy(rev.addr, &addr, 4);
	rev.port = (__u16)ctx->user_port;
	rev.family = LB_FAMILY_V4;
	frontend = cp_lb_revsk.lookup(&rev);
	if (!frontend)
		return 1;
	__builtin_memcpy(&addr, frontend->addr, 4);
	ctx->user_ip4 = addr;
	ctx->user_port = frontend->port;
	return 1;
}

static __always_inline int lb6_reverse(struct bpf_sock_addr *ctx)
{
	struct lb_revsk_key rev = {};
	struct lb_svc_key *frontend;
	__u32 a[4];

	a[0] = ctx->user_ip6[0];
	a[1] = ctx->user_ip6[1];
	a[2] = ctx->user_ip6[2];
	a[3] = ctx->user_ip6[3];
	rev.cookie = bpf_get_socket_cookie(ctx);
	__builtin_memcpy(rev.addr, a, 16);
	rev.port = (__u16)ctx->user_port;
	rev.family = LB_FAMILY_V6;
	frontend = cp_lb_revsk.lookup(&rev);
	if (!frontend)
		return 1;
	__builtin_memcpy(a, frontend->addr, 16);
	ctx->user_ip6[0] = a[0];
	ctx->user_ip6[1] = a[1];
	ctx->user_ip6[2] = a[2];
	ctx->user_ip6[3] = a[3];
	ctx->user_port = frontend->port;
	return 1;
}

int sock4_connect(struct bpf_sock_addr *ctx) { return lb4_translate(ctx); }
int sock6_connect(struct bpf_sock_addr *ctx) { return lb6_translate(ctx); }
int sock4_sendmsg(struct bpf_sock_addr *ctx) { return lb4_translate(ctx); }
int sock6_sendmsg(struct bpf_sock_addr *ctx) { return lb6_translate(ctx); }
int sock4_recvmsg(struct bpf_sock_addr *ctx) { return lb4_reverse(ctx); }
int sock6_recvmsg(struct bpf_sock_addr *ctx) { return lb6_reverse(ctx); }
int sock4_getpeername(struct bpf_sock_addr *ctx) { return lb4_reverse(ctx); }
int sock6_getpeername(struct bpf_sock_addr *ctx) { return lb6_reverse(ctx); }
