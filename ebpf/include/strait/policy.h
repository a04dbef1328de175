/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Network policy in the datapath (docs/policy.md "Datapath"): the policy maps and
 * strait_pol_check(), the one check every program that delivers to or sends from
 * an endpoint runs. policy.c runs it on the host end of each container veth (tcx
 * ingress: the container's egress; tcx egress: its ingress); fastpath.c runs the
 * destination's ingress check before bpf_redirect_peer, which skips that veth's
 * tcx egress.
 *
 * Every map here is pinned by name (LIBBPF_PIN_BY_NAME) under the directory the
 * agent loads with (its --bpf-dir), so the policy object and the fast path object
 * share one copy, and a new agent finds the maps the old one filled: enforcement
 * goes on across a restart.
 *
 * A packet's verdict:
 *   1. the peer's identity from the ipcache (a miss is WORLD);
 *   2. an ICMP error about a tracked flow passes;
 *   3. its flow's conntrack entry (key dir = this check): current generation ->
 *      pass; older generation (a policy was installed since) -> evaluated again,
 *      deleted and dropped if now denied (a deleted rule ends established
 *      connections on their next packet, as Cilium's re-evaluation does);
 *   4. the reversed tuple under the other direction: a reply -> pass (with the
 *      same generation check on the flow it replies to);
 *   5. else a new flow: into an endpoint from its own host always passes; else the
 *      endpoint's tables are looked up by peer identity and by the peer address's
 *      CIDR class and merged as strait_policy::tables::Lookup::verdict does.
 *      Allowed -> an entry (TCP only on a SYN without ACK) and an event for the
 *      first packet; denied -> dropped and an event; denied in audit -> passed, an
 *      entry flagged audit and an audit event.
 * Multi-byte integers in map keys and values are in host order, ports and
 * addresses in network order (strait/abi.h).
 */
#ifndef STRAIT_POLICY_H
#define STRAIT_POLICY_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "strait/abi.h"

#ifndef LIBBPF_PIN_BY_NAME
#define LIBBPF_PIN_BY_NAME 1
#endif

/* ifindex -> the endpoint's identity, generation, live version and flags. No entry:
 * the endpoint is open both ways (and still tracked). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct strait_pol_endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} strait_pol_endpoints SEC(".maps");

/* (ifindex, version, dir, proto, peer, port prefix) -> cell. Both versions of an
 * endpoint's tables are here while an install runs. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1048576);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct strait_pol_rule_key);
	__type(value, struct strait_pol_cell);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} strait_pol_rules SEC(".maps");

/* (ifindex, version, dir, family, prefix) -> the CIDR class. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct strait_pol_cidr_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} strait_pol_cidrs SEC(".maps");

/* Address or prefix -> identity, for the whole cluster. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct strait_pol_ipcache_key);
	__type(value, struct strait_pol_ipcache_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} strait_pol_ipcache SEC(".maps");

/* Conntrack. LRU: a full table evicts an entry not recently used (the kernel's LRU
 * is approximate, per CPU), whose flow's next packet is then evaluated as new. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct strait_ct_key);
	__type(value, struct strait_ct_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} strait_ct SEC(".maps");

/* struct strait_pol_event records for `netctl monitor` (2 MiB). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 21);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} strait_pol_events SEC(".maps");

/* One counter per enum strait_pol_reason, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STRAIT_POL_REASON_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} strait_pol_stats SEC(".maps");

/* (rule, verdict) -> flows it decided, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct strait_pol_rule_stat_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} strait_pol_rule_stats SEC(".maps");

/*
 * Counts a packet under `reason`. Not inlined, so that enum strait_pol_reason is in
 * the object's BTF (as strait_count() does for the fast path's).
 */
static __noinline void strait_pol_count(enum strait_pol_reason reason)
{
	__u32 key = reason;
	__u64 *c = bpf_map_lookup_elem(&strait_pol_stats, &key);

	if (c)
		*c += 1;
}

#define STRAIT_TCP_FIN 0x01
#define STRAIT_TCP_SYN 0x02
#define STRAIT_TCP_RST 0x04
#define STRAIT_TCP_ACK 0x10

/* IPPROTO_* as on the wire. */
#define STRAIT_IPPROTO_ICMP 1
#define STRAIT_IPPROTO_TCP 6
#define STRAIT_IPPROTO_UDP 17
#define STRAIT_IPPROTO_ICMPV6 58
#define STRAIT_IPPROTO_SCTP 132
#define STRAIT_IPPROTO_OTHER 255

/* A flow's tuple as conntrack keys it. */
struct strait_pol_tuple {
	struct strait_addr src;
	struct strait_addr dst;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* What the check reads of a packet. */
struct strait_pol_flow {
	struct strait_pol_tuple t;
	/* The port the tables key by: destination port; ICMP type << 8 | code. */
	__u16 port;
	__u8 family; /* 4 or 6 */
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_error; /* an ICMP error: `inner` is the packet it is about */
	__u8 pad[2];
	struct strait_pol_tuple inner;
};

/* The outcome of evaluating a new flow (strait_policy::tables::Verdict). */
struct strait_pol_outcome {
	__u32 rule;
	__u32 log;
	__u8 allowed;
	__u8 audit;
	__u8 pad[2];
};

static __always_inline void strait_pol_v4_key(struct strait_addr *a, __be32 ip)
{
	__builtin_memset(a, 0, sizeof(*a));
	a->bytes[10] = 0xff;
	a->bytes[11] = 0xff;
	__builtin_memcpy(&a->bytes[12], &ip, 4);
}

static __always_inline int strait_pol_is_icmp_error(__u8 proto, __u8 type)
{
	if (proto == STRAIT_IPPROTO_ICMP)
		/* unreachable, source quench, time exceeded, parameter problem */
		return type == 3 || type == 4 || type == 11 || type == 12;
	if (proto == STRAIT_IPPROTO_ICMPV6)
		/* unreachable, packet too big, time exceeded, parameter problem */
		return type >= 1 && type <= 4;
	return 0;
}

/*
 * Reads the transport header at `off` into `t` (ports, ICMP echo identifiers) and
 * returns the table port; `*flags` gets TCP's flags, `*icmp_type` ICMP's type. A
 * header that cannot be read leaves the ports 0.
 */
static __always_inline __u16 strait_pol_l4(struct __sk_buff *skb, __u32 off,
					   struct strait_pol_tuple *t, __u8 *flags, __u8 *icmp_type)
{
	__u8 l4[16];

	*flags = 0;
	*icmp_type = 0;
	switch (t->proto) {
	case STRAIT_IPPROTO_TCP:
		if (bpf_skb_load_bytes(skb, off, l4, 4) < 0)
			return 0;
		/* An ICMPv4 error quotes 8 bytes of the packet: ports, not flags. */
		if (bpf_skb_load_bytes(skb, off + 13, flags, 1) < 0)
			*flags = 0;
		break;
	case STRAIT_IPPROTO_UDP:
	case STRAIT_IPPROTO_SCTP:
		if (bpf_skb_load_bytes(skb, off, l4, 4) < 0)
			return 0;
		break;
	case STRAIT_IPPROTO_ICMP:
	case STRAIT_IPPROTO_ICMPV6: {
		if (bpf_skb_load_bytes(skb, off, l4, 8) < 0)
			return 0;
		__u8 type = l4[0];
		__be16 id;

		__builtin_memcpy(&id, &l4[4], 2);
		*icmp_type = type;
		/* Echo request and reply: the identifier keys the pair. */
		if ((t->proto == STRAIT_IPPROTO_ICMP && type == 8) ||
		    (t->proto == STRAIT_IPPROTO_ICMPV6 && type == 128))
			t->sport = id;
		else if ((t->proto == STRAIT_IPPROTO_ICMP && type == 0) ||
			 (t->proto == STRAIT_IPPROTO_ICMPV6 && type == 129))
			t->dport = id;
		return ((__u16)type << 8) | l4[1];
	}
	default:
		return 0;
	}
	__builtin_memcpy(&t->sport, &l4[0], 2);
	__builtin_memcpy(&t->dport, &l4[2], 2);
	return bpf_ntohs(t->dport);
}

/*
 * Reads an IP header of `family` at `off` and what follows it into `t`. Returns
 * the table port, or -1 when the IP header cannot be read. IPv6 extension headers
 * are skipped (up to four); a fragment other than the first has no ports (0).
 */
static __always_inline int strait_pol_l3(struct __sk_buff *skb, __u32 off, __u8 family,
					 struct strait_pol_tuple *t, __u8 *flags, __u8 *icmp_type)
{
	*flags = 0;
	*icmp_type = 0;
	if (family == 4) {
		struct iphdr ip4;

		if (bpf_skb_load_bytes(skb, off, &ip4, sizeof(ip4)) < 0)
			return -1;
		strait_pol_v4_key(&t->src, ip4.saddr);
		strait_pol_v4_key(&t->dst, ip4.daddr);
		t->proto = ip4.protocol;
		if (ip4.frag_off & bpf_htons(0x1fff))
			return 0;
		return strait_pol_l4(skb, off + ip4.ihl * 4, t, flags, icmp_type);
	}
	struct ipv6hdr ip6;

	if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)) < 0)
		return -1;
	__builtin_memcpy(&t->src, &ip6.saddr, 16);
	__builtin_memcpy(&t->dst, &ip6.daddr, 16);
	__u8 next = ip6.nexthdr;

	off += sizeof(ip6);
#pragma unroll
	for (int i = 0; i < 4; i++) {
		__u8 ext[8];

		if (next != 0 && next != 43 && next != 60 && next != 44 && next != 51)
			break;
		if (bpf_skb_load_bytes(skb, off, ext, 8) < 0)
			return 0;
		if (next == 44) {
			/* Fragment: a later one carries no transport header. */
			if ((ext[2] << 8 | ext[3]) & 0xfff8) {
				t->proto = ext[0];
				return 0;
			}
			off += 8;
		} else if (next == 51) {
			off += (ext[1] + 2) * 4;
		} else {
			off += (ext[1] + 1) * 8;
		}
		next = ext[0];
	}
	t->proto = next;
	return strait_pol_l4(skb, off, t, flags, icmp_type);
}

