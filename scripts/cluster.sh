#!/usr/bin/env bash
# Runs the three-node cluster of docker-compose.yml as local processes on 127.0.0.1, for
# machines without Docker: combined nodes 1..3, clients on 19092 / 29092 / 39092, the metadata
# quorum on 19093 / 29093 / 39093. Node N keeps its data, log (runnel.log) and pid file under
# ./cluster-data/N.
#
#   scripts/cluster.sh up           start every node that is not running, wait until they serve
#   scripts/cluster.sh down         SIGTERM every node, wait until they exit
#   scripts/cluster.sh kill N       SIGKILL node N (a crash)
#   scripts/cluster.sh stop N       SIGTERM node N
#   scripts/cluster.sh start N      start node N
#   scripts/cluster.sh restart N    SIGTERM node N if it runs, then start it
#   scripts/cluster.sh status       which nodes run, and (with kcat) the brokers Metadata lists
#   scripts/cluster.sh logs N       follow node N's log
#
# The binary is target/release/runnel, built first (cargo build --release); RUNNEL_BIN=path
# uses another. RUNNEL_CLUSTER_DIR moves ./cluster-data. Extra settings for every node:
# RUNNEL_CLUSTER_ARGS='--set num.partitions=3'.
set -euo pipefail

cd "$(dirname "$0")/.."
root="$(pwd)"
data_root="${RUNNEL_CLUSTER_DIR:-$root/cluster-data}"
nodes=(1 2 3)
cluster_id="MkU3OEVBNTcwNTJENDM2Qk"
voters="1@127.0.0.1:19093,2@127.0.0.1:29093,3@127.0.0.1:39093"
wait_s=30

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 2
}

client_port() { echo "${1}9092"; }
controller_port() { echo "${1}9093"; }
node_dir() { echo "$data_root/$1"; }
pid_of() {
    local file
    file="$(node_dir "$1")/runnel.pid"
    [ -f "$file" ] && cat "$file"
}

running() {
    local pid
    pid="$(pid_of "$1" || true)"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

check_node() {
    case "${1:-}" in
        1 | 2 | 3) ;;
        *) echo "cluster: node must be 1, 2 or 3 (got '${1:-}')" >&2; exit 2 ;;
    esac
}

binary() {
    if [ -n "${RUNNEL_BIN:-}" ]; then
        echo "$RUNNEL_BIN"
        return
    fi
    cargo build --release --quiet -p runnel-broker --bin runnel >&2
    echo "$root/target/release/runnel"
}

# Whether something accepts TCP connections on 127.0.0.1:$1 (bash's /dev/tcp, no extra tool).
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start_node() {
    local n="$1" bin="$2" dir
    if running "$n"; then
        echo "node $n: already running (pid $(pid_of "$n"))"
        return
    fi
    dir="$(node_dir "$n")"
    mkdir -p "$dir/data"
    local client controller
    client="$(client_port "$n")"
    controller="$(controller_port "$n")"
    # Every RUNNEL_* variable is a setting to the broker, and an unknown one stops it: this
    # script's own are kept from it (other RUNNEL_* settings pass through to every node).
    # shellcheck disable=SC2086 # RUNNEL_CLUSTER_ARGS is a list of arguments
    env -u RUNNEL_BIN -u RUNNEL_CLUSTER_DIR -u RUNNEL_CLUSTER_ARGS setsid "$bin" \
        --data-dir "$dir/data" \
        --set "node.id=$n" \
        --set "process.roles=broker,controller" \
        --set "cluster.id=$cluster_id" \
        --set "controller.quorum.voters=$voters" \
        --set "listeners=PLAINTEXT://127.0.0.1:$client,CONTROLLER://127.0.0.1:$controller" \
        --set "advertised.listeners=PLAINTEXT://127.0.0.1:$client" \
        --set "controller.listener.names=CONTROLLER" \
        ${RUNNEL_CLUSTER_ARGS:-} \
        </dev/null >>"$dir/runnel.log" 2>&1 &
    echo $! >"$dir/runnel.pid"
    echo "node $n: started (pid $!, clients 127.0.0.1:$client, log $dir/runnel.log)"
}

wait_serving() {
    local n deadline=$((SECONDS + wait_s))
    for n in "$@"; do
        while ! port_open "$(client_port "$n")"; do
            if ! running "$n"; then
                echo "node $n: exited; last lines of its log:" >&2
                tail -n 20 "$(node_dir "$n")/runnel.log" >&2
                exit 1
            fi
            if [ "$SECONDS" -ge "$deadline" ]; then
                echo "node $n: not serving on 127.0.0.1:$(client_port "$n") after ${wait_s}s" >&2
                exit 1
            fi
            sleep 0.2
        done
    done
}

stop_node() {
    local n="$1" signal="$2" pid deadline=$((SECONDS + wait_s))
    if ! running "$n"; then
        echo "node $n: not running"
        rm -f "$(node_dir "$n")/runnel.pid"
        return
    fi
    pid="$(pid_of "$n")"
    kill "-$signal" "$pid"
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "node $n: still running ${wait_s}s after SIG$signal (pid $pid)" >&2
            exit 1
        fi
        sleep 0.1
    done
    rm -f "$(node_dir "$n")/runnel.pid"
    echo "node $n: stopped (SIG$signal)"
}

status() {
    local n
    for n in "${nodes[@]}"; do
        if running "$n"; then
            echo "node $n: running (pid $(pid_of "$n")), clients 127.0.0.1:$(client_port "$n")"
        else
            echo "node $n: stopped"
        fi
    done
    if command -v kcat >/dev/null 2>&1; then
        for n in "${nodes[@]}"; do
            if running "$n"; then
                kcat -b "127.0.0.1:$(client_port "$n")" -L -m 5 2>&1 | sed -n '1,/topics:/p' | grep -v 'topics:' || true
                break
            fi
        done
    fi
}

command="${1:-}"
case "$command" in
    up)
        bin="$(binary)"
        for n in "${nodes[@]}"; do start_node "$n" "$bin"; done
        wait_serving "${nodes[@]}"
        echo "cluster: up; bootstrap.servers=127.0.0.1:19092,127.0.0.1:29092,127.0.0.1:39092"
        ;;
    down)
        for n in "${nodes[@]}"; do stop_node "$n" TERM; done
        ;;
    kill)
        check_node "${2:-}"
        stop_node "$2" KILL
        ;;
    stop)
        check_node "${2:-}"
        stop_node "$2" TERM
        ;;
    start)
        check_node "${2:-}"
        start_node "$2" "$(binary)"
        wait_serving "$2"
        ;;
    restart)
        check_node "${2:-}"
        stop_node "$2" TERM
        start_node "$2" "$(binary)"
        wait_serving "$2"
        ;;
    status)
        status
        ;;
    logs)
        check_node "${2:-}"
        exec tail -n 50 -F "$(node_dir "$2")/runnel.log"
        ;;
    *)
        usage
        ;;
esac
