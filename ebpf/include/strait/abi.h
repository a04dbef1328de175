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
 * for one reason. No program drops a packet today; a STRAIT_DROP_* reason comes
 * with the first that does. Values are the map's indices: append, never renumber
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
	STRAIT_REASON_MAX = 9,
};

#endif /* STRAIT_ABI_H */