/* Parses the packet. Returns 0, or -1 when it is not IP (or its IP header cannot
 * be read): such packets pass. */
static __always_inline int strait_pol_parse(struct __sk_buff *skb, struct strait_pol_flow *f)
{
	__u8 family;

	if (skb->protocol == bpf_htons(ETH_P_IP))
		family = 4;
	else if (skb->protocol == bpf_htons(ETH_P_IPV6))
		family = 6;
	else
		return -1;
	int port = strait_pol_l3(skb, ETH_HLEN, family, &f->t, &f->tcp_flags, &f->icmp_type);

	if (port < 0)
		return -1;
	f->family = family;
	f->port = port;
	if (!strait_pol_is_icmp_error(f->t.proto, f->icmp_type))
		return 0;
	/* The packet the error is about, behind the ICMP header. */
	__u32 off = ETH_HLEN + (family == 4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr)) + 8;
	__u8 inner_flags, inner_type;

	if (family == 4) {
		__u8 ihl;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ihl, 1) < 0)
			return 0;
		off = ETH_HLEN + (ihl & 0xf) * 4 + 8;
	}
	if (strait_pol_l3(skb, off, family, &f->inner, &inner_flags, &inner_type) >= 0)
		f->icmp_error = 1;
	return 0;
}

static __always_inline void
strait_pol_ct_key(struct strait_ct_key *k, const struct strait_pol_tuple *t, __u8 dir, int reversed)
{
	__builtin_memset(k, 0, sizeof(*k));
	if (reversed) {
		k->src = t->dst;
		k->dst = t->src;
		k->sport = t->dport;
		k->dport = t->sport;
	} else {
		k->src = t->src;
		k->dst = t->dst;
		k->sport = t->sport;
		k->dport = t->dport;
	}
	k->proto = t->proto;
	k->dir = dir;
}

