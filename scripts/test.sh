#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: installs what the tests need
# (scripts/setup.sh: kcat, the C toolchain librdkafka builds with, cargo-nextest), runs the
# three-node Docker Compose test (scripts/compose-test.sh), then the unit and black-box tests
# with cargo-nextest (last, so that its summary closes the output). `.ci/run` calls exactly this.
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

exec cargo nextest run --workspace "$@"
