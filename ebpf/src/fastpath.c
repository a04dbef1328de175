// SPDX-License-Identifier: GPL-2.0
/*
 * strait's forwarding fast path: tc ingress programs that move a container's packet
 * straight to the device it leaves by, instead of through the host's IP forwarding.
 *
 * Without it a packet from container c1 to c2 on another host crosses:
 *   c1 eth0 -> veth -> host backlog -> ip_rcv -> netfilter -> ip_forward -> strait.vxlan
 * and on the receiving host
 *   strait.vxlan -> ip_rcv -> netfilter -> ip_forward -> veth -> container backlog -> c2.
 * With it:
 *   from_endpoint (host end of c1's veth): tunnel map, MACs, bpf_redirect -> strait.vxlan
 *   from_fabric   (strait.vxlan ingress):  endpoint map, MACs, bpf_redirect_peer -> c2 eth0
 * bpf_redirect_peer hands the packet to the container end of the veth within the same
 * softirq, skipping the second backlog queue.
 *
 * Where a packet goes is read from two maps the agent keeps from the same records it
 * programs the kernel's routes from: the endpoints of this node (address -> veth and
 * MACs; the kernel has a /32 or /128 route to each) and the blocks of other nodes
 * behind their VTEPs (block -> VTEP MAC; the kernel has a route via the VTEP's tunnel
 * address on strait.vxlan, a neighbour entry and an FDB entry). A hash and an LPM
 * lookup cost a fraction of bpf_fib_lookup, which was two thirds of the programs'
 * time. A packet the fast path does not fully understand is handed to the stack
 * unchanged (TC_ACT_OK): non-IP, TTL about to expire (the stack sends the ICMP), too
 * big for the device it would leave by (the stack sends "fragmentation needed"), or a
 * destination in neither map (the internet, a service address the host NATs, the
 * host itself, a route someone added by hand).
 *
 * What it bypasses is the host's netfilter for container-to-container packets, as
 * Cilium's BPF host routing does. The agent therefore turns it off (config.enabled = 0)
 * where the host rewrites destinations (kube-proxy, portmap): replies need conntrack.
 *
 * Both programs live in one object because they share the maps. The map layouts are
 * mirrored by agent/src/fastpath/maps.rs. Addresses are keyed as 16 bytes, IPv4 as
 * IPv4-mapped IPv6 (::ffff:a.b.c.d), so one map serves both families.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10

/* config: one entry, written by the agent. */
struct fastpath_config {
	__u32 enabled;         /* 0: every program returns TC_ACT_OK at once */
	__u32 fabric_ifindex;  /* strait.vxlan; 0 when the node has no such device */
	__u8 fabric_mac[6];    /* strait.vxlan's own MAC: the source of what it sends */
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fastpath_config);
} strait_fp_config SEC(".maps");

struct addr {
	__u8 bytes[16];
};

/* This node's endpoints the fast path may deliver to, by address: the host end of
 * their veth (the bpf_redirect_peer target) and the MACs a routed packet carries on
 * that link. Endpoints the fast path must leave alone (host ports, shaped) are absent. */
struct endpoint {
	__u32 ifindex;
	__u8 mac[6];           /* the container's end */
	__u8 host_mac[6];      /* the host's end: the container's gateway */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct addr);
	__type(value, struct endpoint);
} strait_fp_endpoints SEC(".maps");

/* Other nodes' blocks behind their VTEPs (vxlan only), longest prefix first: the
 * destination MAC that makes strait.vxlan's FDB send the packet to that node. */
struct tunnel_key {
	__u32 prefixlen;       /* IPv4 blocks: 96 + prefix length */
	struct addr addr;
};

struct tunnel {
	__u8 vtep_mac[6];
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tunnel_key);
	__type(value, struct tunnel);
} strait_fp_tunnels SEC(".maps");

/* Counters per CPU, summed by the agent for `netctl status` and metrics. */
enum fastpath_stat {
	STAT_TO_FABRIC = 0,    /* endpoint -> fabric device, redirected */
	STAT_TO_ENDPOINT = 1,  /* fabric or endpoint -> local endpoint, redirected */
	STAT_TO_STACK = 2,     /* IP packet handed to the kernel's forwarding */
	STAT_MAX = 3,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} strait_fp_stats SEC(".maps");

static __always_inline void count(__u32 stat)
{
	__u64 *c = bpf_map_lookup_elem(&strait_fp_stats, &stat);
	if (c)
		*c += 1;
}

/* RFC 1624 incremental update of the IPv4 header checksum for a TTL decrement, as
 * the kernel's ip_decrease_ttl does. */