/* A conntrack entry that has not expired (the agent deletes expired ones). */
static __always_inline struct strait_ct_entry *strait_ct_lookup(const struct strait_ct_key *k)
{
	struct strait_ct_entry *e = bpf_map_lookup_elem(&strait_ct, k);

	if (e && e->expires < bpf_ktime_get_ns())
		return NULL;
	return e;
}

static __always_inline __u32 strait_pol_identity(const struct strait_addr *addr)
{
	struct strait_pol_ipcache_key k = {.prefixlen = 128};

	k.addr = *addr;
	struct strait_pol_ipcache_value *v = bpf_map_lookup_elem(&strait_pol_ipcache, &k);

	return v ? v->identity : STRAIT_POL_IDENTITY_WORLD;
}

static __always_inline __u8 strait_pol_proto_key(__u8 proto)
{
	switch (proto) {
	case STRAIT_IPPROTO_ICMP:
	case STRAIT_IPPROTO_TCP:
	case STRAIT_IPPROTO_UDP:
	case STRAIT_IPPROTO_ICMPV6:
	case STRAIT_IPPROTO_SCTP:
		return proto;
	default:
		return STRAIT_IPPROTO_OTHER;
	}
}

static __always_inline struct strait_pol_cell *strait_pol_cell(__u32 ifindex,
							       const struct strait_pol_endpoint *ep,
							       __u8 dir, __u8 proto, __u32 peer,
							       __u16 port)
{
	struct strait_pol_rule_key k = {
		.prefixlen = STRAIT_POL_RULE_KEY_FIXED_BITS + 16,
		.ifindex = ifindex,
		.version = ep->version,
		.dir = dir,
		.proto = strait_pol_proto_key(proto),
		.peer = peer,
		.port = bpf_htons(port),
	};

	return bpf_map_lookup_elem(&strait_pol_rules, &k);
}

