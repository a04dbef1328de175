/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Services in the datapath (docs/services.md "Datapath"): the service maps and the
 * lookup and backend choice every translating program shares. services.c runs them
 * from cgroup sock_addr hooks (a socket's destination is rewritten at connect and
 * sendmsg time, as Cilium's socket LB does); services_tc.c from tc on the
 * node's underlay interface, for packets from outside the node (node ports,
 * external IPs), with the flow table strait_svc_ct.
 *
 *   frontend (VIP, port, proto, scope) -> { id, M, affinity, backends }
 *   slot (id, 0..M-1)                  -> backend id   (the Maglev table)
 *   backend id                         -> (address, port)
 *
 * A backend id is its frontend's id << 16 | an index, so it names the frontend it
 * belongs to (STRAIT_SVC_BACKEND_FRONTEND): an affinity entry is only honoured for
 * a backend of the same frontend that still exists.
 *
 * Every map is pinned by name (LIBBPF_PIN_BY_NAME) under the agent's bpf dir, so a
 * new agent finds the tables the old one wrote and translation goes on across a
 * restart. Multi-byte integers are in host order, ports and addresses in network
 * order (strait/abi.h).
 */
#ifndef STRAIT_SERVICES_H
#define STRAIT_SERVICES_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "strait/abi.h"

#ifndef LIBBPF_PIN_BY_NAME
#define LIBBPF_PIN_BY_NAME 1
#endif

/* (VIP, port, proto, scope) -> the frontend. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct strait_svc_key);
	__type(value, struct strait_svc_frontend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} strait_svc_frontends SEC(".maps");

/* (frontend id, slot) -> backend id: every frontend's Maglev table. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 20);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct strait_svc_slot_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} strait_svc_slots SEC(".maps");

/* backend id -> its address and port. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct strait_svc_backend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} strait_svc_backends SEC(".maps");

/* (socket, backend as it sees it) -> the service address to show it. LRU: nothing
 * deletes an entry when its socket closes; the least recently used go first. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct strait_svc_revnat_key);
	__type(value, struct strait_svc_revnat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} strait_svc_revnat SEC(".maps");

/* (client, frontend) -> the backend it was last sent to, and when. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct strait_svc_affinity_key);
	__type(value, struct strait_svc_affinity);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} strait_svc_affinity SEC(".maps");

/* Packet-level translation's flows (services_tc.c), both directions. LRU: the
 * least recently used go when it is full; nothing else deletes an entry. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct strait_svc_ct_key);
	__type(value, struct strait_svc_ct);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} strait_svc_ct SEC(".maps");

/* One entry: the node's SNAT addresses, written by the agent. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct strait_svc_nat_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} strait_svc_nat_config SEC(".maps");

/* One counter per enum strait_svc_reason, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STRAIT_SVC_REASON_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} strait_svc_stats SEC(".maps");

/* backend id -> connections it was given (socket connects, unconnected UDP
 * datagrams, new flows from outside), per CPU. The agent makes the entry with the
 * backend and deletes it with it; the programs only count into an entry that is
 * there, so nothing they do can leave one behind. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} strait_svc_backend_stats SEC(".maps");

/* struct strait_svc_event records for `netctl monitor` (1 MiB). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} strait_svc_events SEC(".maps");

/* One entry, written by the agent: non-zero while someone reads
 * strait_svc_events, so a translation costs no event when nobody does. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} strait_svc_monitor SEC(".maps");

/*
 * Counts a translation or refusal under `reason`. Not inlined, so that enum
 * strait_svc_reason is in the object's BTF (as strait_count() does for the fast
 * path's).
 */
static __noinline void strait_svc_count(enum strait_svc_reason reason)
{
	__u32 key = reason;
	__u64 *c = bpf_map_lookup_elem(&strait_svc_stats, &key);

	if (c)
		*c += 1;
}

/* Counts a connection given to backend `id`, when the agent made its counter. */
static __always_inline void strait_svc_backend_count(__u32 id)
{
	__u64 *c = bpf_map_lookup_elem(&strait_svc_backend_stats, &id);

	if (c)
		*c += 1;
}

/* Whether the agent wants translation events now. */
static __always_inline int strait_svc_monitored(void)
{
	__u32 zero = 0;
	__u32 *on = bpf_map_lookup_elem(&strait_svc_monitor, &zero);

	return on && *on;
}

