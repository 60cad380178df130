#!/usr/bin/env bash
# Producer and consumer throughput against a release runnel on a temp data dir, with the rdkafka
# load generator (tests/examples/load.rs). Prints a table. Not part of the test command.
#
#   scripts/bench/produce-consume.sh            # 500k x 100 B and 200k x 1 KiB, acks=1 and -1
#   RECORDS_SMALL=100000 RECORDS_LARGE=50000 scripts/bench/produce-consume.sh   # quicker
#
# Each run is bounded (TIMEOUT_S per load step, default 300 s).
set -euo pipefail

cd "$(dirname "$0")/../.."

records_small="${RECORDS_SMALL:-500000}"
records_large="${RECORDS_LARGE:-200000}"
timeout_s="${TIMEOUT_S:-300}"

cargo build --release -p runnel-broker --bin runnel
cargo build --release -p runnel-e2e --example load
bin="${RUNNEL_BIN:-target/release/runnel}"
load="target/release/examples/load"

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
work="$(mktemp -d -t runnel-bench.XXXXXX)"
broker_pid=""
cleanup() {
    if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
        kill -TERM "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

"$bin" --listen "127.0.0.1:$port" --advertise "127.0.0.1:$port" --data-dir "$work/data" \
    --set num.partitions=1 >"$work/broker.log" 2>&1 &
broker_pid=$!
for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$broker_pid" 2>/dev/null || { cat "$work/broker.log" >&2; exit 1; }
    sleep 0.1
done

results="$work/results.txt"
: >"$results"
run() { # mode topic records size acks
    local line
    if ! line="$(timeout "$((timeout_s + 30))" "$load" "$1" --bootstrap "127.0.0.1:$port" \
        --topic "$2" --records "$3" --size "$4" --acks "$5" --timeout-s "$timeout_s")"; then
        echo "bench: $1 on $2 failed; broker log tail:" >&2
        tail -n 50 "$work/broker.log" >&2
        exit 1
    fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$4" "$5" "$line" >>"$results"
    echo "$1 $2: $line"
}

for acks in 1 -1; do
    run produce "small-acks$acks" "$records_small" 100 "$acks"
    run produce "large-acks$acks" "$records_large" 1024 "$acks"
done
for acks in 1 -1; do
    run consume "small-acks$acks" "$records_small" 100 "$acks"
    run consume "large-acks$acks" "$records_large" 1024 "$acks"
done

echo
printf '%-8s %-16s %6s %5s %12s %10s %9s\n' mode topic size acks records/s MB/s seconds
while IFS=$'\t' read -r mode topic size acks line; do
    rps="$(sed -n 's/.*records_per_s=\([0-9.]*\).*/\1/p' <<<"$line")"
    mbps="$(sed -n 's/.*mb_per_s=\([0-9.]*\).*/\1/p' <<<"$line")"
    secs="$(sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' <<<"$line")"
    printf '%-8s %-16s %6s %5s %12s %10s %9s\n' "$mode" "$topic" "$size" "$acks" "$rps" "$mbps" "$secs"
done <"$results"
