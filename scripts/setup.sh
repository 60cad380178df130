#!/usr/bin/env bash
# Installs what the tests and scripts need on a fresh Debian machine that has the Rust toolchain.
# Idempotent: installs only what is missing. Runs as root (no sudo) or via sudo, with no stdin.
#
#   kcat                     scripts/smoke.sh
#   build-essential, pkg-config, zlib1g-dev
#                            librdkafka, built from source by rdkafka-sys for the e2e tests
#                            (features tokio + zstd: zstd is vendored, zlib comes from the system)
#   cargo-nextest            the test runner of .ci/run
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

apt_packages=(build-essential pkg-config zlib1g-dev kcat)
missing=()
for package in "${apt_packages[@]}"; do
    if ! dpkg -s "$package" >/dev/null 2>&1; then
        missing+=("$package")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get update -qq </dev/null
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
else
    echo "setup: apt packages present (${apt_packages[*]})"
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
    echo "setup: installing cargo-nextest"
    cargo install cargo-nextest --locked </dev/null
else
    echo "setup: $(cargo-nextest --version 2>/dev/null | head -n1 || echo cargo-nextest present)"
fi
