#!/usr/bin/env python3
"""Write the seed corpora under fuzz/corpus/<target>/ from the runtime captures in
cni/tests/fixtures and a few hand-made API bodies. Re-run after adding captures; file
names are content hashes (as libFuzzer names its own finds), so re-running adds
nothing twice."""

import hashlib
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "cni" / "tests" / "fixtures"
CORPUS = ROOT / "fuzz" / "corpus"


def parse_capture(path):
    """ENV lines and STDIN of one capture (the layout cni/tests/common reads)."""
    env, stdin, section = [], [], None
    for line in path.read_text().splitlines():
        if line.startswith("### "):
            head = line[4:]
            section = {"ENV": "env", "STDIN": "stdin"}.get(head, "other")
            continue
        if section == "env" and "=" in line:
            env.append(line)
        elif section == "stdin":
            stdin.append(line)
    return "".join(f"{l}\n" for l in env), "".join(stdin)


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def http(status, body, chunked=False):
    head = f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
    if chunked:
        chunks = "".join(f"{len(p):x}\r\n{p}\r\n" for p in (body[:7], body[7:]) if p)
        return f"{head}transfer-encoding: chunked\r\n\r\n{chunks}0\r\n\r\n"
    return f"{head}content-length: {len(body.encode())}\r\n\r\n{body}"


for capture in sorted(FIXTURES.rglob("*.txt")):
    env, stdin = parse_capture(capture)
    write("cni_env_and_args", env)
    if stdin:
        write("cni_netconf", stdin)
        prev = json.loads(stdin).get("prevResult")
        if prev is not None:
            write("cni_prev_result", json.dumps(prev, separators=(",", ":")))

# The keys a capture never holds: strait's own, runtimeConfig with every capability,
# args.cni, GC's attachment list.
write("cni_netconf", json.dumps({
    "cniVersion": "1.1.0", "name": "fuzznet", "type": "strait",
    "socket": "/run/strait/strait.sock", "stateDir": "/var/lib/strait", "mtu": 1450,
    "runtimeConfig": {"ips": ["10.1.2.3/24"], "mac": "02:42:0a:01:02:03",
                      "portMappings": [{"hostPort": 8080, "containerPort": 80,
                                        "protocol": "tcp", "hostIP": "127.0.0.1"}]},
    "args": {"cni": {"ips": ["fd00::3"], "labels": [{"key": "app", "value": "web"}]}},
    "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}],
}, separators=(",", ":")))
write("cni_env_and_args",
      "CNI_COMMAND=ADD\nCNI_CONTAINERID=c1\nCNI_NETNS=/run/netns/x\nCNI_IFNAME=eth0\n"
      "CNI_PATH=/opt/cni/bin\nCNI_ARGS=IgnoreUnknown=1;IP=10.1.2.3/24,fd00::3;"
      "MAC=02-42-0A-01-02-03;K8S_POD_NAME=p\n")

attachment = {"network": "net", "container_id": "c0ffee01", "ifname": "eth0"}
requests = [
    {**attachment, "netns": "/var/run/netns/x", "ips": ["10.1.0.5", "fd00::5"],
     "mac": "02:42:0a:01:00:05", "mtu": 1450, "labels": {"K8S_POD_NAME": "p"}},
    {**attachment, "netns": None},
    {**attachment, "netns": "/var/run/netns/x", "expected_ips": ["10.1.0.5/32"]},
    {"network": "net"},
    {"network": "net", "valid_attachments": [{"container_id": "c1", "ifname": "eth0"}]},
    {"report": {"revision": 42, "grace_secs": 600, "issues": [
        {"kind": "leaked_handle", "handle": "h1", "ips": ["10.1.0.5"], "reason": "netns gone",
         "age_secs": 900},
        {"kind": "orphan_allocation", "block": "10.1.0.0/26", "ip": "10.1.0.6", "handle": "h2"},
        {"kind": "missing_allocation", "handle": "h3", "ip": "10.1.0.7"},
        {"kind": "endpoint_without_handle", "endpoint": "e1", "handle": "h4"},
        {"kind": "duplicate_ip", "ip": "10.1.0.8", "handles": ["h5", "h6"]}]}},
]
for r in requests:
    write("api_requests", json.dumps(r, separators=(",", ":")))
write("api_requests", "")

