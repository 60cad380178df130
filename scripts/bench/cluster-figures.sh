#!/usr/bin/env bash
# Figures of a three-node cluster on 127.0.0.1 (release build), for docs/performance.md: start-up
# of three fresh nodes, controller failover (kill -9 of the active controller → first successful
# CreateTopics, ROUNDS times) and creating TOPICS topics (one request each, then one request for
# all). Runs tests/examples/cluster_figures.rs, which starts the nodes with the test harness's
# TestCluster. Not part of the test command; every wait is bounded.
#
#   scripts/bench/cluster-figures.sh                 # 3 failover rounds, 1,000 topics
#   ROUNDS=5 TOPICS=200 scripts/bench/cluster-figures.sh
#   RUNNEL_BIN=/path/to/runnel scripts/bench/cluster-figures.sh    # measure another build
set -euo pipefail

cd "$(dirname "$0")/../.."
if [ -z "${RUNNEL_BIN:-}" ]; then
    cargo build --release -p runnel-broker --bin runnel
fi
cargo build --release -p runnel-e2e --example cluster_figures
echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD) $(nproc) cores ${RUNNEL_BIN:-target/release/runnel}"
RUST_LOG="${RUST_LOG:-warn}" target/release/examples/cluster_figures \
    --rounds "${ROUNDS:-3}" --topics "${TOPICS:-1000}"
