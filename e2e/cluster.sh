#!/usr/bin/env bash
# A single-node Kubernetes 1.20 for `make e2e`, wholly inside a network namespace of its own
# (espnet-e2e): etcd, kube-apiserver (PodSecurityPolicy admission), kube-controller-manager,
# kube-scheduler, containerd + runc, kubelet. Pods get 127.1.0.N through e2e/cni-loopback-veth;
# nothing listens outside the namespace. Binaries: e2e/build-cluster.sh ($E2E_CACHE/bin).
#   cluster.sh up                 start everything, wait for the node to be Ready
#   cluster.sh load IMAGE.tar     import a docker-archive into containerd's k8s.io namespace
#   cluster.sh run CMD...         run CMD in the cluster's namespace (KUBECONFIG, PATH set)
#   cluster.sh down               stop every process it started (by PID), unmount, remove state
set -euo pipefail
E2E=$(cd "$(dirname "$0")" && pwd)
CACHE=${E2E_CACHE:-$HOME/.cache/espnet-serve-e2e}
RUN=$CACHE/run
NETNS=espnet-e2e
NS_PATH=/run/netns/$NETNS
BIN=$CACHE/bin
export E2E_CNI_STATE=$RUN/cni/state
export KUBECONFIG=$RUN/kubeconfig PATH=$BIN:$PATH
innet() { nsenter --net="$NS_PATH" "$@"; }

start() {  # start NAME CMD...: in the namespace, log and PID under $RUN (nsenter execs CMD)
  local name=$1; shift
  nsenter --net="$NS_PATH" "$@" > "$RUN/$name.log" 2>&1 &
  echo $! > "$RUN/$name.pid"
}

wait_for() {  # wait_for SECONDS DESCRIPTION CMD...
  local t=$1 what=$2; shift 2
  for _ in $(seq "$t"); do "$@" > /dev/null 2>&1 && return 0; sleep 1; done
  echo "timed out waiting for $what" >&2; return 1
}

network() {
  ip netns add "$NETNS"
  ip -n "$NETNS" link set lo up
  # Only 127.0.0.1 and the node's 127.2.0.1 stay local: the rest of 127/8 routes to the pods.
  ip -n "$NETNS" route del local 127.0.0.0/8 dev lo table local
  ip -n "$NETNS" addr add 127.2.0.1/32 dev lo
  innet sysctl -qw net.ipv4.conf.all.route_localnet=1 net.ipv4.ip_forward=1
}

pki() {
  local p=$RUN/pki; mkdir -p "$p"
  openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
  openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=e2e-ca -keyout "$p/ca.key" -out "$p/ca.crt" 2>/dev/null
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=kube-apiserver -CA "$p/ca.crt" -CAkey "$p/ca.key" \
    -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout "$p/api.key" -out "$p/api.crt" 2>/dev/null
  # The API server's client certificate towards the kubelet (exec, logs, port-forward).
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" \
    -CA "$p/ca.crt" -CAkey "$p/ca.key" -keyout "$p/kubelet-client.key" -out "$p/kubelet-client.crt" 2>/dev/null
  token=$(openssl rand -hex 16)
  echo "$token,admin,admin,system:masters" > "$p/tokens.csv"
  cat > "$KUBECONFIG" <<KC
apiVersion: v1
kind: Config
clusters: [{name: e2e, cluster: {server: "https://127.0.0.1:16443", certificate-authority: "$p/ca.crt"}}]
users: [{name: admin, user: {token: "$token"}}]
contexts: [{name: e2e, context: {cluster: e2e, user: admin}}]
current-context: e2e
KC
}

pause_image() {  # the sandbox image: upstream's pause.c built by build-cluster.sh, no registry
  local ctx=$RUN/pause; mkdir -p "$ctx"; cp "$BIN/pause" "$ctx/pause"
  printf 'FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n' > "$ctx/Containerfile"
  CONTAINERS_CONF=$E2E/../docker/containers.conf podman build -q -t localhost/pause:3.2 "$ctx" > /dev/null
  CONTAINERS_CONF=$E2E/../docker/containers.conf podman save -q --format docker-archive -o "$ctx/pause.tar" localhost/pause:3.2
  load "$ctx/pause.tar"
}

load() {
  innet ctr --address "$RUN/containerd.sock" -n k8s.io images import --no-unpack=false "$1" > /dev/null
}

