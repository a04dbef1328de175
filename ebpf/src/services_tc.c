// SPDX-License-Identifier: GPL-2.0
/*
 * strait's packet-level service translation (docs/services.md "Packet-level
 * translation"): tcx programs on the node's underlay interface for the packets no
 * socket of the node makes, so that the socket balancer (services.c) never sees
 * them: a client outside the node connecting to a node port or an external IP.
 *
 *   strait_svc_from_net  tcx ingress of the underlay interface:
 *     - a new TCP/UDP flow to a STRAIT_SVC_SCOPE_OUTSIDE frontend: a backend by
 *       the flow's hash on the frontend's Maglev table (every packet of the flow,
 *       on every node, picks the same slot), DNAT to it; a backend on another
 *       node also SNAT to this node's address and a port of its own, so the reply
 *       comes back here. Both directions are recorded in strait_svc_ct.
 *     - a packet of a tracked flow: translated as its first was, even after the
 *       table changed, while its backend exists (else it is a new flow again).
 *     - a remote backend's reply to this node's SNAT port: back to the client,
 *       from the frontend.
 *   strait_svc_to_net    tcx egress of the underlay interface: a local backend's
 *       reply leaving for the client, its source back to the frontend. By then the
 *       node's stack has routed it and network policy (the veth's programs) has
 *       seen it as the backend sent it.
 *
 * A packet whose source is rewritten to this node's own address cannot be handed
 * to the stack (it drops a "martian" source arriving from outside), so those are
 * routed here: bpf_fib_lookup, then a redirect to the device it names. A DNAT
 * alone is handed on (TCX_NEXT): the stack routes it to the local backend.
 *
 * A frontend without a usable backend is left alone: the stack finds nothing
 * listening on a node port and answers with a RST or a port unreachable.
 * Not translated: IP fragments, IPv4 with options, IPv6 with extension headers.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "strait/abi.h"
#include "strait/services.h"

#define STRAIT_AF_INET 2
#define STRAIT_AF_INET6 10
#define STRAIT_TCPF_FIN 0x01
#define STRAIT_TCPF_SYN 0x02
#define STRAIT_TCPF_RST 0x04
#define STRAIT_IP_MF_OFFSET 0x3fff /* host order: more fragments | offset */
#define STRAIT_SVC_SNAT_TRIES 8

/* What the programs read of a packet. */
struct strait_svc_pkt {
	struct strait_svc_ct_key key; /* as it arrived; dir to be set */
	__u32 l4; /* offset of the TCP or UDP header */
	__u32 tot_len; /* IPv4 total length, IPv6 payload length + 40 */
	__u8 v6;
	__u8 tcp_flags;
	__u8 ttl;
	__u8 pad;
};

/* Parses an Ethernet frame with an IPv4 or IPv6 header and a TCP or UDP header
 * right behind it; 0 for anything else. */
static __always_inline int strait_svc_parse(struct __sk_buff *skb, struct strait_svc_pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u8 *l4;

	if ((void *)(eth + 1) > data_end)
		return 0;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip4 = (void *)(eth + 1);

		if ((void *)(ip4 + 1) > data_end)
			return 0;
		if (ip4->ihl != 5 || (bpf_ntohs(ip4->frag_off) & STRAIT_IP_MF_OFFSET))
			return 0;
		p->key.proto = ip4->protocol;
		p->key.src.bytes[10] = 0xff;
		p->key.src.bytes[11] = 0xff;
		__builtin_memcpy(&p->key.src.bytes[12], &ip4->saddr, 4);
		p->key.dst.bytes[10] = 0xff;
		p->key.dst.bytes[11] = 0xff;
		__builtin_memcpy(&p->key.dst.bytes[12], &ip4->daddr, 4);
		p->tot_len = bpf_ntohs(ip4->tot_len);
		p->ttl = ip4->ttl;
		p->l4 = sizeof(*eth) + sizeof(*ip4);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return 0;
		p->key.proto = ip6->nexthdr;
		__builtin_memcpy(&p->key.src, &ip6->saddr, 16);
		__builtin_memcpy(&p->key.dst, &ip6->daddr, 16);
		p->tot_len = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
		p->ttl = ip6->hop_limit;
		p->l4 = sizeof(*eth) + sizeof(*ip6);
		p->v6 = 1;
	} else {
		return 0;
	}
	if (p->key.proto != IPPROTO_TCP && p->key.proto != IPPROTO_UDP)
		return 0;
	l4 = data + p->l4;
	/* Both carry the ports first; TCP's flags are at 13 of its 20 bytes. */
	if (p->key.proto == IPPROTO_TCP) {
		if ((void *)(l4 + 20) > data_end)
			return 0;
		p->tcp_flags = l4[13];
	} else if ((void *)(l4 + 8) > data_end) {
		return 0;
	}
	__builtin_memcpy(&p->key.sport, l4, 2);
	__builtin_memcpy(&p->key.dport, l4 + 2, 2);
	return 1;
}

