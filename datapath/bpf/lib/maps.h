/* The datapath's maps, pinned under PIN_DIR so an agent restart reuses them. The
 * names carry a layout version: a changed struct gets a new map, never a misread one. */
#ifndef CILIUMPY_MAPS_H
#define CILIUMPY_MAPS_H

#include "lib/common.h"

#ifndef PIN_DIR
#define PIN_DIR "/sys/fs/bpf/ciliumpy"
#endif

BPF_TABLE_PINNED("hash", __u32, struct ep_info, cp_endpoints, 4096, PIN_DIR "/cp_endpoints_v2");
BPF_TABLE_PINNED("lpm_trie", struct ipcache_key, struct ipcache_val, cp_ipcache, 512000,
		 PIN_DIR "/cp_ipcache_v1", BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("lpm_trie", struct policy_key, struct policy_val, cp_policy_allow, 1000000,
		 PIN_DIR "/cp_policy_allow_v1", BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("lpm_trie", struct policy_key, struct policy_val, cp_policy_deny, 1000000,
		 PIN_DIR "/cp_policy_deny_v1", BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("lru_hash", struct ct_key, struct ct_val, cp_ct, 262144, PIN_DIR "/cp_ct_v1");
BPF_TABLE_PINNED("percpu_array", __u32, struct metric_val, cp_metrics, 16,
		 PIN_DIR "/cp_metrics_v1");
BPF_TABLE_PINNED("array", __u32, struct dp_config, cp_config, 1, PIN_DIR "/cp_config_v1");
BPF_TABLE_PINNED("hash", __u32, struct bw_state, cp_bandwidth, 4096,
		 PIN_DIR "/cp_bandwidth_v1");
BPF_RINGBUF_OUTPUT(cp_events, 1024); /* pages: 4 MiB, ~50k events of slack */

#endif
