#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: installs what the tests need
# (scripts/setup.sh: kcat, the C toolchain librdkafka builds with, cargo-nextest), runs the
# three-node Docker Compose test (scripts/compose-test.sh), the chaos short run
# (scripts/chaos.sh), then the unit and black-box tests with cargo-nextest (last, so that its
# summary closes the output). `.ci/run` calls exactly this.
#
# Extra arguments go to `cargo nextest run` (e.g. `scripts/test.sh -E 'binary(restart)'`) and
# skip the compose test. The compose test runs in CI (CI=true), where Docker is part of the
# machine and its absence is a failure; elsewhere it runs if a Docker daemon answers, and is
# skipped with a notice if none does. RUNNEL_SKIP_COMPOSE_TEST=1 skips it.
set -euo pipefail

cd "$(dirname "$0")/.."
bash scripts/setup.sh

if [ "$#" -gt 0 ] || [ "${RUNNEL_SKIP_COMPOSE_TEST:-}" = 1 ]; then
    :
elif [ "${CI:-}" = true ] || { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }; then
    bash scripts/compose-test.sh
else
    echo "test: compose test skipped: no Docker daemon here (CI runs it)"
fi

# The chaos short run (scripts/chaos.sh, docs/reliability.md) needs root and network
# namespaces: CI has both and must run it; elsewhere it is skipped with a notice.
# RUNNEL_SKIP_CHAOS=1 skips it.
if [ "$#" -gt 0 ] || [ "${RUNNEL_SKIP_CHAOS:-}" = 1 ]; then
    :
elif [ "$(id -u)" -eq 0 ] && ip netns list >/dev/null 2>&1; then
    bash scripts/chaos.sh
elif [ "${CI:-}" = true ]; then
    echo "test: the chaos run needs root and ip netns, which CI must provide" >&2
    exit 1
else
    echo "test: chaos run skipped: needs root and ip netns (CI runs it)"
fi

exec cargo nextest run --workspace "$@"
