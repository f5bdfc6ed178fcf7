/* The host firewall: this node as an endpoint (reserved:host, HOST_EP_KEY), policed on
 * its own network device (from_netdev: what comes in for the host's addresses;
 * to_netdev: what the host sends out) and for its own containers (from_container, a
 * destination of identity host). Connections are tracked whenever the host endpoint
 * exists, enforced or not, so a policy that arrives later keeps the connections already
 * established, and replies pass. Never on loopback (no hook there). */
#ifndef CILIUMPY_HOSTFW_H
#define CILIUMPY_HOSTFW_H

#include "lib/maps.h"
#include "lib/conntrack.h"
#include "lib/verdict.h"

#define OVERLAY_PORT_VXLAN 4789
#define OVERLAY_PORT_GENEVE 6081

/* The host endpoint; NULL while the host firewall is off. */
static __always_inline struct ep_info *host_endpoint(void)
{
	__u32 key = HOST_EP_KEY;

	return cp_endpoints.lookup(&key);
}

/* The datapath's own overlay packets between nodes (their inner packets are policed by
 * the endpoints' policies): never the host's policy, or a host policy would cut the
 * cluster's network. Only from and to nodes of the cluster (remote-node). */
static __always_inline int overlay_packet(struct flow *f, __u32 peer_id)
{
	return f->proto == IPPROTO_UDP && peer_id == ID_REMOTE_NODE &&
	       (f->dport == OVERLAY_PORT_VXLAN || f->dport == OVERLAY_PORT_GENEVE);
}

/* A new or known connection between the host and ``peer_id``, in ``dir`` (DIR_INGRESS:
 * to the host); 1 to pass, 0 to drop (reported). */
static __always_inline int host_allows(struct ep_info *host, __u8 dir, __u32 peer_id,
				       struct flow *f)
{
	__u32 mine = dir == DIR_INGRESS ? CT_INGRESS_OK : CT_EGRESS_OK;
	__u32 theirs = dir == DIR_INGRESS ? CT_EGRESS_OK : CT_INGRESS_OK;
	__u32 enforce = dir == DIR_INGRESS ? EP_ENFORCE_INGRESS : EP_ENFORCE_EGRESS;
	__u32 src_id = dir == DIR_INGRESS ? peer_id : ID_HOST;
	__u32 dst_id = dir == DIR_INGRESS ? ID_HOST : peer_id;
	__u64 now = bpf_ktime_get_ns();
	__u16 proxy = 0;
	int both = 0;

	if (ct_known(f, mine, theirs, now, &both, &proxy))
		return 1;
	if ((host->flags & enforce) &&
	    decide(host->flags, HOST_EP_KEY, dir, peer_id, f, &proxy, src_id, dst_id) !=
		    REASON_FORWARDED)
		return 0;
	ct_allow(f, mine, src_id, dst_id, now, 0);
	return 1;
}

#endif
