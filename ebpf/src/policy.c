// SPDX-License-Identifier: GPL-2.0
/*
 * strait's network policy: two programs on the host end of every container veth,
 * attached with tcx (docs/policy.md "Datapath").
 *
 *   strait_pol_from_ep  tcx ingress: what the container sends, its egress check.
 *                       Runs before the fast path's clsact filter on the same
 *                       device, so a packet the fast path redirects was checked.
 *   strait_pol_to_ep    tcx egress: what the stack delivers to the container, its
 *                       ingress check. (The fast path delivers with
 *                       bpf_redirect_peer, which skips this hook; it runs the same
 *                       check itself.)
 *
 * tcx rather than a clsact filter: it sits beside the bandwidth plugin's `ingress`
 * qdisc and the fast path's clsact filter, and can be attached during CNI ADD.
 * A program returns TC_ACT_UNSPEC (TCX_NEXT: on to the next program and the clsact
 * filters) or TC_ACT_SHOT. The check, its maps and its layouts are in
 * strait/policy.h and strait/abi.h.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "strait/abi.h"
#include "strait/policy.h"

SEC("classifier")
int strait_pol_from_ep(struct __sk_buff *skb)
{
	return strait_pol_check(skb, skb->ifindex, STRAIT_POL_EGRESS) ? TC_ACT_UNSPEC : TC_ACT_SHOT;
}

SEC("classifier")
int strait_pol_to_ep(struct __sk_buff *skb)
{
	return strait_pol_check(skb, skb->ifindex, STRAIT_POL_INGRESS) ? TC_ACT_UNSPEC :
									 TC_ACT_SHOT;
}

char _license[] SEC("license") = "GPL";
