#!/usr/bin/env bash
# Builds the `runnel:latest` Docker image: a statically linked release `runnel` (glibc,
# `+crt-static`, built on the host into target/static so the normal build stays warm) in a
# `FROM scratch` image. No image is pulled. The build context is a temporary directory holding
# only the binary and docker/nsswitch.conf.
#
#   bash scripts/docker-build.sh            # then: docker compose up -d (or docker-compose up -d)
#   RUNNEL_IMAGE=runnel:dev bash scripts/docker-build.sh
set -euo pipefail

cd "$(dirname "$0")/.."
image="${RUNNEL_IMAGE:-runnel:latest}"
target=x86_64-unknown-linux-gnu

if ! command -v docker >/dev/null 2>&1; then
    echo "docker-build: docker is not installed" >&2
    exit 1
fi

echo "docker-build: building a static runnel (target/static)"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked \
    --target "$target" --target-dir target/static -p runnel-broker --bin runnel
binary="target/static/$target/release/runnel"

# A static binary has no interpreter and no needed libraries; a dynamic one would not start in
# an empty image, so refuse it here rather than in the container.
if readelf -l "$binary" 2>/dev/null | grep -q 'Requesting program interpreter'; then
    echo "docker-build: $binary is dynamically linked" >&2
    exit 1
fi

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$binary" "$context/runnel"
cp docker/nsswitch.conf "$context/nsswitch.conf"
docker build --quiet -f docker/Dockerfile -t "$image" "$context"
echo "docker-build: built $image ($(du -h "$binary" | cut -f1) binary)"
