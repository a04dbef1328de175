/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The ABI between strait's eBPF programs and the agent: every map key and value
 * layout, and the reasons the programs count a packet under. The agent mirrors this
 * header in agent/src/fastpath/abi.rs; a test there reads the compiled object's BTF
 * and checks each struct's size and member offsets, and each reason's value, against
 * the Rust side. The _Static_asserts below pin the same numbers on the C side, so a
 * change to a layout fails the build here before it can fail there.
 *
 * Types only: maps.h defines the maps. Multi-byte integers are in the host's byte
 * order (the agent writes them with to_ne_bytes), addresses and MACs in network
 * order.
 */
#ifndef STRAIT_ABI_H
#define STRAIT_ABI_H

#include <linux/types.h>

#define STRAIT_ASSERT_LAYOUT(type, member, offset)                   \
	_Static_assert(__builtin_offsetof(type, member) == (offset), \
		       #type "." #member " moved: update the agent's mirror")
#define STRAIT_ASSERT_SIZE(type, size) _Static_assert(sizeof(type) == (size), #type " changed size")

/* An address as the maps key it: 16 bytes, IPv4 as IPv4-mapped IPv6
 * (::ffff:a.b.c.d), so one map serves both families. */
struct strait_addr {
	__u8 bytes[16];
};
STRAIT_ASSERT_SIZE(struct strait_addr, 16);

/* strait_fp_config[0]: written by the agent. */
struct strait_fp_config {
	__u32 enabled; /* 0: every program hands every packet to the stack */
	__u32 fabric_ifindex; /* strait.vxlan; 0 when the node has no such device */
	__u8 fabric_mac[6]; /* strait.vxlan's own MAC: the source of what it sends */
	__u8 pad[2];
};
STRAIT_ASSERT_SIZE(struct strait_fp_config, 16);
STRAIT_ASSERT_LAYOUT(struct strait_fp_config, enabled, 0);
STRAIT_ASSERT_LAYOUT(struct strait_fp_config, fabric_ifindex, 4);
STRAIT_ASSERT_LAYOUT(struct strait_fp_config, fabric_mac, 8);
STRAIT_ASSERT_LAYOUT(struct strait_fp_config, pad, 14);

/* strait_fp_endpoints value: a local endpoint the fast path may deliver to, keyed by
 * each of its addresses. */
struct strait_fp_endpoint {
	__u32 ifindex; /* the host end of its veth: the bpf_redirect_peer target */
	__u8 mac[6]; /* the container's end */
	__u8 host_mac[6]; /* the host's end: the container's gateway */
};
STRAIT_ASSERT_SIZE(struct strait_fp_endpoint, 16);
STRAIT_ASSERT_LAYOUT(struct strait_fp_endpoint, ifindex, 0);
STRAIT_ASSERT_LAYOUT(struct strait_fp_endpoint, mac, 4);
STRAIT_ASSERT_LAYOUT(struct strait_fp_endpoint, host_mac, 10);

/* strait_fp_tunnels key: the LPM trie's prefix length, then the data it matches. */
struct strait_fp_tunnel_key {
	__u32 prefixlen; /* IPv4 blocks: 96 + the prefix length */
	struct strait_addr addr;
};
STRAIT_ASSERT_SIZE(struct strait_fp_tunnel_key, 20);
STRAIT_ASSERT_LAYOUT(struct strait_fp_tunnel_key, prefixlen, 0);
STRAIT_ASSERT_LAYOUT(struct strait_fp_tunnel_key, addr, 4);

/* strait_fp_tunnels value: the MAC that makes strait.vxlan's FDB send the packet to
 * the node behind it. */
struct strait_fp_tunnel {
	__u8 vtep_mac[6];
	__u8 pad[2];
};
STRAIT_ASSERT_SIZE(struct strait_fp_tunnel, 8);
STRAIT_ASSERT_LAYOUT(struct strait_fp_tunnel, vtep_mac, 0);
STRAIT_ASSERT_LAYOUT(struct strait_fp_tunnel, pad, 6);

/*
 * Why a packet went where it went: the index of its counter in strait_fp_stats (one
 * per reason, as cilium counts its drop reasons). STRAIT_FWD_* are redirects;
 * STRAIT_PASS_* hand the packet to the kernel's stack unchanged (TC_ACT_OK), each
 * for one reason; STRAIT_DROP_* drop it (TC_ACT_SHOT). Values are the map's
 * indices: append, never renumber
 * (the agent's names for them are tied to these values by its BTF test).
 */
enum strait_reason {
	STRAIT_FWD_FABRIC = 0, /* redirected into the fabric device */
	STRAIT_FWD_ENDPOINT = 1, /* redirected to a local endpoint's veth peer */
	STRAIT_PASS_NO_ENTRY = 2, /* destination in no map this program sends to */
	STRAIT_PASS_SAME_DEVICE = 3, /* would leave by the device it came in on */
	STRAIT_PASS_MTU = 4, /* too big for the device it would leave by */
	STRAIT_PASS_NOT_IP = 5, /* neither IPv4 nor IPv6 (ARP) */
	STRAIT_PASS_TTL = 6, /* TTL or hop limit <= 1: the stack sends the ICMP */
	STRAIT_PASS_SHORT = 7, /* shorter than its Ethernet or IP header */
	STRAIT_PASS_DISABLED = 8, /* the agent switched the fast path off */
	STRAIT_DROP_POLICY = 9, /* the destination endpoint's ingress policy denied it */
	STRAIT_REASON_MAX = 10,
};

/*
 * Network policy (policy.h, policy.c; docs/policy.md "Datapath"). The agent mirrors
 * this section in agent/src/policy/datapath/abi.rs and checks it against the
 * policy object's BTF like the fast path's.
 */

/* A rule, log rule or allow rule that is not there (RuleId is a u32). */
#define STRAIT_POL_NONE 0xffffffffu
/* Set in the peer slot of a rule key that holds a CIDR class, not an identity
 * (strait_policy::tables::CIDR_CLASS_FLAG). */
#define STRAIT_POL_CIDR_CLASS_FLAG 0x80000000u
/* Reserved identities (strait_policy::tables). */
#define STRAIT_POL_IDENTITY_HOST 1
#define STRAIT_POL_IDENTITY_WORLD 2

/* Which of an endpoint's checks: what it receives (ingress) or sends (egress). */
enum strait_pol_dir {
	STRAIT_POL_INGRESS = 0,
	STRAIT_POL_EGRESS = 1,
};

/* A cell's decision_action: the first cluster-tier rule's. */
enum strait_pol_action {
	STRAIT_POL_ALLOW = 0,
	STRAIT_POL_DENY = 1,
	STRAIT_POL_PASS = 2, /* the namespaced tier decides */
};

/* strait_pol_endpoint.flags */
#define STRAIT_POL_F_ISOLATED_INGRESS 0x1
#define STRAIT_POL_F_ISOLATED_EGRESS 0x2
#define STRAIT_POL_F_AUDIT_INGRESS 0x4 /* default deny of ingress is audit */
#define STRAIT_POL_F_AUDIT_EGRESS 0x8

/* strait_pol_endpoints value, by the ifindex of the endpoint's veth (host end). */
struct strait_pol_endpoint {
	__u32 identity;
	__u32 generation; /* conntrack entries of an older one are evaluated again */
	__u8 version; /* 0 or 1: which half of the tables is live */
	__u8 flags; /* STRAIT_POL_F_* */
	__u8 pad[2];
};
STRAIT_ASSERT_SIZE(struct strait_pol_endpoint, 12);
STRAIT_ASSERT_LAYOUT(struct strait_pol_endpoint, identity, 0);
STRAIT_ASSERT_LAYOUT(struct strait_pol_endpoint, generation, 4);
STRAIT_ASSERT_LAYOUT(struct strait_pol_endpoint, version, 8);
STRAIT_ASSERT_LAYOUT(struct strait_pol_endpoint, flags, 9);
STRAIT_ASSERT_LAYOUT(struct strait_pol_endpoint, pad, 10);

/* strait_pol_rules key (LPM): everything up to the port is matched whole (96
 * bits), the port by a prefix of a range's decomposition. */
struct strait_pol_rule_key {
	__u32 prefixlen; /* 96 + the port prefix's length */
	__u32 ifindex;
	__u8 version;
	__u8 dir; /* enum strait_pol_dir */
	__u8 proto; /* Protocol::key_for: 1, 6, 17, 58, 132 or 255 */
	__u8 pad;
	__u32 peer; /* identity, or CIDR class | STRAIT_POL_CIDR_CLASS_FLAG */
	__be16 port; /* destination port; ICMP: type << 8 | code */
	__u8 pad2[2];
};
#define STRAIT_POL_RULE_KEY_FIXED_BITS 96
STRAIT_ASSERT_SIZE(struct strait_pol_rule_key, 20);
STRAIT_ASSERT_LAYOUT(struct strait_pol_rule_key, prefixlen, 0);
STRAIT_ASSERT_LAYOUT(struct strait_pol_rule_key, ifindex, 4);
STRAIT_ASSERT_LAYOUT(struct strait_pol_rule_key, version, 8);
STRAIT_ASSERT_LAYOUT(struct strait_pol_rule_key, dir, 9);
STRAIT_ASSERT_LAYOUT(struct strait_pol_rule_key, proto, 10);
STRAIT_ASSERT_LAYOUT(struct strait_pol_rule_key, pad, 11);
STRAIT_ASSERT_LAYOUT(struct strait_pol_rule_key, peer, 12);
STRAIT_ASSERT_LAYOUT(struct strait_pol_rule_key, port, 16);
STRAIT_ASSERT_LAYOUT(struct strait_pol_rule_key, pad2, 18);

/* strait_pol_rules value: strait_policy::tables::Cell. */
struct strait_pol_cell {
	__u32 decision_rule; /* STRAIT_POL_NONE: no cluster-tier decision */
	__u32 log_rule;
	__u32 allow_rule; /* a namespaced rule that allows */
	__u8 decision_action; /* enum strait_pol_action */
	__u8 decision_audit;
	__u8 pad[2];
};
STRAIT_ASSERT_SIZE(struct strait_pol_cell, 16);
STRAIT_ASSERT_LAYOUT(struct strait_pol_cell, decision_rule, 0);
STRAIT_ASSERT_LAYOUT(struct strait_pol_cell, log_rule, 4);
STRAIT_ASSERT_LAYOUT(struct strait_pol_cell, allow_rule, 8);
STRAIT_ASSERT_LAYOUT(struct strait_pol_cell, decision_action, 12);
STRAIT_ASSERT_LAYOUT(struct strait_pol_cell, decision_audit, 13);
STRAIT_ASSERT_LAYOUT(struct strait_pol_cell, pad, 14);

/* strait_pol_cidrs key (LPM): an endpoint's CIDR classes, per version and
 * direction. `family` (4 or 6) keeps an IPv6 prefix such as ::/0 from matching
 * IPv4 peers, which are keyed IPv4-mapped. */
struct strait_pol_cidr_key {
	__u32 prefixlen; /* 64 + the prefix length (IPv4: 64 + 96 + length) */
	__u32 ifindex;
	__u8 version;
	__u8 dir;
	__u8 family;
	__u8 pad;
	struct strait_addr addr;
};
#define STRAIT_POL_CIDR_KEY_FIXED_BITS 64
STRAIT_ASSERT_SIZE(struct strait_pol_cidr_key, 28);
STRAIT_ASSERT_LAYOUT(struct strait_pol_cidr_key, prefixlen, 0);
STRAIT_ASSERT_LAYOUT(struct strait_pol_cidr_key, ifindex, 4);
STRAIT_ASSERT_LAYOUT(struct strait_pol_cidr_key, version, 8);
STRAIT_ASSERT_LAYOUT(struct strait_pol_cidr_key, dir, 9);
STRAIT_ASSERT_LAYOUT(struct strait_pol_cidr_key, family, 10);
STRAIT_ASSERT_LAYOUT(struct strait_pol_cidr_key, pad, 11);
STRAIT_ASSERT_LAYOUT(struct strait_pol_cidr_key, addr, 12);

/* strait_pol_ipcache: address or prefix -> identity, for every endpoint and node
 * of the cluster. A miss is STRAIT_POL_IDENTITY_WORLD. */
struct strait_pol_ipcache_key {
	__u32 prefixlen; /* IPv4: 96 + length */
	struct strait_addr addr;
};
STRAIT_ASSERT_SIZE(struct strait_pol_ipcache_key, 20);
STRAIT_ASSERT_LAYOUT(struct strait_pol_ipcache_key, prefixlen, 0);
STRAIT_ASSERT_LAYOUT(struct strait_pol_ipcache_key, addr, 4);

struct strait_pol_ipcache_value {
	__u32 identity;
	__u32 pad;
};
STRAIT_ASSERT_SIZE(struct strait_pol_ipcache_value, 8);
STRAIT_ASSERT_LAYOUT(struct strait_pol_ipcache_value, identity, 0);
STRAIT_ASSERT_LAYOUT(struct strait_pol_ipcache_value, pad, 4);

/* strait_ct key: a flow as one endpoint's check saw it first. `dir` is that check,
 * so two endpoints of one host each keep their own entry for the same packets. A
 * reply is found by the reversed tuple and the other direction. ICMP echo: the
 * request keys (sport = id, dport = 0), the reply (0, id). */
struct strait_ct_key {
	struct strait_addr src;
	struct strait_addr dst;
	__be16 sport;
	__be16 dport;
	__u8 proto; /* as on the wire */
	__u8 dir;
	__u8 pad[2];
};
STRAIT_ASSERT_SIZE(struct strait_ct_key, 40);
STRAIT_ASSERT_LAYOUT(struct strait_ct_key, src, 0);
STRAIT_ASSERT_LAYOUT(struct strait_ct_key, dst, 16);
STRAIT_ASSERT_LAYOUT(struct strait_ct_key, sport, 32);
STRAIT_ASSERT_LAYOUT(struct strait_ct_key, dport, 34);
STRAIT_ASSERT_LAYOUT(struct strait_ct_key, proto, 36);
STRAIT_ASSERT_LAYOUT(struct strait_ct_key, dir, 37);
STRAIT_ASSERT_LAYOUT(struct strait_ct_key, pad, 38);

struct strait_ct_entry {
	__u64 expires; /* bpf_ktime_get_ns() after which the entry is dead */
	__u64 packets; /* both ways */
	__u64 bytes;
	__u32 generation; /* the endpoint's when the flow was last evaluated */
	__u32 rule; /* the rule that allowed it; STRAIT_POL_NONE: the default */
	__u8 tcp_flags_fwd; /* TCP flags seen from the side that opened it */
	__u8 tcp_flags_rev; /* and from the other side */
	__u8 audit; /* allowed only because of audit */
	__u8 pad[5];
};
STRAIT_ASSERT_SIZE(struct strait_ct_entry, 40);
STRAIT_ASSERT_LAYOUT(struct strait_ct_entry, expires, 0);
STRAIT_ASSERT_LAYOUT(struct strait_ct_entry, packets, 8);
STRAIT_ASSERT_LAYOUT(struct strait_ct_entry, bytes, 16);
STRAIT_ASSERT_LAYOUT(struct strait_ct_entry, generation, 24);
STRAIT_ASSERT_LAYOUT(struct strait_ct_entry, rule, 28);
STRAIT_ASSERT_LAYOUT(struct strait_ct_entry, tcp_flags_fwd, 32);
STRAIT_ASSERT_LAYOUT(struct strait_ct_entry, tcp_flags_rev, 33);
STRAIT_ASSERT_LAYOUT(struct strait_ct_entry, audit, 34);
STRAIT_ASSERT_LAYOUT(struct strait_ct_entry, pad, 35);

/* Conntrack timeouts, in seconds (docs/policy.md). */
#define STRAIT_CT_TCP_SYN 60
#define STRAIT_CT_TCP_ESTABLISHED 21600
#define STRAIT_CT_TCP_CLOSING 10
#define STRAIT_CT_OTHER 60
#define STRAIT_CT_ICMP 30

/* A verdict for `netctl monitor`, in strait_pol_events. Ports in host order. */
struct strait_pol_event {
	__u64 time_ns; /* bpf_ktime_get_ns() */
	__u32 ifindex; /* the endpoint whose check decided */
	__u8 dir;
	__u8 proto;
	__u8 allowed;
	__u8 audit;
	struct strait_addr src;
	struct strait_addr dst;
	__u16 sport; /* ICMP: 0 */
	__u16 dport; /* ICMP: type << 8 | code */
	__u32 src_identity;
	__u32 dst_identity;
	__u32 rule; /* STRAIT_POL_NONE: the default */
	__u32 log_rule;
	__u32 pad;
};
STRAIT_ASSERT_SIZE(struct strait_pol_event, 72);
STRAIT_ASSERT_LAYOUT(struct strait_pol_event, time_ns, 0);
STRAIT_ASSERT_LAYOUT(struct strait_pol_event, ifindex, 8);
STRAIT_ASSERT_LAYOUT(struct strait_pol_event, dir, 12);
STRAIT_ASSERT_LAYOUT(struct strait_pol_event, proto, 13);
STRAIT_ASSERT_LAYOUT(struct strait_pol_event, allowed, 14);
STRAIT_ASSERT_LAYOUT(struct strait_pol_event, audit, 15);
STRAIT_ASSERT_LAYOUT(struct strait_pol_event, src, 16);
STRAIT_ASSERT_LAYOUT(struct strait_pol_event, dst, 32);
STRAIT_ASSERT_LAYOUT(struct strait_pol_event, sport, 48);
STRAIT_ASSERT_LAYOUT(struct strait_pol_event, dport, 50);
STRAIT_ASSERT_LAYOUT(struct strait_pol_event, src_identity, 52);
STRAIT_ASSERT_LAYOUT(struct strait_pol_event, dst_identity, 56);
STRAIT_ASSERT_LAYOUT(struct strait_pol_event, rule, 60);
STRAIT_ASSERT_LAYOUT(struct strait_pol_event, log_rule, 64);
STRAIT_ASSERT_LAYOUT(struct strait_pol_event, pad, 68);

/* strait_pol_rule_stats key: new flows (and re-evaluations) per deciding rule. */
enum strait_pol_verdict {
	STRAIT_POL_VERDICT_ALLOWED = 0,
	STRAIT_POL_VERDICT_DENIED = 1,
	STRAIT_POL_VERDICT_AUDIT = 2, /* denied, passed in audit */
};

struct strait_pol_rule_stat_key {
	__u32 rule; /* STRAIT_POL_NONE: the default */
	__u32 verdict; /* enum strait_pol_verdict */
};
STRAIT_ASSERT_SIZE(struct strait_pol_rule_stat_key, 8);
STRAIT_ASSERT_LAYOUT(struct strait_pol_rule_stat_key, rule, 0);
STRAIT_ASSERT_LAYOUT(struct strait_pol_rule_stat_key, verdict, 4);

/*
 * Why the policy check let a packet pass or dropped it: the index of its counter in
 * strait_pol_stats. Append, never renumber.
 */
enum strait_pol_reason {
	STRAIT_POL_ALLOWED_NEW = 0, /* a new flow allowed, conntrack entry made */
	STRAIT_POL_ALLOWED_ESTABLISHED = 1, /* its flow's entry, current generation */
	STRAIT_POL_ALLOWED_REPLY = 2, /* the reply of a tracked flow */
	STRAIT_POL_ALLOWED_RELATED = 3, /* an ICMP error about a tracked flow */
	STRAIT_POL_ALLOWED_FROM_HOST = 4, /* into an endpoint from its own host */
	STRAIT_POL_ALLOWED_UNTRACKED = 5, /* allowed, no entry: TCP without SYN, ICMP error */
	STRAIT_POL_REEVALUATED_ALLOWED = 6, /* older generation, still allowed */
	STRAIT_POL_DENIED_RULE = 7, /* a deny rule decided */
	STRAIT_POL_DENIED_DEFAULT = 8, /* isolated, and no rule allows it */
	STRAIT_POL_AUDIT_DENIED = 9, /* denied by policy in audit: passed */
	STRAIT_POL_REEVALUATED_DENIED = 10, /* older generation, now denied: entry deleted */
	STRAIT_POL_EVENTS_LOST = 11, /* the event ring buffer was full */
	STRAIT_POL_PASS_NOT_IP = 12, /* neither IPv4 nor IPv6 (ARP) */
	STRAIT_POL_PASS_LINK_CONTROL = 13, /* IPv6 neighbour discovery and MLD */
	STRAIT_POL_REASON_MAX = 14,
};

/*
 * Services (services.h, services.c; docs/services.md "Datapath"): the socket-level
 * load balancer. The agent mirrors this section in
 * agent/src/services/datapath/abi.rs and checks it against the services object's
 * BTF like the others.
 */

/* strait_svc_frontend.flags */
#define STRAIT_SVC_F_AFFINITY 0x1 /* ClientIP session affinity for affinity_secs */

/* Largest Maglev table (M) the agent may give a frontend: the prime below 2^16. */
#define STRAIT_SVC_TABLE_MAX 65521

/* strait_svc_key.scope: a frontend is installed once per way it is reached. */
#define STRAIT_SVC_SCOPE_LOCAL 0 /* by a socket of this node (services.c) */
#define STRAIT_SVC_SCOPE_OUTSIDE 1 /* by a packet from outside the node (services_tc.c) */

/* strait_svc_frontends key: a service address and who reaches it there. */
struct strait_svc_key {
	struct strait_addr addr; /* the VIP, IPv4-mapped for IPv4 */
	__be16 port;
	__u8 proto; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 scope; /* STRAIT_SVC_SCOPE_*: who reaches the frontend this way */
};
STRAIT_ASSERT_SIZE(struct strait_svc_key, 20);
STRAIT_ASSERT_LAYOUT(struct strait_svc_key, addr, 0);
STRAIT_ASSERT_LAYOUT(struct strait_svc_key, port, 16);
STRAIT_ASSERT_LAYOUT(struct strait_svc_key, proto, 18);
STRAIT_ASSERT_LAYOUT(struct strait_svc_key, scope, 19);

/* strait_svc_frontends value. Written last by an install, so a connect sees a
 * frontend only once its backends and slots are there. */
struct strait_svc_frontend {
	__u32 id; /* keys its slots and its affinity entries; 1..65535 */
	__u32 table_size; /* M: how many slots; 0 with no backends */
	__u32 affinity_secs; /* with STRAIT_SVC_F_AFFINITY */
	__u16 backends; /* usable backends; 0: connects are refused */
	__u8 flags; /* STRAIT_SVC_F_* */
	__u8 pad;
};
STRAIT_ASSERT_SIZE(struct strait_svc_frontend, 16);
STRAIT_ASSERT_LAYOUT(struct strait_svc_frontend, id, 0);
STRAIT_ASSERT_LAYOUT(struct strait_svc_frontend, table_size, 4);
STRAIT_ASSERT_LAYOUT(struct strait_svc_frontend, affinity_secs, 8);
STRAIT_ASSERT_LAYOUT(struct strait_svc_frontend, backends, 12);
STRAIT_ASSERT_LAYOUT(struct strait_svc_frontend, flags, 14);
STRAIT_ASSERT_LAYOUT(struct strait_svc_frontend, pad, 15);

/* strait_svc_slots key -> backend id: slot `slot` (< table_size) of the Maglev
 * table of frontend `id`. */
struct strait_svc_slot_key {
	__u32 id;
	__u32 slot;
};
STRAIT_ASSERT_SIZE(struct strait_svc_slot_key, 8);
STRAIT_ASSERT_LAYOUT(struct strait_svc_slot_key, id, 0);
STRAIT_ASSERT_LAYOUT(struct strait_svc_slot_key, slot, 4);

/* A backend id is its frontend's id << 16 | an index of the frontend's own, so a
 * backend id names the one frontend it belongs to. */
#define STRAIT_SVC_BACKEND_FRONTEND(backend) ((backend) >> 16)

/* strait_svc_backend.flags */
#define STRAIT_SVC_BE_F_LOCAL 0x1 /* on this node: packets from outside are not SNATed */

/* strait_svc_backends value, by backend id. */
struct strait_svc_backend {
	struct strait_addr addr; /* IPv4-mapped for IPv4 */
	__be16 port;
	__u8 proto;
	__u8 flags; /* STRAIT_SVC_BE_F_* */
};
STRAIT_ASSERT_SIZE(struct strait_svc_backend, 20);
STRAIT_ASSERT_LAYOUT(struct strait_svc_backend, addr, 0);
STRAIT_ASSERT_LAYOUT(struct strait_svc_backend, port, 16);
STRAIT_ASSERT_LAYOUT(struct strait_svc_backend, proto, 18);
STRAIT_ASSERT_LAYOUT(struct strait_svc_backend, flags, 19);

/* strait_svc_revnat key: a socket and the backend it was sent to, as the socket
 * now sees its peer. */
struct strait_svc_revnat_key {
	__u64 cookie; /* bpf_get_socket_cookie() */
	struct strait_addr addr;
	__be16 port;
	__u8 pad[6];
};
STRAIT_ASSERT_SIZE(struct strait_svc_revnat_key, 32);
STRAIT_ASSERT_LAYOUT(struct strait_svc_revnat_key, cookie, 0);
STRAIT_ASSERT_LAYOUT(struct strait_svc_revnat_key, addr, 8);
STRAIT_ASSERT_LAYOUT(struct strait_svc_revnat_key, port, 24);
STRAIT_ASSERT_LAYOUT(struct strait_svc_revnat_key, pad, 26);

/* strait_svc_revnat value: the service address to show instead (getpeername,
 * recvmsg's source). */
struct strait_svc_revnat {
	struct strait_addr addr;
	__be16 port;
	__u8 pad[2];
	__u32 id; /* the frontend's */
};
STRAIT_ASSERT_SIZE(struct strait_svc_revnat, 24);
STRAIT_ASSERT_LAYOUT(struct strait_svc_revnat, addr, 0);
STRAIT_ASSERT_LAYOUT(struct strait_svc_revnat, port, 16);
STRAIT_ASSERT_LAYOUT(struct strait_svc_revnat, pad, 18);
STRAIT_ASSERT_LAYOUT(struct strait_svc_revnat, id, 20);

/* strait_svc_affinity key: a client (its network namespace) of one frontend. */
struct strait_svc_affinity_key {
	__u64 netns_cookie; /* bpf_get_netns_cookie() */
	__u32 id;
	__u32 pad;
};
STRAIT_ASSERT_SIZE(struct strait_svc_affinity_key, 16);
STRAIT_ASSERT_LAYOUT(struct strait_svc_affinity_key, netns_cookie, 0);
STRAIT_ASSERT_LAYOUT(struct strait_svc_affinity_key, id, 8);
STRAIT_ASSERT_LAYOUT(struct strait_svc_affinity_key, pad, 12);

struct strait_svc_affinity {
	__u64 last_ns; /* bpf_ktime_get_ns() of the client's last connect */
	__u32 backend;
	__u32 pad;
};
STRAIT_ASSERT_SIZE(struct strait_svc_affinity, 16);
STRAIT_ASSERT_LAYOUT(struct strait_svc_affinity, last_ns, 0);
STRAIT_ASSERT_LAYOUT(struct strait_svc_affinity, backend, 8);
STRAIT_ASSERT_LAYOUT(struct strait_svc_affinity, pad, 12);

/*
 * What a connect or send to a service address came to: the index of its counter in
 * strait_svc_stats. A connect to anything else is not counted (that is every
 * connect on the host). Append, never renumber.
 */
enum strait_svc_reason {
	STRAIT_SVC_TRANSLATED = 0, /* sent to a backend */
	STRAIT_SVC_REFUSED_NO_BACKEND = 1, /* the frontend has none: ECONNREFUSED */
	STRAIT_SVC_BACKEND_MISSING = 2, /* its slot names a deleted backend: ECONNREFUSED */
	STRAIT_SVC_NAT_NEW = 3, /* tc: a new flow from outside DNATed to a backend */
	STRAIT_SVC_NAT_NEW_SNAT = 4, /* tc: the same, SNATed to the node (remote backend) */
	STRAIT_SVC_NAT_ESTABLISHED = 5, /* tc: a packet of a tracked flow, translated */
	STRAIT_SVC_NAT_REPLY = 6, /* tc: a backend's reply, translated back */
	STRAIT_SVC_NAT_NO_BACKEND = 7, /* tc: no backend: left to the stack (RST, unreachable) */
	STRAIT_SVC_NAT_NO_PORT = 8, /* tc: no SNAT port free for the backend: dropped */
	STRAIT_SVC_NAT_NO_ROUTE =
		9, /* tc: the node has no route for a translated packet: dropped */
	STRAIT_SVC_EVENTS_LOST = 10, /* a translation event strait_svc_events had no room for */
	STRAIT_SVC_REASON_MAX = 11,
};

/* strait_svc_event.kind: which translation made the event. */
enum strait_svc_xlate {
	STRAIT_SVC_XLATE_CONNECT = 0, /* a socket's connect() */
	STRAIT_SVC_XLATE_SENDMSG = 1, /* an unconnected UDP datagram's sendmsg() */
	STRAIT_SVC_XLATE_NAT = 2, /* tc: a new flow from outside, DNATed */
	STRAIT_SVC_XLATE_NAT_SNAT = 3, /* tc: the same, SNATed to the node too */
};

/*
 * A translation for `netctl monitor`, in strait_svc_events; sent only while the
 * agent says someone listens (strait_svc_monitor). A socket's client is its
 * process and network namespace (its own address is usually not bound yet at
 * connect); a packet's is its source address and port.
 */
struct strait_svc_event {
	__u64 time_ns; /* bpf_ktime_get_ns() */
	__u64 netns_cookie; /* socket: bpf_get_netns_cookie(); tc: 0 */
	__u64 cgroup_id; /* socket: the calling process's cgroup v2 id; tc: 0 */
	struct strait_addr client; /* tc: the packet's source; socket: zero */
	struct strait_addr frontend;
	struct strait_addr backend;
	__be16 client_port; /* tc: the packet's source port; socket: 0 */
	__be16 frontend_port;
	__be16 backend_port;
	__u8 proto;
	__u8 kind; /* enum strait_svc_xlate */
	__u32 frontend_id;
	__u32 backend_id;
	__u32 pid; /* socket: the calling process (tgid); tc: 0 */
	__u32 pad;
};
STRAIT_ASSERT_SIZE(struct strait_svc_event, 96);
STRAIT_ASSERT_LAYOUT(struct strait_svc_event, time_ns, 0);
STRAIT_ASSERT_LAYOUT(struct strait_svc_event, netns_cookie, 8);
STRAIT_ASSERT_LAYOUT(struct strait_svc_event, cgroup_id, 16);
STRAIT_ASSERT_LAYOUT(struct strait_svc_event, client, 24);
STRAIT_ASSERT_LAYOUT(struct strait_svc_event, frontend, 40);
STRAIT_ASSERT_LAYOUT(struct strait_svc_event, backend, 56);
STRAIT_ASSERT_LAYOUT(struct strait_svc_event, client_port, 72);
STRAIT_ASSERT_LAYOUT(struct strait_svc_event, frontend_port, 74);
STRAIT_ASSERT_LAYOUT(struct strait_svc_event, backend_port, 76);
STRAIT_ASSERT_LAYOUT(struct strait_svc_event, proto, 78);
STRAIT_ASSERT_LAYOUT(struct strait_svc_event, kind, 79);
STRAIT_ASSERT_LAYOUT(struct strait_svc_event, frontend_id, 80);
STRAIT_ASSERT_LAYOUT(struct strait_svc_event, backend_id, 84);
STRAIT_ASSERT_LAYOUT(struct strait_svc_event, pid, 88);
STRAIT_ASSERT_LAYOUT(struct strait_svc_event, pad, 92);

/*
 * Packet-level translation (services_tc.c; docs/services.md "Packet-level
 * translation"): a flow from outside the node to a STRAIT_SVC_SCOPE_OUTSIDE
 * frontend is tracked in strait_svc_ct under two keys, each saying how to rewrite
 * the packets it matches:
 *   FORWARD (client, frontend)           -> (client or node:SNAT port, backend)
 *   REPLY   (backend, client or node:port) -> (frontend, client)
 */
enum strait_svc_ct_dir {
	STRAIT_SVC_CT_FORWARD = 0,
	STRAIT_SVC_CT_REPLY = 1,
};

/* strait_svc_ct key: a packet's tuple as it arrives. */
struct strait_svc_ct_key {
	struct strait_addr src;
	struct strait_addr dst;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir; /* enum strait_svc_ct_dir */
	__u8 pad[2];
};
STRAIT_ASSERT_SIZE(struct strait_svc_ct_key, 40);
STRAIT_ASSERT_LAYOUT(struct strait_svc_ct_key, src, 0);
STRAIT_ASSERT_LAYOUT(struct strait_svc_ct_key, dst, 16);
STRAIT_ASSERT_LAYOUT(struct strait_svc_ct_key, sport, 32);
STRAIT_ASSERT_LAYOUT(struct strait_svc_ct_key, dport, 34);
STRAIT_ASSERT_LAYOUT(struct strait_svc_ct_key, proto, 36);
STRAIT_ASSERT_LAYOUT(struct strait_svc_ct_key, dir, 37);
STRAIT_ASSERT_LAYOUT(struct strait_svc_ct_key, pad, 38);

/* strait_svc_ct.flags */
#define STRAIT_SVC_CT_F_SNAT 0x1 /* a flow to a remote backend, SNATed to this node */
#define STRAIT_SVC_CT_F_CLOSING 0x2 /* a FIN or RST was seen: a SYN on it is a new flow */

/* strait_svc_ct value: what the packet becomes. */
struct strait_svc_ct {
	struct strait_addr src;
	struct strait_addr dst;
	__be16 sport;
	__be16 dport;
	__u32 backend; /* the backend id the flow was sent to */
	__u64 expires; /* bpf_ktime_get_ns(): after it, a REPLY entry's SNAT port is free */
	__u8 flags; /* STRAIT_SVC_CT_F_* */
	__u8 pad[7];
};
STRAIT_ASSERT_SIZE(struct strait_svc_ct, 56);
STRAIT_ASSERT_LAYOUT(struct strait_svc_ct, src, 0);
STRAIT_ASSERT_LAYOUT(struct strait_svc_ct, dst, 16);
STRAIT_ASSERT_LAYOUT(struct strait_svc_ct, sport, 32);
STRAIT_ASSERT_LAYOUT(struct strait_svc_ct, dport, 34);
STRAIT_ASSERT_LAYOUT(struct strait_svc_ct, backend, 36);
STRAIT_ASSERT_LAYOUT(struct strait_svc_ct, expires, 40);
STRAIT_ASSERT_LAYOUT(struct strait_svc_ct, flags, 48);
STRAIT_ASSERT_LAYOUT(struct strait_svc_ct, pad, 49);

/* strait_svc_nat_config[0]: written by the agent when it attaches the tc programs. */
struct strait_svc_nat_config {
	struct strait_addr snat4; /* the node's underlay IPv4, mapped; zero: no SNAT */
	struct strait_addr snat6; /* its IPv6; zero: no SNAT */
};
STRAIT_ASSERT_SIZE(struct strait_svc_nat_config, 32);
STRAIT_ASSERT_LAYOUT(struct strait_svc_nat_config, snat4, 0);
STRAIT_ASSERT_LAYOUT(struct strait_svc_nat_config, snat6, 16);

/* The ports SNATed flows take on the node: above the kernel's default ephemeral
 * range (32768-60999), so they do not meet the node's own connections. */
#define STRAIT_SVC_SNAT_PORT_MIN 61000
#define STRAIT_SVC_SNAT_PORTS 4536

#endif /* STRAIT_ABI_H */