up() {
  [ ! -e "$NS_PATH" ] || { echo "$NETNS exists: run '$0 down' first" >&2; exit 1; }
  rm -rf "$RUN"; mkdir -p "$RUN/cni/bin" "$RUN/cni/net.d" "$RUN/kubelet"
  # Paths the kubelet creates whatever --root-dir says: removed by `down` unless they were here.
  for d in /var/lib/kubelet /var/log/pods /var/log/containers; do [ -e "$d" ] || echo "$d" >> "$RUN/stray-dirs"; done
  ls /run/netns > "$RUN/netns-before" 2>/dev/null || true
  network; pki
  start etcd etcd --data-dir "$RUN/etcd" --listen-client-urls http://127.0.0.1:12379 \
    --advertise-client-urls http://127.0.0.1:12379 --listen-peer-urls http://127.0.0.1:12380 \
    --initial-advertise-peer-urls http://127.0.0.1:12380 --initial-cluster default=http://127.0.0.1:12380
  local p=$RUN/pki
  start apiserver kube-apiserver --etcd-servers=http://127.0.0.1:12379 --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 --secure-port=16443 --insecure-port=0 --tls-cert-file="$p/api.crt" \
    --tls-private-key-file="$p/api.key" --token-auth-file="$p/tokens.csv" --client-ca-file="$p/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$p/sa.pub" \
    --service-account-signing-key-file="$p/sa.key" --service-cluster-ip-range=10.96.0.0/24 \
    --authorization-mode=Node,RBAC --allow-privileged=true --enable-admission-plugins=PodSecurityPolicy \
    --kubelet-client-certificate="$p/kubelet-client.crt" --kubelet-client-key="$p/kubelet-client.key" \
    --kubelet-preferred-address-types=Hostname
  wait_for 90 "kube-apiserver" innet kubectl get --raw=/readyz
  innet kubectl apply -f "$E2E/psp.yaml" > /dev/null
  cp "$E2E/cni-loopback-veth" "$BIN/loopback" "$RUN/cni/bin/"
  echo '{"cniVersion": "0.4.0", "name": "e2e", "plugins": [{"type": "cni-loopback-veth"}]}' > "$RUN/cni/net.d/10-e2e.conflist"
  sed -e "s|@RUN@|$RUN|g" -e "s|@CACHE@|$CACHE|g" "$E2E/containerd.toml.in" > "$RUN/containerd.toml"
  sed -e "s|@RUN@|$RUN|g" "$E2E/kubelet.yaml.in" > "$RUN/kubelet.yaml"
  start containerd containerd --config "$RUN/containerd.toml"
  wait_for 30 "containerd" innet ctr --address "$RUN/containerd.sock" version
  pause_image
  local kc=$KUBECONFIG
  start controller-manager kube-controller-manager --kubeconfig="$kc" --authentication-kubeconfig="$kc" \
    --authorization-kubeconfig="$kc" --leader-elect=false --bind-address=127.0.0.1 --secure-port=10257 --port=0 \
    --use-service-account-credentials=false --service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
    --controllers='*,-nodeipam,-service,-route,-cloud-node-lifecycle'
  start scheduler kube-scheduler --kubeconfig="$kc" --authentication-kubeconfig="$kc" \
    --authorization-kubeconfig="$kc" --leader-elect=false --bind-address=127.0.0.1 --secure-port=10259 --port=0
  start kubelet kubelet --config="$RUN/kubelet.yaml" --kubeconfig="$kc" --container-runtime=remote \
    --container-runtime-endpoint="unix://$RUN/containerd.sock" --root-dir="$RUN/kubelet" \
    --cert-dir="$RUN/kubelet/pki" --hostname-override=localhost
  wait_for 120 "the node to be Ready" innet kubectl wait --for=condition=Ready node/localhost --timeout=1s
  innet kubectl get nodes -o wide
}

down() {
  if [ -e "$RUN/kubelet.pid" ] && [ -e "$KUBECONFIG" ]; then
    innet kubectl delete pods --all-namespaces --all --grace-period=5 --timeout=60s > /dev/null 2>&1 || true
  fi
  for name in kubelet scheduler controller-manager; do stop "$name"; done
  if [ -S "$RUN/containerd.sock" ]; then  # containers the kubelet left behind
    for t in $(innet ctr --address "$RUN/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null); do
      innet ctr --address "$RUN/containerd.sock" -n k8s.io tasks kill -s SIGKILL "$t" 2>/dev/null || true
    done
    sleep 2
    for c in $(innet ctr --address "$RUN/containerd.sock" -n k8s.io containers ls -q 2>/dev/null); do
      innet ctr --address "$RUN/containerd.sock" -n k8s.io tasks delete "$c" > /dev/null 2>&1 || true
      innet ctr --address "$RUN/containerd.sock" -n k8s.io containers delete "$c" > /dev/null 2>&1 || true
    done
  fi
  for name in containerd apiserver etcd; do stop "$name"; done
  if ls "$RUN"/*.pid > /dev/null 2>&1; then echo "still running: $(cat "$RUN"/*.pid)" >&2; exit 1; fi
  # Mounts under the run directory (pod volumes, container root filesystems, sandbox netns).
  grep -o " $RUN[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  # The pods' network namespaces (containerd's cni-*) that a killed sandbox left behind.
  for n in $(ls /run/netns 2>/dev/null | grep '^cni-'); do
    grep -qx "$n" "$RUN/netns-before" 2>/dev/null || ip netns del "$n" 2>/dev/null || true
  done
  [ ! -e "$NS_PATH" ] || ip netns del "$NETNS"
  [ ! -e "$RUN/stray-dirs" ] || xargs -r rm -rf < "$RUN/stray-dirs"
  rm -rf "$RUN"
}

stop() {  # stop NAME: SIGTERM its PID, SIGKILL after 20 s
  local f=$RUN/$1.pid pid
  [ -e "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$f"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  load) load "$2" ;;
  run) shift; innet "$@" ;;
  *) echo "usage: $0 up|down|load IMAGE.tar|run CMD..." >&2; exit 2 ;;
esac