static __always_inline __u32 strait_svc_mix(__u32 h, __u32 w)
{
	h ^= w;
	h *= 0x9e3779b1;
	return h ^ (h >> 16);
}

/* A hash of the packet's tuple as the client sent it: the same for every packet of
 * the flow and on every node (no per-boot seed), so a flow keeps its slot. */
static __always_inline __u32 strait_svc_flow_hash(const struct strait_svc_ct_key *k)
{
	__u32 w[8], h = 0x5f3759df;
	int i;

	__builtin_memcpy(w, &k->src, 16);
	__builtin_memcpy(&w[4], &k->dst, 16);
#pragma unroll
	for (i = 0; i < 8; i++)
		h = strait_svc_mix(h, w[i]);
	h = strait_svc_mix(h, ((__u32)k->sport << 16) | k->dport);
	h = strait_svc_mix(h, k->proto);
	/* murmur3's finaliser: every input bit moves every output bit. */
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	return h ^ (h >> 16);
}

/* Affinity's client for a packet: its source address, hashed, with the top bit
 * set so it never equals a socket's netns cookie. */
static __always_inline __u64 strait_svc_client(const struct strait_addr *a)
{
	__u32 w[4], h = 0;
	int i;

	__builtin_memcpy(w, a, 16);
#pragma unroll
	for (i = 0; i < 4; i++)
		h = strait_svc_mix(h, w[i]);
	return (1ULL << 63) | h;
}

/* How long a flow's entry keeps its SNAT port from being taken over. */
static __always_inline __u64 strait_svc_lifetime(const struct strait_svc_pkt *p)
{
	__u64 secs = STRAIT_CT_OTHER;

	if (p->key.proto == IPPROTO_TCP) {
		if (p->tcp_flags & (STRAIT_TCPF_FIN | STRAIT_TCPF_RST))
			secs = STRAIT_CT_TCP_CLOSING;
		else if (p->tcp_flags & STRAIT_TCPF_SYN)
			secs = STRAIT_CT_TCP_SYN;
		else
			secs = STRAIT_CT_TCP_ESTABLISHED;
	}
	return bpf_ktime_get_ns() + secs * STRAIT_SVC_NSEC_PER_SEC;
}

/* The L4 checksum's offset. */
static __always_inline __u32 strait_svc_l4_check(const struct strait_svc_pkt *p)
{
	return p->l4 + (p->key.proto == IPPROTO_TCP ? 16 : 6);
}

/* Replaces one address (the source: 0, the destination: 1) and fixes the checksums
 * it is in. 0 on success. */
static __always_inline int strait_svc_set_addr(struct __sk_buff *skb,
					       const struct strait_svc_pkt *p, int dst,
					       const struct strait_addr *from,
					       const struct strait_addr *to)
{
	__u32 l4_flags =
		BPF_F_PSEUDO_HDR | (p->key.proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0);
	__u32 check = strait_svc_l4_check(p);

	if (!p->v6) {
		__u32 off = ETH_HLEN + (dst ? 16 : 12);
		__be32 old4, new4;

		__builtin_memcpy(&old4, &from->bytes[12], 4);
		__builtin_memcpy(&new4, &to->bytes[12], 4);
		if (old4 == new4)
			return 0;
		if (bpf_l4_csum_replace(skb, check, old4, new4, l4_flags | 4))
			return -1;
		if (bpf_l3_csum_replace(skb, ETH_HLEN + 10, old4, new4, 4))
			return -1;
		return bpf_skb_store_bytes(skb, off, &new4, 4, 0);
	}
	__u32 off = ETH_HLEN + (dst ? 24 : 8);
	__u32 old6[4], new6[4];
	__s64 diff;

	__builtin_memcpy(old6, from, 16);
	__builtin_memcpy(new6, to, 16);
	diff = bpf_csum_diff(old6, 16, new6, 16, 0);
	if (diff < 0)
		return -1;
	if (bpf_l4_csum_replace(skb, check, 0, diff, l4_flags))
		return -1;
	return bpf_skb_store_bytes(skb, off, new6, 16, 0);
}

