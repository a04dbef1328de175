// SPDX-License-Identifier: GPL-2.0
/*
 * strait's socket-level load balancer (docs/services.md "Datapath"): cgroup v2
 * sock_addr programs that rewrite a socket's destination from a service address
 * to one of its backends when the socket connects or sends, so no packet ever
 * carries the service address, and show the service address back where the
 * socket would see the backend's.
 *
 *   strait_connect4/6  connect() (TCP, connected UDP): VIP -> backend, and a
 *                      reverse entry for getpeername and recvmsg.
 *   strait_sendmsg4/6  sendmsg()/sendto() of unconnected UDP: the same, per message.
 *   strait_recvmsg4/6  recvmsg() of UDP: a reply's source backend -> the VIP.
 *   strait_getpeer4/6  getpeername(): backend -> VIP.
 *
 * The *6 programs key the address as it is, so a dual-stack socket's connect to
 * an IPv4-mapped VIP (::ffff:10.96.0.10) is translated like an IPv4 one. A
 * frontend without a usable backend is refused with ECONNREFUSED, at once.
 * Program names fit the kernel's 15 bytes, so bpftool shows them whole.
 */
#include <linux/bpf.h>
#include <linux/errno.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#include "strait/abi.h"
#include "strait/services.h"

/* A sock_addr program's verdicts: 1 lets the call go on, 0 fails it (with the
 * error bpf_set_retval() gave, else EPERM). */
#define STRAIT_SOCK_OK 1
#define STRAIT_SOCK_REFUSE 0

static __always_inline void strait_svc_addr4(struct strait_addr *addr, __u32 ip4)
{
	addr->bytes[10] = 0xff;
	addr->bytes[11] = 0xff;
	__builtin_memcpy(&addr->bytes[12], &ip4, 4);
}

static __always_inline void strait_svc_addr6(struct strait_addr *addr, struct bpf_sock_addr *ctx)
{
	__u32 ip6[4];

	ip6[0] = ctx->user_ip6[0];
	ip6[1] = ctx->user_ip6[1];
	ip6[2] = ctx->user_ip6[2];
	ip6[3] = ctx->user_ip6[3];
	__builtin_memcpy(addr->bytes, ip6, 16);
}

static __always_inline void strait_svc_set6(struct bpf_sock_addr *ctx,
					    const struct strait_addr *addr)
{
	__u32 ip6[4];

	__builtin_memcpy(ip6, addr->bytes, 16);
	ctx->user_ip6[0] = ip6[0];
	ctx->user_ip6[1] = ip6[1];
	ctx->user_ip6[2] = ip6[2];
	ctx->user_ip6[3] = ip6[3];
}

static __always_inline void strait_svc_set4(struct bpf_sock_addr *ctx,
					    const struct strait_addr *addr)
{
	__u32 ip4;

	__builtin_memcpy(&ip4, &addr->bytes[12], 4);
	ctx->user_ip4 = ip4;
}

/* Sends a translation event made by `kind`. Not inlined, so that struct
 * strait_svc_event and enum strait_svc_xlate are in the object's BTF for the
 * agent's layout test. */
static __noinline void strait_svc_emit(struct strait_svc_event *e, enum strait_svc_xlate kind)
{
	e->kind = kind;
	if (bpf_ringbuf_output(&strait_svc_events, e, sizeof(*e), 0) < 0)
		strait_svc_count(STRAIT_SVC_EVENTS_LOST);
}

static __always_inline void strait_svc_event(struct bpf_sock_addr *ctx,
					     const struct strait_svc_key *key,
					     const struct strait_svc_frontend *fe,
					     const struct strait_svc_backend *be, __u32 backend_id,
					     enum strait_svc_xlate kind)
{
	struct strait_svc_event e = {};

	e.time_ns = bpf_ktime_get_ns();
	e.netns_cookie = bpf_get_netns_cookie(ctx);
	e.cgroup_id = bpf_get_current_cgroup_id();
	e.pid = bpf_get_current_pid_tgid() >> 32;
	e.frontend = key->addr;
	e.frontend_port = key->port;
	e.backend = be->addr;
	e.backend_port = be->port;
	e.proto = key->proto;
	e.frontend_id = fe->id;
	e.backend_id = backend_id;
	strait_svc_emit(&e, kind);
}

/*
 * Rewrites the destination of a connect or sendmsg whose service address is in
 * `key` (addr and port filled in by the caller) to a backend, and records the
 * reverse entry. `v4`: an AF_INET socket, which can only be sent to an IPv4
 * backend.
 */
