/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The maps of strait's programs, by the names the agent takes them by (the map
 * names in agent/src/fastpath/abi.rs), with their layouts from abi.h. An object that
 * includes this header holds every map in it: the fast path's two programs share one
 * object and so their maps.
 */
#ifndef STRAIT_MAPS_H
#define STRAIT_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "strait/abi.h"

/* One entry, written by the agent. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct strait_fp_config);
} strait_fp_config SEC(".maps");

/* This node's endpoints the fast path may deliver to, by address. Endpoints the fast
 * path must leave alone (host ports, shaped) are absent. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct strait_addr);
	__type(value, struct strait_fp_endpoint);
} strait_fp_endpoints SEC(".maps");

/* Other nodes' blocks behind their VTEPs (vxlan only), longest prefix first. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct strait_fp_tunnel_key);
	__type(value, struct strait_fp_tunnel);
} strait_fp_tunnels SEC(".maps");

/* One counter per enum strait_reason, per CPU, summed by the agent for
 * `netctl status`, /v1/status and metrics. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STRAIT_REASON_MAX);
	__type(key, __u32);
	__type(value, __u64);
} strait_fp_stats SEC(".maps");

/*
 * Counts a packet under `reason`. A real function, not inlined: its parameter is
 * what puts enum strait_reason into the object's BTF (the types of inlined
 * functions' parameters are not emitted), where the agent's test reads the values.
 * The call costs a few instructions per packet.
 */
static __noinline void strait_count(enum strait_reason reason)
{
	__u32 key = reason;
	__u64 *c = bpf_map_lookup_elem(&strait_fp_stats, &key);

	if (c)
		*c += 1;
}

#endif /* STRAIT_MAPS_H */