/*
 * Evaluates a new flow of endpoint `ifindex` (entry `ep`, NULL: open) in `dir` with
 * the peer at `peer` of identity `peer_id`: the two lookups and
 * strait_policy::tables::Lookup::verdict's merge, step for step.
 */
static __always_inline struct strait_pol_outcome
strait_pol_evaluate(__u32 ifindex, const struct strait_pol_endpoint *ep, __u8 dir, __u8 family,
		    const struct strait_addr *peer, __u32 peer_id, __u8 proto, __u16 port)
{
	struct strait_pol_outcome v = {
		.rule = STRAIT_POL_NONE,
		.log = STRAIT_POL_NONE,
		.allowed = 1,
	};

	if (!ep)
		return v;
	struct strait_pol_cell *cells[2];

	cells[0] = strait_pol_cell(ifindex, ep, dir, proto, peer_id, port);
	cells[1] = NULL;
	struct strait_pol_cidr_key ck = {
		.prefixlen = STRAIT_POL_CIDR_KEY_FIXED_BITS + 128,
		.ifindex = ifindex,
		.version = ep->version,
		.dir = dir,
		.family = family,
	};

	ck.addr = *peer;
	__u32 *class = bpf_map_lookup_elem(&strait_pol_cidrs, &ck);

	if (class)
		cells[1] = strait_pol_cell(ifindex, ep, dir, proto,
					   *class | STRAIT_POL_CIDR_CLASS_FLAG, port);

	__u32 decision = STRAIT_POL_NONE, log = STRAIT_POL_NONE, allow = STRAIT_POL_NONE;
	__u8 action = STRAIT_POL_PASS, daudit = 0;

#pragma unroll
	for (int i = 0; i < 2; i++) {
		struct strait_pol_cell *c = cells[i];

		if (c && c->decision_rule != STRAIT_POL_NONE && c->decision_rule < decision) {
			decision = c->decision_rule;
			action = c->decision_action;
			daudit = c->decision_audit;
		}
	}
#pragma unroll
	for (int i = 0; i < 2; i++) {
		struct strait_pol_cell *c = cells[i];

		if (!c)
			continue;
		/* A log rule after the decision is not reported. */
		if (c->log_rule < log && (decision == STRAIT_POL_NONE || c->log_rule < decision))
			log = c->log_rule;
		if (c->allow_rule < allow)
			allow = c->allow_rule;
	}
	v.log = log;
	if (decision != STRAIT_POL_NONE && action == STRAIT_POL_ALLOW) {
		v.rule = decision;
		return v;
	}
	if (decision != STRAIT_POL_NONE && action == STRAIT_POL_DENY) {
		v.rule = decision;
		v.allowed = daudit;
		v.audit = daudit;
		return v;
	}
	/* Pass, or no cluster-tier decision: the namespaced tier, then the default. */
	if (allow != STRAIT_POL_NONE) {
		v.rule = allow;
		return v;
	}
	__u8 isolated = ep->flags & (dir == STRAIT_POL_INGRESS ? STRAIT_POL_F_ISOLATED_INGRESS :
								 STRAIT_POL_F_ISOLATED_EGRESS);
	__u8 def_audit = ep->flags & (dir == STRAIT_POL_INGRESS ? STRAIT_POL_F_AUDIT_INGRESS :
								  STRAIT_POL_F_AUDIT_EGRESS);
	if (isolated) {
		v.allowed = def_audit ? 1 : 0;
		v.audit = def_audit ? 1 : 0;
	}
	return v;
}