static __always_inline int strait_svc_set_port(struct __sk_buff *skb,
					       const struct strait_svc_pkt *p, int dst, __be16 from,
					       __be16 to)
{
	__u32 flags = p->key.proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (from == to)
		return 0;
	if (bpf_l4_csum_replace(skb, strait_svc_l4_check(p), from, to, flags | 2))
		return -1;
	return bpf_skb_store_bytes(skb, p->l4 + (dst ? 2 : 0), &to, 2, 0);
}

/* Rewrites the packet's tuple to `to`'s. 0 on success. */
static __always_inline int strait_svc_rewrite(struct __sk_buff *skb, const struct strait_svc_pkt *p,
					      const struct strait_svc_ct *to)
{
	if (strait_svc_set_addr(skb, p, 0, &p->key.src, &to->src) ||
	    strait_svc_set_addr(skb, p, 1, &p->key.dst, &to->dst) ||
	    strait_svc_set_port(skb, p, 0, p->key.sport, to->sport) ||
	    strait_svc_set_port(skb, p, 1, p->key.dport, to->dport))
		return -1;
	return 0;
}

/*
 * Sends a translated packet whose source is this node's own address (or was
 * rewritten from it) on its way: the route to its new destination, one hop's TTL,
 * and a redirect to the device the route names.
 */
static __always_inline int strait_svc_route(struct __sk_buff *skb, const struct strait_svc_pkt *p,
					    const struct strait_svc_ct *to)
{
	struct bpf_fib_lookup fib = {};
	struct bpf_redir_neigh nh = {};
	void *data, *data_end;
	struct ethhdr *eth;
	long rc;

	if (p->ttl <= 1) {
		strait_svc_count(STRAIT_SVC_NAT_NO_ROUTE);
		return TC_ACT_SHOT;
	}
	fib.l4_protocol = p->key.proto;
	fib.sport = to->sport;
	fib.dport = to->dport;
	fib.tot_len = p->tot_len;
	fib.ifindex = skb->ingress_ifindex ? skb->ingress_ifindex : skb->ifindex;
	if (p->v6) {
		fib.family = STRAIT_AF_INET6;
		__builtin_memcpy(fib.ipv6_src, &to->src, 16);
		__builtin_memcpy(fib.ipv6_dst, &to->dst, 16);
	} else {
		fib.family = STRAIT_AF_INET;
		__builtin_memcpy(&fib.ipv4_src, &to->src.bytes[12], 4);
		__builtin_memcpy(&fib.ipv4_dst, &to->dst.bytes[12], 4);
	}
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) {
		strait_svc_count(STRAIT_SVC_NAT_NO_ROUTE);
		return TC_ACT_SHOT;
	}
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if (p->v6) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return TC_ACT_SHOT;
		ip6->hop_limit--;
	} else {
		struct iphdr *ip4 = (void *)(eth + 1);
		__u32 check;

		if ((void *)(ip4 + 1) > data_end)
			return TC_ACT_SHOT;
		/* RFC 1624, as ip_decrease_ttl. */
		check = ip4->check;
		check += bpf_htons(0x0100);
		ip4->check = (__u16)(check + (check >= 0xFFFF));
		ip4->ttl--;
	}
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
		return bpf_redirect(fib.ifindex, 0);
	}
	/* No neighbour entry yet: the kernel resolves the next hop. */
	nh.nh_family = fib.family;
	if (p->v6)
		__builtin_memcpy(nh.ipv6_nh, fib.ipv6_dst, 16);
	else
		nh.ipv4_nh = fib.ipv4_dst;
	return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
}