static __always_inline void ipv4_decrease_ttl(struct iphdr *ip)
{
	__u32 check = ip->check;
	check += bpf_htons(0x0100);
	ip->check = (__u16)(check + (check >= 0xFFFF));
	ip->ttl--;
}

enum where { TO_STACK, TO_FABRIC, TO_ENDPOINT };

/* Finds where the packet goes (a local endpoint, or with `may_tunnel` another node's
 * block) and rewrites TTL and MACs for that hop. The caller redirects. */
static __always_inline enum where forward(struct __sk_buff *skb, int may_tunnel,
					  __u32 *out_ifindex)
{
	__u32 zero = 0;
	struct fastpath_config *cfg = bpf_map_lookup_elem(&strait_fp_config, &zero);
	if (!cfg || !cfg->enabled)
		return TO_STACK;

	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return TO_STACK;

	struct tunnel_key key = {};
	int v6 = eth->h_proto == bpf_htons(ETH_P_IPV6);
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip4 = (void *)(eth + 1);
		if ((void *)(ip4 + 1) > data_end || ip4->ttl <= 1)
			return TO_STACK;
		key.addr.bytes[10] = 0xff;
		key.addr.bytes[11] = 0xff;
		__builtin_memcpy(&key.addr.bytes[12], &ip4->daddr, 4);
	} else if (v6) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end || ip6->hop_limit <= 1)
			return TO_STACK;
		__builtin_memcpy(&key.addr, &ip6->daddr, sizeof(key.addr));
	} else {
		return TO_STACK;
	}

	enum where to;
	__u32 ifindex;
	const __u8 *dmac, *smac;
	struct endpoint *ep = bpf_map_lookup_elem(&strait_fp_endpoints, &key.addr);
	if (ep) {
		/* Never back out of the device it came in on: the stack decides. */
		if (ep->ifindex == skb->ingress_ifindex)
			goto stack;
		to = TO_ENDPOINT;
		ifindex = ep->ifindex;
		dmac = ep->mac;
		smac = ep->host_mac;
	} else if (may_tunnel && cfg->fabric_ifindex) {
		key.prefixlen = 128;
		struct tunnel *t = bpf_map_lookup_elem(&strait_fp_tunnels, &key);
		if (!t)
			goto stack;
		to = TO_FABRIC;
		ifindex = cfg->fabric_ifindex;
		dmac = t->vtep_mac;
		smac = cfg->fabric_mac;
	} else {
		goto stack;
	}
	/* Against the device the packet leaves by; GSO packets by their segments. */
	__u32 mtu_len = 0;
	if (bpf_check_mtu(skb, ifindex, &mtu_len, 0, 0) != BPF_MTU_CHK_RET_SUCCESS)
		goto stack;

	/* The helper may have moved the packet: bounds are checked again. */
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		goto stack;
	/* Re-derived from eth: the verifier cannot tell a packet pointer from NULL, so a
	 * NULL header pointer cannot stand for "the other family". */
	if (v6) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			goto stack;
		ip6->hop_limit--;
	} else {
		struct iphdr *ip4 = (void *)(eth + 1);
		if ((void *)(ip4 + 1) > data_end)
			goto stack;
		ipv4_decrease_ttl(ip4);
	}
	__builtin_memcpy(eth->h_dest, dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, smac, ETH_ALEN);
	*out_ifindex = ifindex;
	return to;

stack:
	count(STAT_TO_STACK);
	return TO_STACK;
}

static __always_inline int redirect(enum where to, __u32 ifindex)
{
	switch (to) {
	case TO_FABRIC:
		count(STAT_TO_FABRIC);
		return bpf_redirect(ifindex, 0);
	case TO_ENDPOINT:
		count(STAT_TO_ENDPOINT);
		/* Into the container's namespace, at the ingress of its end of the veth. */
		return bpf_redirect_peer(ifindex, 0);
	default:
		return TC_ACT_OK;
	}
}

/* Ingress of the host end of a container's veth: what the container sends. */
SEC("classifier")
int strait_from_ep(struct __sk_buff *skb)
{
	__u32 ifindex = 0;
	enum where to = forward(skb, 1, &ifindex);
	return redirect(to, ifindex);
}

/* Ingress of strait.vxlan: what other hosts' containers send to this host's. Only
 * ever redirects to a local endpoint: what came in from the fabric does not go back
 * out to it (the stack decides about such packets). */
SEC("classifier")
int strait_from_fab(struct __sk_buff *skb)
{
	__u32 ifindex = 0;
	enum where to = forward(skb, 0, &ifindex);
	return redirect(to, ifindex);
}

char _license[] SEC("license") = "GPL";
