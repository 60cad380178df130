#!/usr/bin/env bash
# Runs the fuzz targets in fuzz/ (docs/fuzzing.md): scripts/fuzz.sh [target|all] [seconds]
#
# Builds with cargo-fuzz (installed if missing) on the stable toolchain, with RUSTC_BOOTSTRAP=1
# for the nightly-only flags, then runs each target in turn for `seconds` (default 600), one
# job, on a scratch copy of its seed corpus so fuzz/corpus/ stays small. Exits non-zero on the
# first crash, printing the artifact path (minimise it with
# `RUSTC_BOOTSTRAP=1 cargo fuzz tmin -a <target> <artifact>`).
#
# Environment: RUNNEL_FUZZ_SANITIZER (address, or none when the sanitizer runtime is missing;
# default: address when the toolchain ships it), RUNNEL_FUZZ_SCRATCH (default /tmp).
set -euo pipefail

cd "$(dirname "$0")/.."

ALL_TARGETS=(frame_splitter request_decode record_batch segment_recovery)
target="${1:-all}"
seconds="${2:-600}"

# Longest input per target: room for several frames, the largest request bodies worth
# decoding, a few batches over the 16 KiB batch limit, a segment and its metadata files.
max_len() {
    case "$1" in
        frame_splitter) echo 4096 ;;
        request_decode) echo 8192 ;;
        record_batch) echo 20000 ;;
        segment_recovery) echo 8192 ;;
        *) echo "unknown target $1" >&2; return 1 ;;
    esac
}

if [[ "$target" == all ]]; then
    targets=("${ALL_TARGETS[@]}")
else
    max_len "$target" >/dev/null
    targets=("$target")
fi
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "seconds must be a number, got $seconds" >&2; exit 2; }

if ! command -v cargo-fuzz >/dev/null; then
    cargo install cargo-fuzz --locked
fi

# cargo-fuzz passes -Z flags; the stable compiler accepts them with this set.
export RUSTC_BOOTSTRAP=1

host="$(rustc -vV | sed -n 's/^host: //p')"
if [[ -z "${RUNNEL_FUZZ_SANITIZER:-}" ]]; then
    if compgen -G "$(rustc --print sysroot)/lib/rustlib/$host/lib/librustc-*_rt.asan.a" >/dev/null; then
        RUNNEL_FUZZ_SANITIZER=address
    else
        echo "no address sanitizer runtime in this toolchain: fuzzing with -s none" >&2
        echo "(-malloc_limit_mb then has no allocation hook; -rss_limit_mb still applies)" >&2
        RUNNEL_FUZZ_SANITIZER=none
    fi
fi
sanitizer="$RUNNEL_FUZZ_SANITIZER"

# -a: debug assertions and overflow checks, as in the test build. fuzz/target is its own
# target dir, so this never disturbs the workspace's builds.
cargo fuzz build -a -s "$sanitizer"
bin_dir="fuzz/target/$host/release"

scratch="$(mktemp -d "${RUNNEL_FUZZ_SCRATCH:-/tmp}/runnel-fuzz.XXXXXX")"
echo "scratch corpora and logs: $scratch"
# segment_recovery's partition directories: on tmpfs when there is one, removed at the end
# (a crash leaves its directory behind).
tmpfs=/dev/shm
[[ -d "$tmpfs" && -w "$tmpfs" ]] || tmpfs="${TMPDIR:-/tmp}"
RUNNEL_FUZZ_TMPDIR="$(mktemp -d "$tmpfs/runnel-fuzz-dirs.XXXXXX")"
export RUNNEL_FUZZ_TMPDIR
trap 'rm -rf "$RUNNEL_FUZZ_TMPDIR"' EXIT
# A smaller quarantine than ASan's 256 MiB keeps a long run under -rss_limit_mb.
export ASAN_OPTIONS="${ASAN_OPTIONS:-quarantine_size_mb=32}"
status=0
for t in "${targets[@]}"; do
    corpus="$scratch/$t"
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    cp fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
    log="$scratch/$t.log"
    echo "== $t: ${seconds}s, max_len $(max_len "$t"), sanitizer $sanitizer"
    set +e
    # The binary built above, run directly: `cargo fuzz run` would rebuild first, and a tree
    # being edited meanwhile must not change (or break) what a long run tests.
    "$bin_dir/$t" "$corpus" \
        -artifact_prefix="fuzz/artifacts/$t/" \
        -max_total_time="$seconds" \
        -malloc_limit_mb=128 -rss_limit_mb=512 -timeout=10 \
        -max_len="$(max_len "$t")" \
        -print_final_stats=1 >"$log" 2>&1
    code=$?
    set -e
    grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "$log" | tail -1 || true
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" || true
    if [[ $code -ne 0 ]]; then
        status=1
        echo "!! $t failed (exit $code); log: $log"
        grep -E 'ERROR:|panicked at|Test unit written to' "$log" || tail -30 "$log"
        artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)"
        [[ -n "$artifact" ]] && echo "artifact: $artifact"
        break
    fi
done
exit "$status"