/* The node's SNAT address of the packet's family; NULL when it has none. */
static __always_inline const struct strait_addr *
strait_svc_snat_addr(const struct strait_svc_pkt *p)
{
	__u32 zero = 0;
	struct strait_svc_nat_config *cfg = bpf_map_lookup_elem(&strait_svc_nat_config, &zero);
	const struct strait_addr *a;

	if (!cfg)
		return NULL;
	a = p->v6 ? &cfg->snat6 : &cfg->snat4;
	if (!a->bytes[15] && !a->bytes[14] && !a->bytes[13] && !a->bytes[12])
		return NULL;
	return a;
}

/*
 * Records the reply direction of a new flow: the backend answering `fwd`'s source.
 * With SNAT, finds a port of the node's that no live flow to the same backend
 * holds (trying a few from the flow's hash). 0 on success.
 */
static __always_inline int strait_svc_track_reply(const struct strait_svc_pkt *p,
						  struct strait_svc_ct *fwd, __u32 hash,
						  __u64 expires)
{
	struct strait_svc_ct_key rkey = {};
	struct strait_svc_ct rev = {};
	__u64 now = bpf_ktime_get_ns();
	int i;

	rkey.src = fwd->dst;
	rkey.sport = fwd->dport;
	rkey.dst = fwd->src;
	rkey.proto = p->key.proto;
	rkey.dir = STRAIT_SVC_CT_REPLY;
	rev.src = p->key.dst;
	rev.sport = p->key.dport;
	rev.dst = p->key.src;
	rev.dport = p->key.sport;
	rev.backend = fwd->backend;
	rev.expires = expires;
	rev.flags = fwd->flags;
	if (!(fwd->flags & STRAIT_SVC_CT_F_SNAT)) {
		rkey.dport = fwd->sport;
		return bpf_map_update_elem(&strait_svc_ct, &rkey, &rev, BPF_ANY) ? -1 : 0;
	}
	for (i = 0; i < STRAIT_SVC_SNAT_TRIES; i++) {
		__u16 port = STRAIT_SVC_SNAT_PORT_MIN + (hash + i * 7919) % STRAIT_SVC_SNAT_PORTS;
		struct strait_svc_ct *held;

		rkey.dport = bpf_htons(port);
		held = bpf_map_lookup_elem(&strait_svc_ct, &rkey);
		if (held && held->expires > now)
			continue;
		if (bpf_map_update_elem(&strait_svc_ct, &rkey, &rev, BPF_ANY))
			return -1;
		fwd->sport = rkey.dport;
		return 0;
	}
	return -1;
}

/*
 * The key of an entry's twin (FORWARD <-> REPLY): the tuple its packets are turned
 * into, seen from the other side.
 */
static __always_inline void strait_svc_twin(const struct strait_svc_pkt *p,
					    const struct strait_svc_ct *ct,
					    struct strait_svc_ct_key *twin)
{
	twin->src = ct->dst;
	twin->sport = ct->dport;
	twin->dst = ct->src;
	twin->dport = ct->sport;
	twin->proto = p->key.proto;
	twin->dir =
		p->key.dir == STRAIT_SVC_CT_FORWARD ? STRAIT_SVC_CT_REPLY : STRAIT_SVC_CT_FORWARD;
}

/*
 * Whether the tracked flow `ct` (found under p->key) is still the packet's flow. Not
 * once past its lifetime, and not for a SYN on a flow that was closing: the tuple is
 * then a new connection's (a client reusing its port to reach the backend directly
 * must not get the old flow's translation, whose replies its socket would drop).
 * An entry that is not is deleted with its twin. A FIN or RST marks both closing.
 */
static __always_inline int strait_svc_ct_current(const struct strait_svc_pkt *p,
						 struct strait_svc_ct *ct)
{
	struct strait_svc_ct_key twin = {};
	struct strait_svc_ct *other;