static __always_inline int strait_svc_translate(struct bpf_sock_addr *ctx,
						struct strait_svc_key *key, int v4,
						enum strait_svc_xlate kind)
{
	struct strait_svc_revnat_key rkey = {};
	struct strait_svc_revnat rev = {};
	enum strait_svc_reason reason;
	struct strait_svc_frontend *fe;
	struct strait_svc_backend *be;
	__u32 backend_id = 0;
	__u32 proto = ctx->protocol;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return STRAIT_SOCK_OK;
	key->proto = proto;
	fe = strait_svc_lookup(key);
	if (!fe)
		return STRAIT_SOCK_OK;
	be = strait_svc_select(fe, bpf_get_netns_cookie(ctx), bpf_get_prandom_u32(), &backend_id,
			       &reason);
	/* An IPv6 backend for an IPv4 socket: the agent never installs one (a
	 * frontend's backends are of its family); refuse rather than guess. */
	if (be && v4 && !strait_svc_is_v4(&be->addr)) {
		be = NULL;
		reason = STRAIT_SVC_BACKEND_MISSING;
	}
	strait_svc_count(reason);
	if (!be) {
		bpf_set_retval(-ECONNREFUSED);
		return STRAIT_SOCK_REFUSE;
	}

	strait_svc_backend_count(backend_id);
	if (strait_svc_monitored())
		strait_svc_event(ctx, key, fe, be, backend_id, kind);

	rkey.cookie = bpf_get_socket_cookie(ctx);
	rkey.addr = be->addr;
	rkey.port = be->port;
	rev.addr = key->addr;
	rev.port = key->port;
	rev.id = fe->id;
	bpf_map_update_elem(&strait_svc_revnat, &rkey, &rev, BPF_ANY);

	if (v4)
		strait_svc_set4(ctx, &be->addr);
	else
		strait_svc_set6(ctx, &be->addr);
	/* user_port holds the port in network order in its first two bytes. */
	ctx->user_port = (__u32)be->port;
	return STRAIT_SOCK_OK;
}

/* Shows the service address where the socket sees a backend it was sent to. */
static __always_inline int strait_svc_reverse(struct bpf_sock_addr *ctx, int v4)
{
	struct strait_svc_revnat_key rkey = {};
	struct strait_svc_revnat *rev;

	rkey.cookie = bpf_get_socket_cookie(ctx);
	if (v4)
		strait_svc_addr4(&rkey.addr, ctx->user_ip4);
	else
		strait_svc_addr6(&rkey.addr, ctx);
	rkey.port = (__be16)ctx->user_port;
	rev = bpf_map_lookup_elem(&strait_svc_revnat, &rkey);
	if (!rev)
		return STRAIT_SOCK_OK;
	if (v4) {
		if (!strait_svc_is_v4(&rev->addr))
			return STRAIT_SOCK_OK;
		strait_svc_set4(ctx, &rev->addr);
	} else {
		strait_svc_set6(ctx, &rev->addr);
	}
	ctx->user_port = (__u32)rev->port;
	return STRAIT_SOCK_OK;
}

static __always_inline int strait_svc_forward4(struct bpf_sock_addr *ctx,
					       enum strait_svc_xlate kind)
{
	struct strait_svc_key key = {};

	strait_svc_addr4(&key.addr, ctx->user_ip4);
	key.port = (__be16)ctx->user_port;
	return strait_svc_translate(ctx, &key, 1, kind);
}

static __always_inline int strait_svc_forward6(struct bpf_sock_addr *ctx,
					       enum strait_svc_xlate kind)
{
	struct strait_svc_key key = {};

	strait_svc_addr6(&key.addr, ctx);
	key.port = (__be16)ctx->user_port;
	return strait_svc_translate(ctx, &key, 0, kind);
}

SEC("cgroup/connect4")
int strait_connect4(struct bpf_sock_addr *ctx)
{
	return strait_svc_forward4(ctx, STRAIT_SVC_XLATE_CONNECT);
}

SEC("cgroup/connect6")
int strait_connect6(struct bpf_sock_addr *ctx)
{
	return strait_svc_forward6(ctx, STRAIT_SVC_XLATE_CONNECT);
}

SEC("cgroup/sendmsg4")
int strait_sendmsg4(struct bpf_sock_addr *ctx)
{
	return strait_svc_forward4(ctx, STRAIT_SVC_XLATE_SENDMSG);
}

SEC("cgroup/sendmsg6")
int strait_sendmsg6(struct bpf_sock_addr *ctx)
{
	return strait_svc_forward6(ctx, STRAIT_SVC_XLATE_SENDMSG);
}

SEC("cgroup/recvmsg4")
int strait_recvmsg4(struct bpf_sock_addr *ctx)
{
	return strait_svc_reverse(ctx, 1);
}

SEC("cgroup/recvmsg6")
int strait_recvmsg6(struct bpf_sock_addr *ctx)
{
	return strait_svc_reverse(ctx, 0);
}

SEC("cgroup/getpeername4")
int strait_getpeer4(struct bpf_sock_addr *ctx)
{
	return strait_svc_reverse(ctx, 1);
}

SEC("cgroup/getpeername6")
int strait_getpeer6(struct bpf_sock_addr *ctx)
{
	return strait_svc_reverse(ctx, 0);
}

char _license[] SEC("license") = "GPL";
