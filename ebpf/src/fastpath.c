// SPDX-License-Identifier: GPL-2.0
/*
 * strait's forwarding fast path: tc ingress programs that move a container's packet
 * straight to the device the kernel's FIB would send it out of, instead of through
 * the host's IP forwarding.
 *
 * Without it a packet from container c1 to c2 on another host crosses:
 *   c1 eth0 -> veth -> host backlog -> ip_rcv -> netfilter -> ip_forward -> strait.vxlan
 * and on the receiving host
 *   strait.vxlan -> ip_rcv -> netfilter -> ip_forward -> veth -> container backlog -> c2.
 * With it:
 *   from_endpoint (host end of c1's veth): FIB lookup, MACs, bpf_redirect -> strait.vxlan
 *   from_fabric   (strait.vxlan ingress):  FIB lookup, MACs, bpf_redirect_peer -> c2 eth0
 * bpf_redirect_peer hands the packet to the container end of the veth within the same
 * softirq, skipping the second backlog queue.
 *
 * Routing stays the kernel's: the programs only ask the FIB (bpf_fib_lookup) and act
 * on the answer, so routes, neighbours and FDB entries the agent programs keep
 * deciding where a packet goes. A packet the fast path does not fully understand is
 * handed to the stack unchanged (TC_ACT_OK): non-IP, TTL about to expire (the stack
 * sends the ICMP), no route, no neighbour yet (the stack resolves it), too big for the
 * next hop (the stack sends "fragmentation needed"), or a destination that is neither
 * strait's fabric device nor a local endpoint (the internet, a service address that
 * the host NATs, the host itself).
 *
 * What it bypasses is the host's netfilter for container-to-container packets, as
 * Cilium's BPF host routing does. The agent therefore turns it off (config.enabled = 0)
 * where the host rewrites destinations (kube-proxy, portmap): replies need conntrack.
 *
 * Both programs live in one object because they share the maps. The map layouts are
 * mirrored by agent/src/fastpath/maps.rs.
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
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fastpath_config);
} strait_fp_config SEC(".maps");

/* The host ends of this node's container veths: the only devices from_fabric and
 * from_endpoint redirect to with bpf_redirect_peer. Key: ifindex; value: unused. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
} strait_fp_endpoints SEC(".maps");

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

/* Looks the packet up in the FIB and, when it leaves through the fabric device or to
 * a local endpoint, rewrites TTL and MACs for the next hop. The caller redirects. */
static __always_inline enum where forward(struct __sk_buff *skb, __u32 *out_ifindex)
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

	struct bpf_fib_lookup fib = {};
	/* tot_len 0: the helper then checks the MTU against the skb itself, which is
	 * right for GSO packets whose IP length exceeds the MTU. */
	fib.ifindex = skb->ingress_ifindex;
	int v6 = eth->h_proto == bpf_htons(ETH_P_IPV6);
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip4 = (void *)(eth + 1);
		if ((void *)(ip4 + 1) > data_end || ip4->ttl <= 1)
			return TO_STACK;
		fib.family = AF_INET;
		fib.tos = ip4->tos;
		fib.l4_protocol = ip4->protocol;
		fib.ipv4_src = ip4->saddr;
		fib.ipv4_dst = ip4->daddr;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end || ip6->hop_limit <= 1)
			return TO_STACK;
		fib.family = AF_INET6;
		fib.flowinfo = *(__be32 *)ip6 & bpf_htonl(0x0FFFFFFF);
		fib.l4_protocol = ip6->nexthdr;
		__builtin_memcpy(fib.ipv6_src, &ip6->saddr, sizeof(fib.ipv6_src));
		__builtin_memcpy(fib.ipv6_dst, &ip6->daddr, sizeof(fib.ipv6_dst));
	} else {
		return TO_STACK;
	}

	if (bpf_fib_lookup(skb, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		goto stack;
	enum where to;
	if (fib.ifindex == cfg->fabric_ifindex)
		to = TO_FABRIC;
	else if (bpf_map_lookup_elem(&strait_fp_endpoints, &fib.ifindex))
		to = TO_ENDPOINT;
	else
		goto stack;
	/* Never back out of the device it came in on: the stack decides about those. */
	if (fib.ifindex == skb->ingress_ifindex)
		goto stack;

	/* Re-derived from eth, checked above: the verifier cannot tell a packet pointer
	 * from NULL, so a NULL header pointer cannot stand for "the other family". */
	if (v6)
		((struct ipv6hdr *)(eth + 1))->hop_limit--;
	else
		ipv4_decrease_ttl((struct iphdr *)(eth + 1));
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	*out_ifindex = fib.ifindex;
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
	enum where to = forward(skb, &ifindex);
	return redirect(to, ifindex);
}

/* Ingress of strait.vxlan: what other hosts' containers send to this host's. The
 * fabric itself is never a destination here (a route back out of the device a packet
 * came in on goes to the stack), so this only ever redirects to a local endpoint. */
SEC("classifier")
int strait_from_fab(struct __sk_buff *skb)
{
	__u32 ifindex = 0;
	enum where to = forward(skb, &ifindex);
	return redirect(to, ifindex);
}

char _license[] SEC("license") = "GPL";
