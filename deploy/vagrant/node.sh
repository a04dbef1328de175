#!/usr/bin/env bash
# Provision one strait node: install the package, write the node's config, start the
# agent and wait until it is ready. Run as root. The Vagrantfile runs it in every
# node VM; testbeds/tests/deploy_package.rs runs the same script inside network-
# namespace hosts (`ip netns exec HOST node.sh`), with the knobs below pointing at
# the test's own files.
#
# Environment:
#   STRAIT_DEB             the .deb to install, or a directory: the newest
#                          strait_*_amd64.deb in it (waited for up to
#                          STRAIT_DEB_WAIT_SECS, default 3600: node1 may still be
#                          building it). Unset: the installed package is used.
#   STRAIT_NODE_NAME       node name (default: the host name)
#   STRAIT_ETCD_ENDPOINTS  comma-separated etcd URLs (unset: the embedded store)
#   STRAIT_FABRIC          vxlan | host-gw | bgp | none (default vxlan with etcd)
#   STRAIT_UNDERLAY_ADDR   this node's address on the network between nodes; its
#                          interface becomes the underlay interface
#   STRAIT_UNDERLAY_IFACE  the underlay interface, when no address is given
#   STRAIT_POOLS           space-separated pools (default 10.244.0.0/16)
#   STRAIT_CONFIG          config file written (default /etc/strait/straitd.toml)
#   STRAIT_STATE_DIR       state dir (default /var/lib/strait)
#   STRAIT_SOCKET          API socket (default /run/strait/strait.sock)
#   STRAIT_CONFIG_EXTRA    more TOML lines for the config (tests: bpf_dir, ...)
#   STRAIT_START           auto (default: systemd when /run/systemd/system exists,
#                          else background) | systemd | background | none
#   STRAIT_PIDFILE         background mode: the agent's PID (default
#                          /run/strait/straitd.pid)
#   STRAIT_LOG             background mode: the agent's log (default
#                          /var/log/straitd.log)
#   STRAIT_READY_SECS      how long to wait for the agent to be ready (default 120)
set -euo pipefail

log() { echo "node.sh[${STRAIT_NODE_NAME:-$(hostname)}]: $*" >&2; }
die() { log "$*"; exit 1; }

node=${STRAIT_NODE_NAME:-$(hostname)}
config=${STRAIT_CONFIG:-/etc/strait/straitd.toml}
state_dir=${STRAIT_STATE_DIR:-/var/lib/strait}
socket=${STRAIT_SOCKET:-/run/strait/strait.sock}
pools=${STRAIT_POOLS:-10.244.0.0/16}
etcd=${STRAIT_ETCD_ENDPOINTS:-}
if [ -n "$etcd" ]; then fabric=${STRAIT_FABRIC:-vxlan}; else fabric=${STRAIT_FABRIC:-none}; fi
start=${STRAIT_START:-auto}
pidfile=${STRAIT_PIDFILE:-/run/strait/straitd.pid}
logfile=${STRAIT_LOG:-/var/log/straitd.log}
ready_secs=${STRAIT_READY_SECS:-120}

case "$fabric" in vxlan | host-gw | bgp | none) ;; *) die "STRAIT_FABRIC: vxlan, host-gw, bgp or none, not $fabric" ;; esac

# --- the config ----------------------------------------------------------------
# Written before the package is installed: on a systemd host its postinst starts the
# agent at once, which then starts with this node's config (dpkg keeps the file, as
# --force-confold says, rather than putting the default in its place).
underlay_iface=${STRAIT_UNDERLAY_IFACE:-}
underlay_addr=${STRAIT_UNDERLAY_ADDR:-}
if [ -n "$underlay_addr" ] && [ -z "$underlay_iface" ]; then
    underlay_iface=$(ip -o addr show to "$underlay_addr" | awk '{print $2; exit}')
    [ -n "$underlay_iface" ] || die "no interface has $underlay_addr"
fi

toml_list() { # "a b" -> ["a", "b"]
    local out= x
    for x in $*; do out="$out${out:+, }\"$x\""; done
    echo "[$out]"
}

