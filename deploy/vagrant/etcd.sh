#!/usr/bin/env bash
# Provision the etcd VM: Debian's etcd-server, listening on the private network.
# Environment: ETCD_IP (this VM's private address).
set -euo pipefail
ip=${ETCD_IP:?ETCD_IP: the private address of this VM}

export DEBIAN_FRONTEND=noninteractive
if ! command -v etcd >/dev/null; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends etcd-server etcd-client
fi
# Debian's unit reads /etc/default/etcd.
cat >/etc/default/etcd <<CONF
ETCD_NAME=etcd
ETCD_DATA_DIR=/var/lib/etcd/default
ETCD_LISTEN_CLIENT_URLS=http://$ip:2379,http://127.0.0.1:2379
ETCD_ADVERTISE_CLIENT_URLS=http://$ip:2379
ETCD_LISTEN_PEER_URLS=http://$ip:2380
ETCD_INITIAL_ADVERTISE_PEER_URLS=http://$ip:2380
ETCD_INITIAL_CLUSTER=etcd=http://$ip:2380
ETCD_INITIAL_CLUSTER_STATE=new
CONF
systemctl enable etcd
systemctl restart etcd
for _ in $(seq 1 60); do
    if ETCDCTL_API=3 etcdctl --endpoints "http://$ip:2379" endpoint health >/dev/null 2>&1; then
        echo "etcd ready on http://$ip:2379"
        exit 0
    fi
    sleep 1
done
echo "etcd did not become healthy on http://$ip:2379" >&2
exit 1