#define STRAIT_SVC_NSEC_PER_SEC 1000000000ULL

/* The frontend of a service address, or NULL: not a service. */
static __always_inline struct strait_svc_frontend *
strait_svc_lookup(const struct strait_svc_key *key)
{
	return bpf_map_lookup_elem(&strait_svc_frontends, key);
}

/* The client's affinity entry's backend when it is still good: younger than the
 * frontend's timeout, and a backend of this frontend that still exists. */
static __always_inline struct strait_svc_backend *
strait_svc_affine(const struct strait_svc_frontend *fe, struct strait_svc_affinity *a, __u64 now,
		  __u32 *backend_id)
{
	struct strait_svc_backend *be;

	if (now - a->last_ns > (__u64)fe->affinity_secs * STRAIT_SVC_NSEC_PER_SEC)
		return NULL;
	if (STRAIT_SVC_BACKEND_FRONTEND(a->backend) != fe->id)
		return NULL;
	be = bpf_map_lookup_elem(&strait_svc_backends, &a->backend);
	if (!be)
		return NULL;
	a->last_ns = now;
	*backend_id = a->backend;
	return be;
}

/*
 * Chooses a backend of `fe` for `client` (what affinity is keyed by: a socket's
 * network namespace cookie, or a client address's hash with the top bit set).
 * Returns it, its id in *backend_id and STRAIT_SVC_TRANSLATED in *reason; or NULL
 * and why in *reason, and the caller refuses: a connect must fail at once rather
 * than go to an address nobody serves.
 *
 * The slot is the client's affinity entry's backend while that is good, else slot
 * `hash` mod M: a random number for a socket, the flow's hash for a packet (so
 * every packet of a flow, on every node, picks the same one). With a Maglev table
 * that spreads connections as evenly as the table spreads its slots.
 */
static __always_inline struct strait_svc_backend *
strait_svc_select(const struct strait_svc_frontend *fe, __u64 client, __u32 hash, __u32 *backend_id,
		  enum strait_svc_reason *reason)
{
	struct strait_svc_affinity_key akey = {};
	struct strait_svc_slot_key skey = {};
	struct strait_svc_backend *be;
	struct strait_svc_affinity *a;
	__u64 now = 0;
	__u32 *id;

	if (fe->backends == 0 || fe->table_size == 0) {
		*reason = STRAIT_SVC_REFUSED_NO_BACKEND;
		return NULL;
	}
	if (fe->flags & STRAIT_SVC_F_AFFINITY) {
		akey.netns_cookie = client;
		akey.id = fe->id;
		now = bpf_ktime_get_ns();
		a = bpf_map_lookup_elem(&strait_svc_affinity, &akey);
		if (a) {
			be = strait_svc_affine(fe, a, now, backend_id);
			if (be) {
				*reason = STRAIT_SVC_TRANSLATED;
				return be;
			}
		}
	}
	skey.id = fe->id;
	skey.slot = hash % fe->table_size;
	id = bpf_map_lookup_elem(&strait_svc_slots, &skey);
	if (!id) {
		*reason = STRAIT_SVC_BACKEND_MISSING;
		return NULL;
	}
	*backend_id = *id;
	be = bpf_map_lookup_elem(&strait_svc_backends, backend_id);
	if (!be) {
		*reason = STRAIT_SVC_BACKEND_MISSING;
		return NULL;
	}
	if (fe->flags & STRAIT_SVC_F_AFFINITY) {
		struct strait_svc_affinity entry = {.last_ns = now, .backend = *backend_id};

		bpf_map_update_elem(&strait_svc_affinity, &akey, &entry, BPF_ANY);
	}
	*reason = STRAIT_SVC_TRANSLATED;
	return be;
}

/* Whether `addr` is IPv4-mapped (::ffff:a.b.c.d). */
static __always_inline int strait_svc_is_v4(const struct strait_addr *addr)
{
	int i;

	/* Byte by byte: the address need not be 4-byte aligned, and the verifier
	 * refuses a misaligned stack access. */
#pragma unroll
	for (i = 0; i < 10; i++)
		if (addr->bytes[i])
			return 0;
	return addr->bytes[10] == 0xff && addr->bytes[11] == 0xff;
}

#endif /* STRAIT_SERVICES_H */
