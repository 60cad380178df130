#!/usr/bin/env bash
# RF 3 vs RF 1 on one local three-node cluster (release build, 127.0.0.1), for
# docs/performance.md "Replication: RF 3 vs RF 1". In one run, each measurement on an RF 1 topic
# and then on an RF 3 topic (min.insync.replicas=2), one partition each:
#   - acks=all produce throughput, 100 B and 1 KiB records (tests/examples/load.rs produce);
#   - end-to-end latency (send -> a consumer receives it), p50/p99, acks=all at 1,000/s and
#     10,000/s (load.rs latency).
# Prints a markdown table with the RF3/RF1 ratios. The cluster is tests/examples/bench_cluster.rs
# (the test harness's TestCluster). Not part of the test command; every step is bounded.
#
#   scripts/bench/replication.sh                      # 1M x 100 B, 300k x 1 KiB, 10 s per rate
#   RECORDS_SMALL=20000 RECORDS_LARGE=5000 LATENCY_SECONDS=2 scripts/bench/replication.sh  # quick
#   RUNNEL_BIN=/path/to/runnel scripts/bench/replication.sh    # measure another build
#
# Bounds: TIMEOUT_S per load step (default 60); the cluster stops itself after CLUSTER_S
# (default 290), so a run cannot outlive it by much.
set -euo pipefail

cd "$(dirname "$0")/../.."

records_small="${RECORDS_SMALL:-1000000}"
records_large="${RECORDS_LARGE:-300000}"
latency_seconds="${LATENCY_SECONDS:-10}"
timeout_s="${TIMEOUT_S:-60}"
cluster_s="${CLUSTER_S:-290}"

if [ -z "${RUNNEL_BIN:-}" ]; then
    cargo build --release -p runnel-broker --bin runnel
    RUNNEL_BIN="$PWD/target/release/runnel"
fi
export RUNNEL_BIN
cargo build --release -p runnel-e2e --example load --example bench_cluster
load="target/release/examples/load"

work="$(mktemp -d -t runnel-bench-replication.XXXXXX)"
cluster_pid=""
cleanup() {
    # Closing the cluster's standard input stops it (it removes its nodes and data dirs).
    exec 3>&-
    if [ -n "$cluster_pid" ]; then
        wait "$cluster_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

mkfifo "$work/control"
RUST_LOG="${RUST_LOG:-warn}" target/release/examples/bench_cluster --nodes 3 --seconds "$cluster_s" \
    <"$work/control" >"$work/cluster.out" 2>"$work/cluster.log" &
cluster_pid=$!
exec 3>"$work/control"
bootstrap=""
for _ in $(seq 1 600); do
    bootstrap="$(sed -n 's/^bootstrap=//p' "$work/cluster.out")"
    [ -n "$bootstrap" ] && break
    kill -0 "$cluster_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$bootstrap" ]; then
    echo "bench: the cluster did not start" >&2
    cat "$work/cluster.log" >&2
    exit 1
fi

# Topic settings per replication factor.
topic_args() { # rf
    if [ "$1" = 3 ]; then
        echo "--partitions 1 --replication-factor 3 --topic-config min.insync.replicas=2"
    else
        echo "--partitions 1 --replication-factor 1"
    fi
}

step() { # label, then the load arguments; prints load's output
    local out
    if ! out="$(timeout "$((timeout_s + 30))" "$load" "$@" --bootstrap "$bootstrap" \
        --timeout-s "$timeout_s")"; then
        echo "bench: load $* failed; cluster log tail:" >&2
        tail -n 50 "$work/cluster.log" >&2
        exit 1
    fi
    echo "$out" >&2
    echo "$out"
}

value() { # name, text: the number after " name=" in load's output
    sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<" $2" | head -n 1
}

declare -A figure
for size in 100 1024; do
    records="$records_small"
    [ "$size" = 1024 ] && records="$records_large"
    for rf in 1 3; do
        # shellcheck disable=SC2046
        out="$(step produce --topic "produce-$size-rf$rf" $(topic_args "$rf") \
            --records "$records" --size "$size" --acks -1)"
        figure["produce-$size-rf$rf"]="$(value records_per_s "$out")"
    done
done
for rate in 1000 10000; do
    for rf in 1 3; do
        topic="latency-$rate-rf$rf"
        # shellcheck disable=SC2046
        step create --topic "$topic" $(topic_args "$rf") >/dev/null
        out="$(step latency --topic "$topic" --rate "$rate" --seconds "$latency_seconds" \
            --size 100 --acks -1)"
        figure["p50-$rate-rf$rf"]="$(value e2e_p50_ms "$out")"
        figure["p99-$rate-rf$rf"]="$(value e2e_p99_ms "$out")"
    done
done

ratio() { # rf1 rf3
    awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0) printf "%.2f", b / a; else print "n/a" }'
}
row() { # label key
    local rf1="${figure[$2-rf1]}" rf3="${figure[$2-rf3]}"
    printf '| %s | %s | %s | %s |\n' "$1" "$rf1" "$rf3" "$(ratio "$rf1" "$rf3")"
}

echo
echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD) $(nproc) cores $RUNNEL_BIN"
echo "# 3 nodes on 127.0.0.1, one partition per topic; RF 3 with min.insync.replicas=2;"
echo "# produce: $records_small x 100 B, $records_large x 1 KiB; latency: ${latency_seconds} s per rate"
echo
echo "| acks=all | RF 1 | RF 3 | RF3/RF1 |"
echo "|---|---:|---:|---:|"
row "produce 100 B, records/s" produce-100
row "produce 1 KiB, records/s" produce-1024
row "end-to-end p50 at 1,000/s, ms" p50-1000
row "end-to-end p99 at 1,000/s, ms" p99-1000
row "end-to-end p50 at 10,000/s, ms" p50-10000
row "end-to-end p99 at 10,000/s, ms" p99-10000