/* Counts a flow under the rule that decided it. Not inlined, so that enum
 * strait_pol_verdict is in the object's BTF. */
static __noinline void strait_pol_rule_count(__u32 rule, enum strait_pol_verdict verdict)
{
	struct strait_pol_rule_stat_key k = {.rule = rule, .verdict = verdict};
	__u64 *c = bpf_map_lookup_elem(&strait_pol_rule_stats, &k);

	if (c) {
		*c += 1;
	} else {
		__u64 one = 1;

		bpf_map_update_elem(&strait_pol_rule_stats, &k, &one, BPF_NOEXIST);
	}
}

static __always_inline void strait_pol_rule_stat(const struct strait_pol_outcome *v)
{
	strait_pol_rule_count(v->rule, v->audit	  ? STRAIT_POL_VERDICT_AUDIT :
				       v->allowed ? STRAIT_POL_VERDICT_ALLOWED :
						    STRAIT_POL_VERDICT_DENIED);
}

/* Sends an event built by strait_pol_event(). Not inlined, so that struct
 * strait_pol_event is in the object's BTF for the agent's layout test. */
static __noinline void strait_pol_emit(struct strait_pol_event *e)
{
	if (bpf_ringbuf_output(&strait_pol_events, e, sizeof(*e), 0) < 0)
		strait_pol_count(STRAIT_POL_EVENTS_LOST);
}

static __always_inline void strait_pol_event(__u32 ifindex, __u8 dir,
					     const struct strait_pol_flow *f, __u32 self_id,
					     __u32 peer_id, const struct strait_pol_outcome *v)
{
	struct strait_pol_event e = {
		.time_ns = bpf_ktime_get_ns(),
		.ifindex = ifindex,
		.dir = dir,
		.proto = f->t.proto,
		.allowed = v->allowed,
		.audit = v->audit,
		.src = f->t.src,
		.dst = f->t.dst,
		.dport = f->port,
		.src_identity = dir == STRAIT_POL_EGRESS ? self_id : peer_id,
		.dst_identity = dir == STRAIT_POL_EGRESS ? peer_id : self_id,
		.rule = v->rule,
		.log_rule = v->log,
	};

	if (f->t.proto != STRAIT_IPPROTO_ICMP && f->t.proto != STRAIT_IPPROTO_ICMPV6)
		e.sport = bpf_ntohs(f->t.sport);
	strait_pol_emit(&e);
}

static __always_inline __u64 strait_ct_lifetime(__u8 proto, __u8 fwd, __u8 rev)
{
	__u64 s;

	if (proto == STRAIT_IPPROTO_TCP) {
		if ((fwd | rev) & (STRAIT_TCP_FIN | STRAIT_TCP_RST))
			s = STRAIT_CT_TCP_CLOSING;
		else if ((fwd & STRAIT_TCP_ACK) && (rev & STRAIT_TCP_ACK))
			s = STRAIT_CT_TCP_ESTABLISHED;
		else
			s = STRAIT_CT_TCP_SYN;
	} else if (proto == STRAIT_IPPROTO_ICMP || proto == STRAIT_IPPROTO_ICMPV6) {
		s = STRAIT_CT_ICMP;
	} else {
		s = STRAIT_CT_OTHER;
	}
	return bpf_ktime_get_ns() + s * 1000000000ULL;
}

