#!/usr/bin/env bash
# The local CPU base image: Debian bookworm (minbase) + Python 3.11 + tini, made with debootstrap
# from the Debian mirror apt already uses, imported into podman as $BASE_IMAGE. No registry.
# MIRROR may point at a snapshot (e.g. http://snapshot.debian.org/archive/debian/20250520T000000Z)
# to rebuild the same packages later. Skipped when the image exists.
set -euo pipefail
BASE_IMAGE=${BASE_IMAGE:-localhost/espnet-serve-base:bookworm-py3.11}
WORK=${WORK:?set WORK (a scratch directory)}
if podman image exists "$BASE_IMAGE"; then echo "base: $BASE_IMAGE (exists)"; exit 0; fi
MIRROR=${MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources)}
rootfs=$WORK/rootfs
rm -rf "$rootfs"
# python3-minimal + libpython3.11-stdlib: the interpreter and its standard library (venv included);
# tini: PID 1 that forwards SIGTERM; libsndfile1: soundfile's C library.
debootstrap --variant=minbase --include=python3-minimal,libpython3.11-stdlib,tini,libsndfile1 \
  bookworm "$rootfs" "${MIRROR:?no apt mirror found}" > "$WORK/debootstrap.log"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*
# Fixed file times and owners, so the same packages give the same layer.
tar --sort=name --mtime=@"${SOURCE_DATE_EPOCH:-0}" --numeric-owner -C "$rootfs" -cf "$WORK/rootfs.tar" .
podman import --change 'CMD ["/bin/bash"]' "$WORK/rootfs.tar" "$BASE_IMAGE" > /dev/null
rm -rf "$rootfs" "$WORK/rootfs.tar"
echo "base: $BASE_IMAGE"
