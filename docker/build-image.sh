#!/usr/bin/env bash
# `make image`: the Bento of the embedded default model as an OCI image, built offline with podman.
#   1. base: Debian bookworm + Python 3.11 + tini from debootstrap (docker/base.sh), once;
#   2. the Bento (espnet-serve build --bento) in a model/Bento store under build/image/;
#   3. the context: the Bento + its models (docker/build_context.py) and a wheelhouse of every
#      pin of $IMAGE_LOCK (pip's cache or the registry, here on the host; sdists built here);
#   4. podman build (docker/Containerfile; pip --no-index inside), layer times from the last commit;
#   5. build/image/image-$IMAGE_TAG.tar (docker-archive) and .json: sizes on disk (podman) and
#      compressed (gzip layers, as a registry stores them).
# Env: IMAGE (localhost/espnet-serve), IMAGE_TAG (the chart's appVersion), IMAGE_LOCK
# (requirements/runtime-lock.txt), BASE_IMAGE.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export CONTAINERS_CONF=$ROOT/docker/containers.conf
IMAGE=${IMAGE:-localhost/espnet-serve}
IMAGE_TAG=${IMAGE_TAG:-$(awk -F'"' '/^appVersion:/{print $2}' deploy/helm/espnet-serve/Chart.yaml)}
IMAGE_LOCK=${IMAGE_LOCK:-requirements/runtime-lock.txt}
export BASE_IMAGE=${BASE_IMAGE:-localhost/espnet-serve-base:bookworm-py3.11}
WORK=$ROOT/build/image
BIN=$ROOT/.venv/bin
mkdir -p "$WORK/base" "$WORK/context/wheels"

command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null || {
  apt-get update -qq && apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends podman runc debootstrap; }
WORK=$WORK/base docker/base.sh

export BENTOML_HOME=$WORK/bentoml HF_HUB_OFFLINE=1 BENTOML_DO_NOT_TRACK=true
"$BIN"/espnet-serve build src/espnet_serve/assets/digits_asr.tar.gz --name espnet-digits-asr \
  --language en --trust-user-code --bento | tee "$WORK/bento.out"
bento=$(sed -n 's/^Bento: //p' "$WORK/bento.out")
"$BIN"/python docker/build_context.py "$bento" "$WORK/context"

wheels=$WORK/context/wheels
"$BIN"/pip wheel -q --no-deps -r "$IMAGE_LOCK" -w "$wheels"
"$BIN"/pip download -q --no-deps -d "$wheels" "pip==$("$BIN"/pip --version | awk '{print $2}')"
grep -E '^[A-Za-z0-9]' "$IMAGE_LOCK" > "$wheels/requirements.txt"

epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
podman build -q --timestamp "$epoch" --build-arg BASE_IMAGE="$BASE_IMAGE" -f docker/Containerfile \
  -t "$IMAGE:$IMAGE_TAG" "$WORK/context" > "$WORK/image.id"
podman image prune -f > /dev/null

# A docker-archive for `ctr images import` (make e2e); the size of the gzip layers of an OCI
# archive (what a registry stores) as the compressed size.
out=$WORK/image-$IMAGE_TAG
rm -f "$out.tar" "$out.oci.tar"
podman save -q --format docker-archive -o "$out.tar" "$IMAGE:$IMAGE_TAG"
podman push -q --compression-format gzip "$IMAGE:$IMAGE_TAG" "oci-archive:$out.oci.tar:$IMAGE:$IMAGE_TAG"
disk=$(podman image inspect --format '{{.Size}}' "$IMAGE:$IMAGE_TAG")
compressed=$(stat -c %s "$out.oci.tar")
rm -f "$out.oci.tar"
printf '{"image": "%s", "id": "%s", "bento": "%s", "lock": "%s", "disk_bytes": %s, "compressed_bytes": %s}\n' \
  "$IMAGE:$IMAGE_TAG" "$(cat "$WORK/image.id")" "$bento" "$IMAGE_LOCK" "$disk" "$compressed" \
  | tee "$out.json"
