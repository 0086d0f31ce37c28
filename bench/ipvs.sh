#!/bin/bash
# Director benchmark: rs-agent vs ipvsadm-restore vs keepalived on a kernel with IPVS.
# A benchmark, not a test: it prints figures and never fails on them.
#
#   bench/ipvs.sh [OUTDIR]
#
# Builds rs-agent (release), boots ONE virtme-ng VM with a Debian kernel that has IPVS, runs
# bench/ipvs-guest.sh inside it and prints the table, which is also written to
# OUTDIR/results.txt (raw runs in OUTDIR/raw.txt). Knobs (environment):
#   CARGO_TARGET_DIR  where cargo builds (default: target/)
#   BENCH_KERNEL      kernel image (default: as the VM tier picks it, the running kernel's
#                     /boot image, else the highest /boot/vmlinuz-* with modules installed)
#   BENCH_SIZES       services per table (default "100 1000 4000"), 16 real servers each
#   BENCH_RUNS        runs per measurement (default 3)
#   BENCH_CMD_TIMEOUT seconds one rs-agent run may take (default 120)
#   BENCH_TIMEOUT     seconds before the VM is abandoned (default 3600)
# KVM is not used (--disable-kvm): timings are under TCG emulation; compare ratios, not ms.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUTDIR=${1:-$(mktemp -d /tmp/rs-agent-bench.XXXXXX)}
KERNEL=${BENCH_KERNEL:-}
SIZES=${BENCH_SIZES:-100 1000 4000}
RUNS=${BENCH_RUNS:-3}
TIMEOUT=${BENCH_TIMEOUT:-3600}
CMD_TIMEOUT=${BENCH_CMD_TIMEOUT:-120}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

for tool in vng ipvsadm ipvsadm-restore keepalived python3; do
    command -v "$tool" >/dev/null || { echo "ipvs.sh: $tool is not installed" >&2; exit 2; }
done
# The guest loads ip_vs and dummy from the host's /lib/modules: only a kernel with its
# modules installed will do.
has_modules() { [ -f "/lib/modules/${1#/boot/vmlinuz-}/modules.dep" ]; }
if [ -z "$KERNEL" ]; then
    running=/boot/vmlinuz-$(uname -r)
    if [ -r "$running" ] && has_modules "$running"; then
        KERNEL=$running
    else
        for k in $(ls /boot/vmlinuz-* 2>/dev/null | sort -V); do
            has_modules "$k" && KERNEL=$k
        done
    fi
    [ -n "$KERNEL" ] || {
        echo "ipvs.sh: no /boot/vmlinuz-* with modules in /lib/modules (apt install linux-image-amd64, or set BENCH_KERNEL)" >&2
        exit 2
    }
fi
[ -r "$KERNEL" ] || { echo "ipvs.sh: no kernel image $KERNEL (set BENCH_KERNEL)" >&2; exit 2; }

(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release)
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
rm -f "$OUTDIR/results.txt"

echo "ipvs.sh: booting $KERNEL under emulation; output in $OUTDIR" >&2
# The guest shares the host's root file system read-only; OUTDIR is its writable window.
timeout "$TIMEOUT" vng --disable-kvm --verbose --memory 2G --cpus 2 --rwdir "$OUTDIR" \
    --run "$KERNEL" \
    --exec "$ROOT/bench/ipvs-guest.sh $TARGET/release/rs-agent $OUTDIR '$SIZES' $RUNS $CMD_TIMEOUT" \
    >"$OUTDIR/vm.log" 2>&1 || echo "ipvs.sh: the VM exited with status $?" >&2

if [ ! -s "$OUTDIR/results.txt" ]; then
    echo "ipvs.sh: no results; see $OUTDIR/vm.log" >&2
    grep -v '^\[' "$OUTDIR/vm.log" | tail -20 >&2
    exit 1
fi
cat "$OUTDIR/results.txt"
echo "ipvs.sh: results in $OUTDIR/results.txt" >&2
