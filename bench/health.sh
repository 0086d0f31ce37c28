#!/bin/bash
# Director health-check benchmarks (issue: always-on), rs-agent vs keepalived side by side in
# one VM boot: (b) failure-detection latency and (c) CPU/RSS while checking 2,000 real servers.
# See docs/benchmarks.md for what is measured and how to read it.
#
#   bench/health.sh
#
# Builds release (rs-agent + examples ipvs_watch and bench_listener), boots the Debian kernel
# under virtme-ng without KVM, runs bench/health-guest.sh inside, then prints the summary and
# keeps everything in $CARGO_TARGET_DIR/bench/health-<time>/ (summary.md, detect.tsv, cost.tsv,
# guest.log, console.log).
#
# env: RUNS (detection runs per implementation and kind, default 10), DETECT_KINDS ("kill status"),
#      COST_SECS (30), COST_WARMUP (10),
#      COST_TYPES ("http", or "http tcp http-reuse"), COST_INTERVALS (ms, default "1000 10000"), SKIP_DETECT=1, SKIP_COST=1, PROFILE=1 (perf), STRACE=1,
#      AGENT_B=PATH (another rs-agent binary, also measured in the cost bench),
#      RS_AGENT_VM_KERNEL (default: highest /boot/vmlinuz-* with modules), HBENCH_TIMEOUT (s).
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
target=${CARGO_TARGET_DIR:-$repo/target}

for tool in vng qemu-system-x86_64 keepalived ipvsadm busybox; do
    command -v "$tool" >/dev/null || { echo "health.sh: $tool not found" >&2; exit 1; }
done

cargo build --release --bin rs-agent --example ipvs_watch --example bench_listener

kernel=${RS_AGENT_VM_KERNEL:-}
if [ -z "$kernel" ]; then
    for k in $(ls /boot/vmlinuz-* 2>/dev/null | sort -V); do
        [ -f "/lib/modules/${k#/boot/vmlinuz-}/modules.dep" ] && kernel=$k
    done
fi
[ -n "$kernel" ] || { echo "health.sh: no /boot/vmlinuz-* with modules" >&2; exit 1; }

out=$target/bench/health-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
guest_env="RUNS=${RUNS:-10} DETECT_KINDS='${DETECT_KINDS:-kill status}' COST_SECS=${COST_SECS:-30} COST_WARMUP=${COST_WARMUP:-10}"
guest_env+=" COST_TYPES='${COST_TYPES:-http}' SKIP_DETECT=${SKIP_DETECT:-} SKIP_COST=${SKIP_COST:-}"
guest_env+=" PROFILE=${PROFILE:-} STRACE=${STRACE:-} AGENT_B=${AGENT_B:-} COST_INTERVALS='${COST_INTERVALS:-1000 10000}'"
exec_cmd="env $guest_env bash $repo/bench/health-guest.sh $out $target/release/rs-agent"
exec_cmd+=" $target/release/examples/ipvs_watch $target/release/examples/bench_listener"

echo "health.sh: booting $kernel (no KVM), results in $out"
started=$(date +%s)
# KVM is unusable here: always --disable-kvm (TCG). Lines starting with '[' are the kernel's.
timeout "${HBENCH_TIMEOUT:-3000}" vng --disable-kvm --verbose --user root --memory 2G --cpus 2 \
    --rwdir "$out" --run "$kernel" --exec "$exec_cmd" </dev/null 2>&1 |
    tee "$out/console.log" | grep --line-buffered -o 'HBENCH .*' | grep --line-buffered -v '^HBENCH |' || true
echo "health.sh: VM took $(( $(date +%s) - started )) s"

if [ ! -s "$out/summary.md" ]; then
    echo "health.sh: no summary; see $out/console.log and $out/guest.log" >&2
    exit 1
fi
echo
cat "$out/summary.md"
echo "health.sh: results kept in $out"