/* A packet of a tracked flow: flags, counters and its new expiry. */
static __always_inline void strait_ct_touch(struct strait_ct_entry *e, __u8 proto, int reply,
					    __u8 tcp_flags, __u32 len)
{
	if (reply)
		e->tcp_flags_rev |= tcp_flags;
	else
		e->tcp_flags_fwd |= tcp_flags;
	__sync_fetch_and_add(&e->packets, 1);
	__sync_fetch_and_add(&e->bytes, len);
	e->expires = strait_ct_lifetime(proto, e->tcp_flags_fwd, e->tcp_flags_rev);
}

/* The table port of the flow a reply answers: its destination port (the reply's
 * source port); for an echo reply, the echo request's type. */
static __always_inline __u16 strait_pol_request_port(const struct strait_pol_flow *f)
{
	switch (f->t.proto) {
	case STRAIT_IPPROTO_TCP:
	case STRAIT_IPPROTO_UDP:
	case STRAIT_IPPROTO_SCTP:
		return bpf_ntohs(f->t.sport);
	case STRAIT_IPPROTO_ICMP:
		return f->icmp_type == 0 ? 8 << 8 : 0;
	case STRAIT_IPPROTO_ICMPV6:
		return f->icmp_type == 129 ? 128 << 8 : 0;
	default:
		return 0;
	}
}

static __always_inline void strait_pol_count_denied(const struct strait_pol_outcome *v)
{
	strait_pol_count(v->rule == STRAIT_POL_NONE ? STRAIT_POL_DENIED_DEFAULT :
						      STRAIT_POL_DENIED_RULE);
}

/*
 * The policy check of endpoint `ifindex` (its veth's host end) for a packet it
 * receives (STRAIT_POL_INGRESS) or sends (STRAIT_POL_EGRESS). Returns 1 to let it
 * go on, 0 to drop it.
 */