	strait_svc_twin(p, ct, &twin);
	if (ct->expires <= bpf_ktime_get_ns() ||
	    ((p->tcp_flags & STRAIT_TCPF_SYN) && (ct->flags & STRAIT_SVC_CT_F_CLOSING))) {
		bpf_map_delete_elem(&strait_svc_ct, &twin);
		bpf_map_delete_elem(&strait_svc_ct, &p->key);
		return 0;
	}
	if (p->tcp_flags & (STRAIT_TCPF_FIN | STRAIT_TCPF_RST)) {
		ct->flags |= STRAIT_SVC_CT_F_CLOSING;
		other = bpf_map_lookup_elem(&strait_svc_ct, &twin);
		if (other)
			other->flags |= STRAIT_SVC_CT_F_CLOSING;
	}
	ct->expires = strait_svc_lifetime(p);
	return 1;
}

/* Sends a new flow's translation event. Reserved in the ring buffer rather than
 * built on the stack, which the flow's own state already fills. */
static __always_inline void strait_svc_nat_event(const struct strait_svc_pkt *p,
						 const struct strait_svc_frontend *fe,
						 const struct strait_svc_ct *fwd,
						 enum strait_svc_xlate kind)
{
	struct strait_svc_event *e;

	e = bpf_ringbuf_reserve(&strait_svc_events, sizeof(*e), 0);
	if (!e) {
		strait_svc_count(STRAIT_SVC_EVENTS_LOST);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->time_ns = bpf_ktime_get_ns();
	e->client = p->key.src;
	e->client_port = p->key.sport;
	e->frontend = p->key.dst;
	e->frontend_port = p->key.dport;
	e->backend = fwd->dst;
	e->backend_port = fwd->dport;
	e->proto = p->key.proto;
	e->kind = kind;
	e->frontend_id = fe->id;
	e->backend_id = fwd->backend;
	bpf_ringbuf_submit(e, 0);
}

/*
 * Whether the backend `ct` was sent to is still there: its id names the same
 * address and port. An id alone is not enough: a frontend removed and another
 * made (a host port's container deleted and another added) takes the freed id,
 * and its backends the ids of the old one's, so a flow tracked before would be
 * sent on to an address that is gone.
 */
static __always_inline int strait_svc_same_backend(const struct strait_svc_ct *ct)
{
	struct strait_svc_backend *be = bpf_map_lookup_elem(&strait_svc_backends, &ct->backend);

	if (!be || be->port != ct->dport)
		return 0;
#pragma unroll
	for (int i = 0; i < 16; i++)
		if (be->addr.bytes[i] != ct->dst.bytes[i])
			return 0;
	return 1;
}

/* A new flow to a frontend reached from outside, or TCX_NEXT when it is none. */
static __always_inline int strait_svc_new_flow(struct __sk_buff *skb, struct strait_svc_pkt *p)
{
	struct strait_svc_key fkey = {};
	struct strait_svc_ct fwd = {};
	enum strait_svc_reason reason;
	struct strait_svc_frontend *fe;
	struct strait_svc_backend *be;
	const struct strait_addr *snat;
	__u32 hash, backend_id = 0;
	__u64 expires;

	fkey.addr = p->key.dst;
	fkey.port = p->key.dport;
	fkey.proto = p->key.proto;
	fkey.scope = STRAIT_SVC_SCOPE_OUTSIDE;
	fe = strait_svc_lookup(&fkey);
	if (!fe)
		return TC_ACT_UNSPEC;
	hash = strait_svc_flow_hash(&p->key);
	be = strait_svc_select(fe, strait_svc_client(&p->key.src), hash, &backend_id, &reason);
	if (!be) {
		/* Nobody serves it: the stack answers (nothing listens there). */
		strait_svc_count(STRAIT_SVC_NAT_NO_BACKEND);
		return TC_ACT_UNSPEC;
	}
	fwd.dst = be->addr;
	fwd.dport = be->port;
	fwd.backend = backend_id;
	fwd.src = p->key.src;
	fwd.sport = p->key.sport;
	expires = strait_svc_lifetime(p);
	fwd.expires = expires;
	if (!(be->flags & STRAIT_SVC_BE_F_LOCAL)) {
		snat = strait_svc_snat_addr(p);
		if (!snat) {
			strait_svc_count(STRAIT_SVC_NAT_NO_ROUTE);
			return TC_ACT_SHOT;
		}
		fwd.src = *snat;
		fwd.flags = STRAIT_SVC_CT_F_SNAT;
	}
	if (strait_svc_track_reply(p, &fwd, hash, expires)) {
		strait_svc_count(STRAIT_SVC_NAT_NO_PORT);
		return TC_ACT_SHOT;
	}
	p->key.dir = STRAIT_SVC_CT_FORWARD;
	bpf_map_update_elem(&strait_svc_ct, &p->key, &fwd, BPF_ANY);
	strait_svc_backend_count(backend_id);
	if (strait_svc_monitored())
		strait_svc_nat_event(p, fe, &fwd,
				     fwd.flags & STRAIT_SVC_CT_F_SNAT ? STRAIT_SVC_XLATE_NAT_SNAT :
									STRAIT_SVC_XLATE_NAT);
	if (strait_svc_rewrite(skb, p, &fwd))
		return TC_ACT_SHOT;
	if (fwd.flags & STRAIT_SVC_CT_F_SNAT) {
		strait_svc_count(STRAIT_SVC_NAT_NEW_SNAT);
		return strait_svc_route(skb, p, &fwd);
	}
	strait_svc_count(STRAIT_SVC_NAT_NEW);
	return TC_ACT_UNSPEC;
}

SEC("classifier")
int strait_svc_from_net(struct __sk_buff *skb)
{
	struct strait_svc_pkt p = {};
	struct strait_svc_ct *ct, to;

	if (!strait_svc_parse(skb, &p))
		return TC_ACT_UNSPEC;

	/* A remote backend's reply to a SNAT port of this node. */
	p.key.dir = STRAIT_SVC_CT_REPLY;
	ct = bpf_map_lookup_elem(&strait_svc_ct, &p.key);
	if (ct && (ct->flags & STRAIT_SVC_CT_F_SNAT) && strait_svc_ct_current(&p, ct)) {
		to = *ct;
		if (strait_svc_rewrite(skb, &p, &to))
			return TC_ACT_SHOT;
		strait_svc_count(STRAIT_SVC_NAT_REPLY);
		return strait_svc_route(skb, &p, &to);
	}

	/* A flow already sent somewhere, while that backend exists. */
	p.key.dir = STRAIT_SVC_CT_FORWARD;
	ct = bpf_map_lookup_elem(&strait_svc_ct, &p.key);
	if (ct) {
		if (!strait_svc_same_backend(ct)) {
			bpf_map_delete_elem(&strait_svc_ct, &p.key);
			return strait_svc_new_flow(skb, &p);
		}
		if (!strait_svc_ct_current(&p, ct))
			return strait_svc_new_flow(skb, &p);
		to = *ct;
		if (strait_svc_rewrite(skb, &p, &to))
			return TC_ACT_SHOT;
		strait_svc_count(STRAIT_SVC_NAT_ESTABLISHED);
		if (to.flags & STRAIT_SVC_CT_F_SNAT)
			return strait_svc_route(skb, &p, &to);
		return TC_ACT_UNSPEC;
	}
	return strait_svc_new_flow(skb, &p);
}

SEC("classifier")
int strait_svc_to_net(struct __sk_buff *skb)
{
	struct strait_svc_pkt p = {};
	struct strait_svc_ct *ct, to;

	if (!strait_svc_parse(skb, &p))
		return TC_ACT_UNSPEC;
	p.key.dir = STRAIT_SVC_CT_REPLY;
	ct = bpf_map_lookup_elem(&strait_svc_ct, &p.key);
	/* A SNATed flow's entries only ever match what comes in. */
	if (!ct || (ct->flags & STRAIT_SVC_CT_F_SNAT) || !strait_svc_ct_current(&p, ct))
		return TC_ACT_UNSPEC;
	to = *ct;
	if (strait_svc_rewrite(skb, &p, &to))
		return TC_ACT_SHOT;
	strait_svc_count(STRAIT_SVC_NAT_REPLY);
	return TC_ACT_UNSPEC;
}

char _license[] SEC("license") = "GPL";
