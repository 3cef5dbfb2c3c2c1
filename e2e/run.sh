#!/usr/bin/env bash
# `make e2e`: build the cluster once (e2e/build-cluster.sh, cached in $E2E_CACHE), use the image
# of `make image` (built when missing), start the cluster (e2e/cluster.sh), import the image,
# run e2e/rollout.py inside the cluster's network namespace, and always stop the cluster.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
e2e/build-cluster.sh > /dev/null
tag=$(awk -F'"' '/^appVersion:/{print $2}' deploy/helm/espnet-serve/Chart.yaml)
[ -e "build/image/image-$tag.tar" ] || docker/build-image.sh
trap 'e2e/cluster.sh down' EXIT
started=$(date +%s)
e2e/cluster.sh up
e2e/cluster.sh load "build/image/image-$tag.tar"
echo "cluster up and image imported in $(( $(date +%s) - started )) s"
e2e/cluster.sh run .venv/bin/python -m e2e.rollout --image-tag "$tag" "$@"