answers = [
    {"interfaces": [{"name": "strait1a2b", "mac": "ee:ee:ee:ee:ee:ee", "mtu": 1450},
                    {"name": "eth0", "mac": "02:42:0a:01:00:05", "sandbox": "/var/run/netns/x"}],
     "ips": [{"address": "10.1.0.5/32", "gateway": "169.254.1.1", "interface": 1}],
     "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}], "mtu": 1450},
    {"released": [{"container_id": "c1", "ifname": "eth0"}], "errors": ["veth busy"]},
    {"ready": False, "code": 51, "reasons": ["vxlan device missing"]},
    {"pools": [{"cidr": "fd00::/48", "block_prefix": 122, "size": 1208925819614629174706176,
                "used": 3, "blocks_claimed": 1, "blocks_total": 18889465931478580854784}],
     "blocks": [{"cidr": "fd00::/122", "affinity": "n1", "used": 3, "size": 64}]},
    {},
]
for i, a in enumerate(answers):
    write("api_http_response", http(200, json.dumps(a, separators=(",", ":")), chunked=i % 2 == 1))
write("api_http_response", http(503, '{"code":11,"message":"agent is starting"}'))
write("api_http_response", http(500, "not json"))
write("api_http_response", "HTTP/1.1 200 OK\r\n\r\n")

# policy_documents: what `netctl policy apply -f` reads. One of each kind with every
# field, the input forms (YAML stream with empty documents, JSON stream, JSON list,
# kind: List), and a `kubectl get -o yaml` copy with server-set fields.
NETWORK_POLICY = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web
  namespace: prod
  annotations:
    strait.io/audit: "true"
spec:
  podSelector:
    matchLabels: {app: web}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions:
        - {key: team, operator: In, values: [a, b]}
        - {key: legacy, operator: DoesNotExist}
      podSelector: {matchLabels: {role: client}}
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
    ports:
    - {protocol: TCP, port: 80, endPort: 90}
    - {protocol: UDP, port: dns}
    - protocol: SCTP
  - {}
  egress:
  - to:
    - ipBlock: {cidr: "fd00::/48"}
  - ports: [{port: 443}]
"""
CLUSTER_POLICY = """apiVersion: strait.io/v1
kind: ClusterPolicy
metadata:
  name: guard
spec:
  order: 10
  audit: false
  namespaceSelector: {matchLabels: {env: prod}}
  podSelector: {}
  types: [Ingress, Egress]
  ingress:
  - action: Log
  - action: Allow
    protocol: TCP
    from: [{podSelector: {matchLabels: {app: monitor}}}]
    ports: [{port: 9090}, {port: metrics}, {port: 10000, endPort: 10100}]
  - action: Pass
    from: [{namespaceSelector: {}}]
  egress:
  - action: Allow
    protocol: ICMP
    icmp: {type: 8, code: 0}
  - action: Deny
    protocol: 47
    to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}]
"""
NAMESPACE = """apiVersion: v1
kind: Namespace
metadata:
  name: prod
  labels: {env: prod}
spec: {finalizers: [kubernetes]}
status: {phase: Active}
"""
KUBECTL_COPY = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  creationTimestamp: "2024-05-01T10:00:00Z"
  generation: 1
  managedFields:
  - {apiVersion: networking.k8s.io/v1, fieldsType: FieldsV1, manager: kubectl, operation: Update}
  name: deny-all
  resourceVersion: "1234"
  uid: 4a1b6f0e-0000-4000-8000-000000000000
spec:
  podSelector: {}
  policyTypes: [Ingress]
status: {}
"""
for doc in (NETWORK_POLICY, CLUSTER_POLICY, NAMESPACE, KUBECTL_COPY):
    write("policy_documents", doc)
write("policy_documents", "---\n# empty\n---\n" + NAMESPACE + "---\n" + NETWORK_POLICY + "...\n")
ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a", "labels": {"x": "1"}}}
deny_egress = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": "deny-egress"},
               "spec": {"podSelector": {}, "policyTypes": ["Egress"]}}
write("policy_documents", json.dumps(ns) + "\n" + json.dumps(deny_egress))
write("policy_documents", json.dumps([ns, deny_egress], indent="\t"))
write("policy_documents", json.dumps({"apiVersion": "v1", "kind": "List",
                                      "items": [ns, deny_egress]}, separators=(",", ":")))
