#!/usr/bin/env bash
# The cross-node check: a probe container on every node, each pinging every other
# node's probe, results printed as a table. Run as root, on each node, after node.sh.
#
#   check.sh probe-up     make this node's probe (a netns attached by the strait CNI
#                         plugin), record its address in the shared dir, and leave a
#                         responder running that pings every probe at each round
#   check.sh check        (one node, after every probe-up) start a round, wait for
#                         every node's answers, print the table; exit 1 unless all ok
#   check.sh probe-down   remove this node's probe (CNI DEL, netns) and its responder
#
# The nodes share nothing but a directory: /vagrant/.strait in the VMs, a temp dir
# in testbeds/tests/deploy_package.rs, which runs this same script in namespace hosts.
#
# Environment:
#   STRAIT_NODE_NAME   this node (default: the host name)
#   STRAIT_SHARED      the shared directory (default /vagrant/.strait)
#   STRAIT_NODES       `check`: the nodes to wait for, space-separated
#   STRAIT_SOCKET      the agent's socket (default /run/strait/strait.sock)
#   STRAIT_PROBE_NS    the probe's netns name (default strait-probe)
#   STRAIT_RUN_DIR     the responder's pid file and log (default /run/strait)
#   STRAIT_CNI_PLUGIN  the plugin (default /opt/cni/bin/strait)
#   STRAIT_CHECK_SECS  how long `check` waits for probes and answers (default 600)
#   STRAIT_RESPONDER_SECS  how long a responder keeps answering rounds (default 3600)
set -euo pipefail

node=${STRAIT_NODE_NAME:-$(hostname)}
shared=${STRAIT_SHARED:-/vagrant/.strait}
socket=${STRAIT_SOCKET:-/run/strait/strait.sock}
probe_ns=${STRAIT_PROBE_NS:-strait-probe}
run_dir=${STRAIT_RUN_DIR:-/run/strait}
plugin=${STRAIT_CNI_PLUGIN:-/opt/cni/bin/strait}
check_secs=${STRAIT_CHECK_SECS:-600}
responder_secs=${STRAIT_RESPONDER_SECS:-3600}
container_id=strait-probe-$node
pidfile=$run_dir/probe-responder.pid

log() { echo "check.sh[$node]: $*" >&2; }
die() { log "$*"; exit 1; }

# Write a file in the shared dir in one step (other nodes read it at any time).
put() { # path, content on stdin
    cat >"$1.tmp.$$"
    mv -f "$1.tmp.$$" "$1"
}

cni() { # verb: the strait plugin as a runtime calls it, config on stdin
    printf '{"cniVersion":"1.0.0","name":"strait-probe","type":"strait","socket":"%s"}' "$socket" |
        env CNI_COMMAND="$1" CNI_CONTAINERID="$container_id" CNI_NETNS="/run/netns/$probe_ns" \
            CNI_IFNAME=eth0 CNI_PATH=/opt/cni/bin:/usr/lib/cni "$plugin"
}

stop_responder() {
    [ -f "$pidfile" ] || return 0
    local pid
    pid=$(cat "$pidfile")
    # Only our own responder: a bash whose command line is `... probe-up`.
    if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "probe-up"; then
        kill "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

probe_down() {
    stop_responder
    if [ -e "/run/netns/$probe_ns" ]; then
        cni DEL >/dev/null || log "CNI DEL of the probe failed"
        ip netns del "$probe_ns"
    fi
    rm -f "$shared/probes/$node" "$shared/results/$node"
}

# Answers each new round: pings every probe listed from this node's probe.
respond() {
    local seen= deadline=$((SECONDS + responder_secs))
    # A round already there was meant for an earlier set of probes.
    [ -f "$shared/round" ] && seen=$(head -n1 "$shared/round")
    while [ "$SECONDS" -lt "$deadline" ]; do
        local round=
        [ -f "$shared/round" ] && round=$(head -n1 "$shared/round")
        if [ -n "$round" ] && [ "$round" != "$seen" ]; then
            seen=$round
            {
                echo "$round"
                tail -n +2 "$shared/round" | while read -r to ip; do
                    local verdict=fail
                    for _ in 1 2 3 4 5; do
                        if ip netns exec "$probe_ns" ping -c1 -W2 "$ip" >/dev/null 2>&1; then
                            verdict=ok
                            break
                        fi
                    done
                    echo "$to $verdict"
                done
            } | put "$shared/results/$node"
        fi
        sleep 1
    done
}

probe_up() {
    if ! command -v ping >/dev/null && command -v apt-get >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q iputils-ping >&2
    fi
    mkdir -p "$shared/probes" "$shared/results" "$run_dir"
    probe_down
    ip netns add "$probe_ns"
    ip netns exec "$probe_ns" ip link set lo up
    local result ip
    if ! result=$(cni ADD); then
        ip netns del "$probe_ns"
        die "CNI ADD of the probe failed: $result"
    fi
    ip=$(printf '%s' "$result" | tr -d ' \n' | grep -o '"address":"[^"/]*' | head -n1 | cut -d'"' -f4)
    [ -n "$ip" ] || die "no address in the CNI result: $result"
    echo "$ip" | put "$shared/probes/$node"
    log "probe $probe_ns has $ip"
    # The responder outlives this script: its own process, no terminal, output to a log.
    (
        trap '' HUP
        respond
    ) </dev/null >>"$run_dir/probe-responder.log" 2>&1 &
    echo $! >"$pidfile"
}

check() {
    local nodes=${STRAIT_NODES:?STRAIT_NODES: the nodes to check, space-separated}
    local deadline=$((SECONDS + check_secs)) n
    for n in $nodes; do
        until [ -s "$shared/probes/$n" ]; do
            [ "$SECONDS" -lt "$deadline" ] || die "no probe from $n after ${check_secs}s"
            sleep 1
        done
    done
    local round
    round="round $(date +%s)-$$-$node"
    {
        echo "$round"
        for n in $nodes; do echo "$n $(cat "$shared/probes/$n")"; done
    } | put "$shared/round"
    log "$round: $(echo $nodes | wc -w) probes"
    for n in $nodes; do
        until [ -f "$shared/results/$n" ] && [ "$(head -n1 "$shared/results/$n")" = "$round" ]; do
            [ "$SECONDS" -lt "$deadline" ] || break
            sleep 1
        done
    done
    # The table: one row per source node, one column per destination.
    local failed=0 from to cell
    printf '%-12s' 'from \ to'
    for to in $nodes; do printf ' %-10s' "$to"; done
    echo
    for from in $nodes; do
        printf '%-12s' "$from"
        local answered=
        [ -f "$shared/results/$from" ] && [ "$(head -n1 "$shared/results/$from")" = "$round" ] && answered=1
        for to in $nodes; do
            if [ -z "$answered" ]; then
                cell="no-answer"
            else
                cell=$(awk -v to="$to" 'NR > 1 && $1 == to { print $2 }' "$shared/results/$from")
                cell=${cell:-missing}
            fi
            [ "$cell" = ok ] || failed=$((failed + 1))
            printf ' %-10s' "$cell"
        done
        echo
    done
    if [ "$failed" -eq 0 ]; then
        echo "cross-node check: all $(($(echo $nodes | wc -w) ** 2)) pairs ok"
    else
        echo "cross-node check: $failed pairs not ok"
        return 1
    fi
}

case "${1:-}" in
probe-up) probe_up ;;
probe-down) probe_down ;;
check) check ;;
*) echo "usage: check.sh probe-up | check | probe-down" >&2; exit 2 ;;
esac
