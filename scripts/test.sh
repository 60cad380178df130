#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: installs what the tests need
# (scripts/setup.sh: kcat, the C toolchain librdkafka builds with, cargo-nextest), then the unit
# and black-box tests with cargo-nextest. Extra arguments go to `cargo nextest run`
# (e.g. `scripts/test.sh -E 'binary(restart)'`). `.ci/run` calls exactly this.
set -euo pipefail

cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec cargo nextest run --workspace "$@"