mkdir -p "$(dirname "$config")"
tmp=$config.tmp.$$
{
    echo "# Written by deploy/vagrant/node.sh for node $node."
    echo "node_name = \"$node\""
    echo "pools = $(toml_list "$pools")"
    echo "state_dir = \"$state_dir\""
    echo "socket = \"$socket\""
    if [ -n "$etcd" ]; then
        echo "etcd_endpoints = $(toml_list "${etcd//,/ }")"
    fi
    if [ "$fabric" != none ]; then
        echo "fabric = \"$fabric\""
    fi
    [ -z "$underlay_iface" ] || echo "underlay_iface = \"$underlay_iface\""
    [ -z "$underlay_addr" ] || echo "underlay_addrs = [\"$underlay_addr\"]"
    [ -z "${STRAIT_CONFIG_EXTRA:-}" ] || printf '%s\n' "$STRAIT_CONFIG_EXTRA"
} >"$tmp"
mv "$tmp" "$config"
log "wrote $config"

# --- the package ---------------------------------------------------------------
deb=${STRAIT_DEB:-}
if [ -n "$deb" ] && [ -d "$deb" ]; then
    dir=$deb
    deadline=$((SECONDS + ${STRAIT_DEB_WAIT_SECS:-3600}))
    while :; do
        deb=$(ls -t "$dir"/strait_*_amd64.deb 2>/dev/null | head -n1 || true)
        [ -n "$deb" ] && break
        [ "$SECONDS" -lt "$deadline" ] || die "no strait_*_amd64.deb in $dir"
        log "waiting for a package in $dir (node1 builds it)"
        sleep 10
    done
fi
if [ -n "$deb" ]; then
    [ -f "$deb" ] || die "STRAIT_DEB=$deb: no such file"
    want=$(dpkg-deb -f "$deb" Version)
    have=$(dpkg-query -W -f='${Status} ${Version}' strait 2>/dev/null || true)
    if [ "$have" = "install ok installed $want" ]; then
        log "strait $want already installed"
    else
        log "installing $deb"
        # --force-confold: a re-provisioned node keeps the config this script wrote.
        if ! dpkg -i --force-confold "$deb" >&2; then
            # Missing dependencies on a fresh VM: let apt bring them and finish.
            DEBIAN_FRONTEND=noninteractive apt-get install -y -f -o Dpkg::Options::=--force-confold >&2
        fi
    fi
fi
[ -x /usr/bin/straitd ] || die "strait is not installed (set STRAIT_DEB)"

# --- start ---------------------------------------------------------------------
if [ "$start" = auto ]; then
    if [ -d /run/systemd/system ]; then start=systemd; else start=background; fi
fi

# The unit's capability bounding set, for an agent started without systemd: the same
# privileges the service would have.
unit_caps() {
    local caps
    caps=$(sed -n 's/^CapabilityBoundingSet=//p' /lib/systemd/system/straitd.service | tr 'A-Z' 'a-z')
    [ -n "$caps" ] || return 0
    local arg=-all c
    for c in $caps; do arg="$arg,+${c#cap_}"; done
    echo "$arg"
}

case "$start" in
systemd)
    [ "$config" = /etc/strait/straitd.toml ] || die "systemd start needs STRAIT_CONFIG=/etc/strait/straitd.toml (the unit's)"
    systemctl enable straitd.service >&2
    # Type=notify: returns once the agent says it is ready.
    systemctl restart straitd.service >&2
    ;;
background)
    if [ -f "$pidfile" ] && pid=$(cat "$pidfile") && [ -n "$pid" ] &&
        [ "$(readlink "/proc/$pid/exe" 2>/dev/null || true)" = /usr/bin/straitd ]; then
        log "stopping the agent started before (pid $pid)"
        kill "$pid"
        for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    mkdir -p "$(dirname "$pidfile")" "$(dirname "$logfile")"
    launch=(/usr/bin/straitd --config "$config")
    caps=$(unit_caps)
    if [ -n "$caps" ] && command -v setpriv >/dev/null; then
        launch=(setpriv --bounding-set="$caps" --inh-caps=-all --no-new-privs "${launch[@]}")
    fi
    # setpriv execs straitd in place: $! is the agent's PID.
    nohup "${launch[@]}" </dev/null >>"$logfile" 2>&1 &
    echo $! >"$pidfile"
    log "started straitd (pid $!, log $logfile)"
    ;;
none) exit 0 ;;
*) die "STRAIT_START: auto, systemd, background or none, not $start" ;;
esac

deadline=$((SECONDS + ready_secs))
until /usr/bin/netctl --socket "$socket" status >/dev/null 2>&1; do
    if [ "$start" = background ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        tail -n 30 "$logfile" >&2 || true
        die "straitd exited"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        [ "$start" = background ] && tail -n 30 "$logfile" >&2
        die "straitd not ready after ${ready_secs}s"
    fi
    sleep 0.5
done
log "straitd ready"
/usr/bin/netctl --socket "$socket" status >&2