static __always_inline int strait_pol_check(struct __sk_buff *skb, __u32 ifindex, __u8 dir)
{
	struct strait_pol_flow f = {};

	if (strait_pol_parse(skb, &f) < 0) {
		strait_pol_count(STRAIT_POL_PASS_NOT_IP);
		return 1;
	}
	/* Neighbour discovery and MLD: the link works whatever the policy. */
	if (f.t.proto == STRAIT_IPPROTO_ICMPV6 &&
	    ((f.icmp_type >= 130 && f.icmp_type <= 137) || f.icmp_type == 143)) {
		strait_pol_count(STRAIT_POL_PASS_LINK_CONTROL);
		return 1;
	}
	__u8 other = dir == STRAIT_POL_INGRESS ? STRAIT_POL_EGRESS : STRAIT_POL_INGRESS;
	struct strait_ct_key key;

	if (f.icmp_error) {
		/* The packet it is about was sent by the other side of a flow tracked by
		 * this endpoint's other check, or by this side of one of its replies. */
		strait_pol_ct_key(&key, &f.inner, other, 0);
		if (strait_ct_lookup(&key)) {
			strait_pol_count(STRAIT_POL_ALLOWED_RELATED);
			return 1;
		}
		strait_pol_ct_key(&key, &f.inner, dir, 1);
		if (strait_ct_lookup(&key)) {
			strait_pol_count(STRAIT_POL_ALLOWED_RELATED);
			return 1;
		}
	}

	struct strait_pol_endpoint *ep = bpf_map_lookup_elem(&strait_pol_endpoints, &ifindex);
	__u32 generation = ep ? ep->generation : 0;
	__u32 self_id = ep ? ep->identity : 0;
	const struct strait_addr *peer = dir == STRAIT_POL_INGRESS ? &f.t.src : &f.t.dst;
	__u32 peer_id = strait_pol_identity(peer);
	struct strait_pol_outcome v;
	struct strait_ct_entry *ct = NULL;
	int reply = 0;

	/* An ICMP error is never a flow of its own. */
	if (!f.icmp_error) {
		strait_pol_ct_key(&key, &f.t, dir, 0);
		ct = strait_ct_lookup(&key);
		if (!ct) {
			strait_pol_ct_key(&key, &f.t, other, 1);
			ct = strait_ct_lookup(&key);
			reply = 1;
		}
	}
	if (ct) {
		if (ct->generation != generation) {
			/* A policy was installed since the flow was allowed: as the flow
			 * itself, in the direction it was opened. */
			__u16 port = reply ? strait_pol_request_port(&f) : f.port;

			v = strait_pol_evaluate(ifindex, ep, reply ? other : dir, f.family, peer,
						peer_id, f.t.proto, port);
			strait_pol_rule_stat(&v);
			if (!v.allowed) {
				bpf_map_delete_elem(&strait_ct, &key);
				strait_pol_count(STRAIT_POL_REEVALUATED_DENIED);
				strait_pol_event(ifindex, dir, &f, self_id, peer_id, &v);
				return 0;
			}
			ct->generation = generation;
			ct->rule = v.rule;
			ct->audit = v.audit;
			strait_pol_count(STRAIT_POL_REEVALUATED_ALLOWED);
			if (v.audit)
				strait_pol_event(ifindex, dir, &f, self_id, peer_id, &v);
		} else {
			strait_pol_count(reply ? STRAIT_POL_ALLOWED_REPLY :
						 STRAIT_POL_ALLOWED_ESTABLISHED);
		}
		strait_ct_touch(ct, f.t.proto, reply, f.tcp_flags, skb->len);
		return 1;
	}

	/* A new flow. */
	if (dir == STRAIT_POL_INGRESS && peer_id == STRAIT_POL_IDENTITY_HOST) {
		v = (struct strait_pol_outcome){
			.rule = STRAIT_POL_NONE, .log = STRAIT_POL_NONE, .allowed = 1};
	} else {
		v = strait_pol_evaluate(ifindex, ep, dir, f.family, peer, peer_id, f.t.proto,
					f.port);
		strait_pol_rule_stat(&v);
	}
	if (!v.allowed) {
		strait_pol_count_denied(&v);
		strait_pol_event(ifindex, dir, &f, self_id, peer_id, &v);
		return 0;
	}
	/* TCP is tracked from its SYN: an entry made mid-stream could face the wrong
	 * way and let the other side's packets pass as replies. ICMP errors are not
	 * flows. */
	int track = !f.icmp_error &&
		    (f.t.proto != STRAIT_IPPROTO_TCP ||
		     (f.tcp_flags & (STRAIT_TCP_SYN | STRAIT_TCP_ACK)) == STRAIT_TCP_SYN);

	if (track) {
		struct strait_ct_entry e = {
			.packets = 1,
			.bytes = skb->len,
			.generation = generation,
			.rule = v.rule,
			.tcp_flags_fwd = f.tcp_flags,
			.audit = v.audit,
		};

		e.expires = strait_ct_lifetime(f.t.proto, e.tcp_flags_fwd, 0);
		strait_pol_ct_key(&key, &f.t, dir, 0);
		bpf_map_update_elem(&strait_ct, &key, &e, BPF_ANY);
	}
	if (v.audit)
		strait_pol_count(STRAIT_POL_AUDIT_DENIED);
	else if (dir == STRAIT_POL_INGRESS && peer_id == STRAIT_POL_IDENTITY_HOST)
		strait_pol_count(STRAIT_POL_ALLOWED_FROM_HOST);
	else
		strait_pol_count(track ? STRAIT_POL_ALLOWED_NEW : STRAIT_POL_ALLOWED_UNTRACKED);
	/* Allowed flows are reported once, by their first packet; audit denials
	 * always. */
	if (track || v.audit)
		strait_pol_event(ifindex, dir, &f, self_id, peer_id, &v);
	return 1;
}

#endif /* STRAIT_POLICY_H */
