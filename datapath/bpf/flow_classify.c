/* Classifier (cls_bpf, not direct-action) of an endpoint's shaping HTB qdisc
 * (datapath/shaper.py): the return value is the class. Small packets (ACKs, pings, DNS,
 * handshakes) go to the sparse class, which HTB serves first; everything else to one of
 * the bulk classes by flow hash, each with its own short FIFO. A bulk flow therefore
 * queues only behind itself, which is what keeps latency low while the limit is
 * saturated, the job fq does with EDT on kernels that have it. */
#include "lib/common.h"

#define SHAPER_MAJOR 0xC1
#define SHAPER_SPARSE_MINOR 0x2
#define SHAPER_BULK_MINOR 0x10
#define SHAPER_BULK_QUEUES 16 /* keep in step with shaper.BULK_QUEUES */
#define SHAPER_SPARSE_MAX_LEN 256

int flow_classify(struct __sk_buff *skb)
{
	__u32 minor;

	if (skb->len <= SHAPER_SPARSE_MAX_LEN)
		minor = SHAPER_SPARSE_MINOR;
	else
		minor = SHAPER_BULK_MINOR + bpf_get_hash_recalc(skb) % SHAPER_BULK_QUEUES;
	return (SHAPER_MAJOR << 16) | minor;
}
