#!/usr/bin/env bash
# The compose cluster end to end, with kcat from the host: builds the image
# (scripts/docker-build.sh), starts docker-compose.yml, waits until Metadata lists three
# brokers, produces keyed records through one broker and reads them back through another, stops
# runnel-2, waits until the others list two brokers, produces to a new topic and reads it back,
# starts runnel-2 again and reads the first topic back whole through it, and always tears the
# cluster down with its volumes. Every wait has a deadline.
#
# Needs Docker with Compose (`docker compose` or `docker-compose`) and kcat; without them it
# says so and fails: scripts/test.sh runs it where Docker is expected (CI), never silently.
# RUNNEL_SKIP_IMAGE_BUILD=1 reuses an image built before.
set -euo pipefail

cd "$(dirname "$0")/.."
project="runnel-compose-test"
wait_s=90

fail() {
    echo "compose-test: FAILED: $*" >&2
    exit 1
}

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
    fail "Docker is unavailable (no docker command, or its daemon does not answer)"
fi
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
else
    fail "neither \`docker compose\` nor \`docker-compose\` is installed"
fi
command -v kcat >/dev/null 2>&1 || fail "kcat is not installed (scripts/setup.sh installs it)"
compose+=(-p "$project" -f docker-compose.yml)

if [ "${RUNNEL_SKIP_IMAGE_BUILD:-}" != 1 ]; then
    bash scripts/docker-build.sh
fi

cleanup() {
    local status=$?
    if [ "$status" -ne 0 ]; then
        echo "compose-test: container logs (last 40 lines each):" >&2
        "${compose[@]}" logs --no-color --tail 40 >&2 || true
    fi
    "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
    exit "$status"
}
trap cleanup EXIT

# The number of brokers Metadata from localhost:$1 lists (0 if it does not answer).
brokers_listed() {
    timeout 15 kcat -b "localhost:$1" -L -m 5 2>/dev/null |
        sed -n 's/^ \([0-9]*\) brokers:$/\1/p' | head -n 1 | grep . || echo 0
}

# Waits until Metadata from every port in $2... lists $1 brokers.
wait_brokers() {
    local want="$1" port deadline=$((SECONDS + wait_s))
    shift
    for port in "$@"; do
        until [ "$(brokers_listed "$port")" = "$want" ]; do
            [ "$SECONDS" -lt "$deadline" ] ||
                fail "localhost:$port lists $(brokers_listed "$port") brokers after ${wait_s}s, expected $want"
            sleep 1
        done
    done
    echo "compose-test: $want brokers listed by localhost:$*"
}

# Produces $3 keyed records `key-i:<topic>-i` to topic $2 through localhost:$1 (acks=all).
produce() {
    seq 1 "$3" | sed "s/.*/key-&:$2-&/" |
        timeout 60 kcat -b "localhost:$1" -P -t "$2" -K: -X acks=all -X message.timeout.ms=30000 ||
        fail "producing to $2 through localhost:$1"
}

# Reads topic $2 from the beginning through localhost:$1 and checks it holds exactly the $3
# records `produce` wrote, in some order across partitions.
check_consumed() {
    local got expected
    expected="$(seq 1 "$3" | sed "s/.*/key-&:$2-&/" | sort)"
    got="$(timeout 60 kcat -b "localhost:$1" -C -t "$2" -o beginning -e -q -f '%k:%s\n' | sort)" ||
        fail "consuming $2 through localhost:$1"
    [ "$got" = "$expected" ] ||
        fail "$2 through localhost:$1: read $(echo "$got" | grep -c . || true) records, expected $3: $(diff <(echo "$expected") <(echo "$got") | head -n 10)"
    echo "compose-test: $2 read back through localhost:$1 ($3 records)"
}

"${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
"${compose[@]}" up -d
wait_brokers 3 19092 29092 39092
# Asked on the EXTERNAL listener, every broker is advertised as the host reaches it.
metadata="$(timeout 15 kcat -b localhost:29092 -L -m 5)" || fail "Metadata from localhost:29092"
for n in 1 2 3; do
    grep -q "broker $n at localhost:${n}9092" <<<"$metadata" ||
        fail "Metadata from localhost:29092 does not list broker $n at localhost:${n}9092: $metadata"
done

produce 19092 compose-before 300
check_consumed 39092 compose-before 300

"${compose[@]}" stop runnel-2
wait_brokers 2 19092 39092
# A topic created now is placed on the two brokers left.
produce 39092 compose-after 300
check_consumed 19092 compose-after 300

# Back: three brokers again, and the first topic (some of it on runnel-2) reads back whole.
"${compose[@]}" start runnel-2
wait_brokers 3 19092 29092 39092
check_consumed 29092 compose-before 300

echo "compose-test: passed"
