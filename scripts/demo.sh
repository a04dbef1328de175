#!/usr/bin/env bash
# strait's main job, end to end on this host: straitd on the embedded store, two
# containers started by Podman through the `strait` CNI plugin, ping and TCP between
# them (IPv4 and IPv6), a network policy enforced in eBPF (netctl monitor shows
# the denied flow, netctl policy trace explains it), what netctl shows, netctl doctor's
# checks, and a clean teardown.
#
# Run as root on Debian 12. `--keep` leaves the agent and containers running.
set -euo pipefail
cd "$(dirname "$0")/.."
KEEP=0; [ "${1:-}" = "--keep" ] && KEEP=1

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

say "installing dependencies and building strait (release)"
./scripts/install-deps.sh
cargo build --release --bins -q
BIN=$PWD/target/release
DEMO=/var/lib/strait-demo
NET=strait-demo
mkdir -p "$DEMO/cni-bin"
ln -sf "$BIN/strait" "$DEMO/cni-bin/strait"
SOCK=/run/strait/strait-demo.sock
BPF_DIR=/sys/fs/bpf/strait-demo
export STRAIT_SOCKET=$SOCK

# shellcheck source=lib-podman.sh
. ./scripts/lib-podman.sh
podman_setup "$DEMO/podman" "$DEMO/cni-bin"

cleanup() {
  [ "$KEEP" = 1 ] && return
  say "teardown: removing the containers releases their addresses"
  "$BIN/netctl" policy delete only-b-to-a >/dev/null 2>&1 || true
  podman rm -f -t0 strait-demo-a strait-demo-b >/dev/null 2>&1 || true
  "$BIN/netctl" ipam show 2>/dev/null || true
  [ -n "${AGENT:-}" ] && kill "$AGENT" 2>/dev/null && wait "$AGENT" 2>/dev/null || true
  # The agent leaves `<socket>.state` for DELs queued while it is down; the demo's
  # containers are gone, so nothing needs it.
  rm -f "$SOCK.state"
  # The policy maps it pinned (on a host they stay for the next agent to adopt).
  rm -rf "$BPF_DIR"
  echo "agent stopped; its log is $DEMO/straitd.log"
}
trap cleanup EXIT

say "starting straitd (embedded store, pools 10.244.0.0/16 and fd00:244::/48)"
# No socket balancer: the demo shows no services, and one attached to the host's root
# cgroup would stay there after the demo (as it stays across an agent's restart).
"$BIN/straitd" --node-name "$(hostname)" --state-dir "$DEMO/state" --socket "$SOCK" \
  --pool 10.244.0.0/16 --pool fd00:244::/48 --metrics-addr 127.0.0.1:9464 \
  --bpf-dir "$BPF_DIR" --service-cgroup none \
  >"$DEMO/straitd.log" 2>&1 &
AGENT=$!
for _ in $(seq 100); do "$BIN/netctl" status >/dev/null 2>&1 && break; sleep 0.1; done
run "$BIN/netctl" status

say "a Podman network that uses the strait CNI plugin (chained with portmap)"
cat > "$DEMO/podman/cni-conf/$NET.conflist" <<CONF
{
  "cniVersion": "1.0.0",
  "name": "$NET",
  "plugins": [
    { "type": "strait", "socket": "$SOCK", "stateDir": "$DEMO/state" },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
CONF
cat "$DEMO/podman/cni-conf/$NET.conflist"
podman_image "$DEMO/podman"

say "two containers"
podman rm -f -t0 strait-demo-a strait-demo-b >/dev/null 2>&1 || true
run podman run -d --name strait-demo-a --network "$NET" localhost/strait-bb sleep 3600
run podman run -d --name strait-demo-b --network "$NET" localhost/strait-bb sleep 3600
run "$BIN/netctl" endpoints
A4=$(podman exec strait-demo-a ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)
A6=$(podman exec strait-demo-a ip -6 -o addr show eth0 scope global | awk '{print $4}' | cut -d/ -f1)
run podman exec strait-demo-a ip addr show eth0
run podman exec strait-demo-a ip route
run podman exec strait-demo-a ip -6 route

say "ping and TCP between them"
run podman exec strait-demo-b ping -c3 -W1 "$A4"
run podman exec strait-demo-b ping -6 -c3 -W1 "$A6"
podman exec -d strait-demo-a sh -c 'echo hello-from-a | nc -l -p 7777' >/dev/null
sleep 0.3
run podman exec strait-demo-b nc -w2 "$A4" 7777

say "network policy: only b may reach a, and only on TCP 7777"
ID_A=$(podman inspect -f '{{.Id}}' strait-demo-a)
ID_B=$(podman inspect -f '{{.Id}}' strait-demo-b)
run "$BIN/netctl" endpoint label "$ID_A" app=a
run "$BIN/netctl" endpoint label "$ID_B" app=b
cat > "$DEMO/only-b-to-a.yaml" <<'YAML'
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-b-to-a, namespace: default}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: b}}}]
    ports: [{protocol: TCP, port: 7777}]
YAML
cat "$DEMO/only-b-to-a.yaml"
REV=$("$BIN/netctl" -o json policy apply -f "$DEMO/only-b-to-a.yaml" | sed -n 's/.*"revision": *\([0-9]*\).*/\1/p' | head -1)
run "$BIN/netctl" policy list
"$BIN/netctl" policy status --wait-revision "${REV:-0}" --timeout 10 >/dev/null
"$BIN/netctl" monitor --verdict denied > "$DEMO/monitor.log" 2>&1 &
MON=$!
sleep 0.3
podman exec -d strait-demo-a sh -c 'echo allowed-by-policy | nc -l -p 7777' >/dev/null
sleep 0.3
run podman exec strait-demo-b nc -w2 "$A4" 7777
printf '$ podman exec strait-demo-b ping -c2 -W1 %s   # ICMP is not allowed: dropped\n' "$A4"
podman exec strait-demo-b ping -c2 -W1 "$A4" || echo "(no reply: denied by policy)"
sleep 0.5
kill "$MON" 2>/dev/null; wait "$MON" 2>/dev/null || true
echo "$ netctl monitor --verdict denied   (what it printed meanwhile)"
head -n 3 "$DEMO/monitor.log"
run "$BIN/netctl" policy trace --from "$ID_B" --to "$ID_A" --port 7777/tcp || true
run "$BIN/netctl" policy trace --from "$ID_B" --to "$ID_A" --port 80/tcp || true
run "$BIN/netctl" policy show --endpoint "$ID_A" || true
run "$BIN/netctl" policy delete only-b-to-a

say "what the host sees"
run ip route show proto 83
run "$BIN/netctl" ipam show
run "$BIN/netctl" ipam check
echo "metrics: curl -s 127.0.0.1:9464/metrics | grep strait_"
curl -s 127.0.0.1:9464/metrics 2>/dev/null | grep -E '^strait_(cni_requests|endpoints)' || true

say "when something is wrong: netctl doctor checks the node and says what to fix"
# Podman's CNI dirs here are the demo's own; on a host, the defaults are where runtimes look.
run "$BIN/netctl" doctor --cni-conf-dir "$DEMO/podman/cni-conf" --cni-bin-dir "$DEMO/cni-bin:/usr/lib/cni" || true
run "$BIN/netctl" topology || true
say "demo done"
