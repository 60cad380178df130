#!/usr/bin/env bash
# Smoke test with kcat: start a release runnel on a free port with a temp data dir, list
# metadata, produce a few lines, consume them back from the beginning, compare, stop.
# Exits non-zero on any mismatch. Needs kcat (scripts/setup.sh installs it).
set -euo pipefail

cd "$(dirname "$0")/.."

cargo build --release -p runnel-broker --bin runnel
bin="${RUNNEL_BIN:-target/release/runnel}"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port="$(free_port)"
work="$(mktemp -d -t runnel-smoke.XXXXXX)"
broker_pid=""

cleanup() {
    if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
        kill -TERM "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "smoke: FAIL: $*" >&2
    echo "--- broker log ---" >&2
    cat "$work/broker.log" >&2 || true
    exit 1
}

"$bin" --listen "127.0.0.1:$port" --advertise "127.0.0.1:$port" --data-dir "$work/data" \
    >"$work/broker.log" 2>&1 &
broker_pid=$!

# Ready when the port accepts TCP (up to 20 s).
for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        break
    fi
    kill -0 "$broker_pid" 2>/dev/null || fail "broker exited before accepting connections"
    sleep 0.1
done
(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || fail "broker not accepting on port $port"

kcat_common=(-b "127.0.0.1:$port" -X api.version.request=true)
topic="smoke"

kcat "${kcat_common[@]}" -L >"$work/metadata.txt" 2>&1 || fail "kcat -L: $(cat "$work/metadata.txt")"
grep -q "1 brokers" "$work/metadata.txt" || fail "kcat -L does not list 1 broker: $(cat "$work/metadata.txt")"

printf 'one\ntwo\nthree\nfour score and seven\nfive\n' >"$work/sent.txt"
# One record per line from stdin (a file argument would be sent as one record).
kcat "${kcat_common[@]}" -P -t "$topic" -p 0 -X acks=all <"$work/sent.txt" \
    || fail "kcat -P failed"

timeout 60 kcat "${kcat_common[@]}" -C -t "$topic" -p 0 -o beginning -e -q >"$work/received.txt" \
    || fail "kcat -C failed"

if ! diff -u "$work/sent.txt" "$work/received.txt"; then
    fail "records read back differ from records sent"
fi

kill -TERM "$broker_pid"
status=0
wait "$broker_pid" || status=$?
broker_pid=""
[ "$status" -eq 0 ] || fail "broker exited with $status after SIGTERM"

echo "smoke: OK ($(wc -l <"$work/sent.txt") records round-tripped through kcat)"
