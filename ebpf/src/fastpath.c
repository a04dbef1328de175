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
 *   strait_from_ep  (host end of c1's veth): tunnel map, MACs, bpf_redirect -> strait.vxlan
 *   strait_from_fab (strait.vxlan ingress):  endpoint map, MACs, bpf_redirect_peer -> c2 eth0
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
 * unchanged (TC_ACT_OK), and counted under the reason why (enum strait_reason in
 * strait/abi.h): non-IP, TTL about to expire (the stack sends the ICMP), too big for
 * the device it would leave by (the stack sends "fragmentation needed"), or a
 * destination in neither map (the internet, a service address the host NATs, the
 * host itself, a route someone added by hand).
 *
 * What it bypasses is the host's netfilter for container-to-container packets, as
 * Cilium's BPF host routing does. The agent therefore turns it off (config.enabled = 0)
 * where the host rewrites destinations (kube-proxy, portmap): replies need conntrack.
 *
 * A packet redirected to a local endpoint has passed that endpoint's ingress
 * policy first (strait/policy.h; the redirect skips the hook where policy.c checks
 * it), and is dropped (STRAIT_DROP_POLICY) when it does not.
 *
 * Both programs live in one object because they share the maps (strait/maps.h).
 * Their layouts are in strait/abi.h, which the agent mirrors and checks against this
 * object's BTF. Addresses are keyed as 16 bytes, IPv4 as IPv4-mapped IPv6
 * (::ffff:a.b.c.d), so one map serves both families.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "strait/abi.h"
#include "strait/maps.h"
#include "strait/policy.h"

/* RFC 1624 incremental update of the IPv4 header checksum for a TTL decrement, as
 * the kernel's ip_decrease_ttl does. */
static __always_inline void ipv4_decrease_ttl(struct iphdr *ip)
{
	__u32 check = ip->check;

	check += bpf_htons(0x0100);
	ip->check = (__u16)(check + (check >= 0xFFFF));
	ip->ttl--;
}

/*
 * Finds where the packet goes (a local endpoint, or with `may_tunnel` another node's
 * block) and rewrites TTL and MACs for that hop. Returns STRAIT_FWD_FABRIC or
 * STRAIT_FWD_ENDPOINT with *out_ifindex set, for the caller to redirect; otherwise
 * the STRAIT_PASS_* reason the packet goes to the stack for, untouched.
 */
static __always_inline enum strait_reason forward(struct __sk_buff *skb, int may_tunnel,
						  __u32 *out_ifindex)
{
	__u32 zero = 0;
	struct strait_fp_config *cfg = bpf_map_lookup_elem(&strait_fp_config, &zero);

	if (!cfg || !cfg->enabled)
		return STRAIT_PASS_DISABLED;

	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return STRAIT_PASS_SHORT;

	struct strait_fp_tunnel_key key = {};
	int v6 = eth->h_proto == bpf_htons(ETH_P_IPV6);

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip4 = (void *)(eth + 1);

		if ((void *)(ip4 + 1) > data_end)
			return STRAIT_PASS_SHORT;
		if (ip4->ttl <= 1)
			return STRAIT_PASS_TTL;
		key.addr.bytes[10] = 0xff;
		key.addr.bytes[11] = 0xff;
		__builtin_memcpy(&key.addr.bytes[12], &ip4->daddr, 4);
	} else if (v6) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return STRAIT_PASS_SHORT;
		if (ip6->hop_limit <= 1)
			return STRAIT_PASS_TTL;
		__builtin_memcpy(&key.addr, &ip6->daddr, sizeof(key.addr));
	} else {
		return STRAIT_PASS_NOT_IP;
	}

	enum strait_reason to;
	__u32 ifindex;
	const __u8 *dmac, *smac;
	struct strait_fp_endpoint *ep = bpf_map_lookup_elem(&strait_fp_endpoints, &key.addr);

	if (ep) {
		/* Never back out of the device it came in on: the stack decides. */
		if (ep->ifindex == skb->ingress_ifindex)
			return STRAIT_PASS_SAME_DEVICE;
		to = STRAIT_FWD_ENDPOINT;
		ifindex = ep->ifindex;
		dmac = ep->mac;
		smac = ep->host_mac;
	} else if (may_tunnel && cfg->fabric_ifindex) {
		key.prefixlen = 128;
		struct strait_fp_tunnel *t = bpf_map_lookup_elem(&strait_fp_tunnels, &key);

		if (!t)
			return STRAIT_PASS_NO_ENTRY;
		to = STRAIT_FWD_FABRIC;
		ifindex = cfg->fabric_ifindex;
		dmac = t->vtep_mac;
		smac = cfg->fabric_mac;
	} else {
		return STRAIT_PASS_NO_ENTRY;
	}
	/* Against the device the packet leaves by; GSO packets by their segments. */
	__u32 mtu_len = 0;

	if (bpf_check_mtu(skb, ifindex, &mtu_len, 0, 0) != BPF_MTU_CHK_RET_SUCCESS)
		return STRAIT_PASS_MTU;

	/* The helper may have moved the packet: bounds are checked again. */
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return STRAIT_PASS_SHORT;
	/* Re-derived from eth: the verifier cannot tell a packet pointer from NULL, so a
	 * NULL header pointer cannot stand for "the other family". */
	if (v6) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return STRAIT_PASS_SHORT;
		ip6->hop_limit--;
	} else {
		struct iphdr *ip4 = (void *)(eth + 1);

		if ((void *)(ip4 + 1) > data_end)
			return STRAIT_PASS_SHORT;
		ipv4_decrease_ttl(ip4);
	}
	__builtin_memcpy(eth->h_dest, dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, smac, ETH_ALEN);
	*out_ifindex = ifindex;
	return to;
}

/* Counts the packet under `reason` and turns it into the tc verdict. A packet for a
 * local endpoint first passes that endpoint's ingress policy (strait/policy.h):
 * bpf_redirect_peer skips the hook on its veth where policy.c would check it. */
static __always_inline int verdict(struct __sk_buff *skb, enum strait_reason reason, __u32 ifindex)
{
	if (reason == STRAIT_FWD_ENDPOINT && !strait_pol_check(skb, ifindex, STRAIT_POL_INGRESS))
		reason = STRAIT_DROP_POLICY;
	strait_count(reason);
	switch (reason) {
	case STRAIT_FWD_FABRIC:
		return bpf_redirect(ifindex, 0);
	case STRAIT_FWD_ENDPOINT:
		/* Into the container's namespace, at the ingress of its end of the veth. */
		return bpf_redirect_peer(ifindex, 0);
	case STRAIT_DROP_POLICY:
		return TC_ACT_SHOT;
	default:
		return TC_ACT_OK;
	}
}

/* Ingress of the host end of a container's veth: what the container sends. */
SEC("classifier")
int strait_from_ep(struct __sk_buff *skb)
{
	__u32 ifindex = 0;
	enum strait_reason reason = forward(skb, 1, &ifindex);

	return verdict(skb, reason, ifindex);
}

/* Ingress of strait.vxlan: what other hosts' containers send to this host's. Only
 * ever redirects to a local endpoint: what came in from the fabric does not go back
 * out to it (the stack decides about such packets). */
SEC("classifier")
int strait_from_fab(struct __sk_buff *skb)
{
	__u32 ifindex = 0;
	enum strait_reason reason = forward(skb, 0, &ifindex);

	return verdict(skb, reason, ifindex);
}

char _license[] SEC("license") = "GPL";
