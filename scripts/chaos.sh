#!/usr/bin/env bash
# The chaos harness (docs/reliability.md): three runnel nodes in network namespaces, a seeded
# workload and fault schedule, then a drain and the checker; each run prints one summary line
# and writes history.jsonl, report.md and report.json under target/chaos/.
#
#   scripts/chaos.sh                  the CI short run: three 60 s runs with fixed seeds and a
#                                     few fault types; exits 0 only if every run has zero
#                                     anomalies and the cluster served again after its faults
#   scripts/chaos.sh ARGS...          one run: ARGS go to `runnel-chaos run` (--seed N
#                                     --duration SECS --faults a,b,... --out DIR)
#
# Needs root (namespaces, nftables, tc, mounts) and installs nftables/iproute2 if missing.
# Builds runnel, runnel-chaos and, when the tree has it, runnel-faultfs (power loss).
set -euo pipefail

cd "$(dirname "$0")/.."

fail() {
    echo "chaos: FAILED: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || fail "must run as root (network namespaces, nftables, tc, tmpfs mounts)"

export DEBIAN_FRONTEND=noninteractive
missing=()
command -v ip >/dev/null 2>&1 && command -v tc >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "chaos: installing ${missing[*]}"
    apt-get update -qq </dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
fi
ip netns list >/dev/null 2>&1 || fail "ip netns does not work here (no network namespace support)"

# Power loss mounts runnel-faultfs (FUSE): it needs a /dev/fuse that opens. CI must provide it
# (a CI without it would otherwise pass without ever testing power loss); elsewhere the short
# run drops power loss with a notice.
fuse_usable() {
    modprobe fuse >/dev/null 2>&1 || true
    [ -c /dev/fuse ] && (exec 3<>/dev/fuse) 2>/dev/null
}

packages=(-p runnel-broker -p runnel-chaos)
have_faultfs=false
if [ -f tests/faultfs/Cargo.toml ]; then
    if fuse_usable; then
        packages+=(-p runnel-faultfs)
        have_faultfs=true
    elif [ "${CI:-}" = true ]; then
        fail "/dev/fuse cannot be opened: CI must provide /dev/fuse (power-loss runs need FUSE)"
    else
        echo "chaos: NOTICE: /dev/fuse cannot be opened; the short run skips power-loss" >&2
    fi
fi
echo "chaos: building ${packages[*]}"
cargo build --quiet "${packages[@]}"
bin_dir="${CARGO_TARGET_DIR:-target}/debug"
chaos="$bin_dir/runnel-chaos"

if [ "$#" -gt 0 ]; then
    exec "$chaos" run --runnel "$bin_dir/runnel" --faultfs "$bin_dir/runnel-faultfs" "$@"
fi

# The short run: fixed seeds, so a failure here replays with the command its report prints.
all_nodes=kill-all
if $have_faultfs; then
    all_nodes=kill-all,power-loss
fi
runs=(
    "1 kill-one,kill-leader"
    "2 partition-one,pause"
    "3 $all_nodes"
)
mkdir -p target/chaos
failed=0
summaries=()
for spec in "${runs[@]}"; do
    read -r seed faults <<<"$spec"
    out="target/chaos/ci-seed-$seed"
    echo "chaos: run seed=$seed faults=$faults (60 s) -> $out"
    if "$chaos" run --seed "$seed" --duration 60 --faults "$faults" --out "$out" \
        --runnel "$bin_dir/runnel" --faultfs "$bin_dir/runnel-faultfs" >"$out.summary" ; then
        :
    else
        failed=$((failed + 1))
    fi
    summaries+=("$(cat "$out.summary" 2>/dev/null || echo "chaos seed=$seed: no summary (harness error)")")
done
printf '%s\n' "${summaries[@]}"
[ "$failed" -eq 0 ] || fail "$failed of ${#runs[@]} runs found anomalies or did not recover (reports under target/chaos/)"
echo "chaos: ${#runs[@]} runs, zero anomalies"
