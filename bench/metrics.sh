#!/bin/bash
# Metrics scrape benchmark (issue #18): one /metrics scrape of a 1000 x 16 IPVS table programmed
# by rs-agent, rs-agent (metrics_per_real_server = true and false) vs node_exporter's ipvs
# collector on the same table. A benchmark, not a test: it prints figures and never fails on them.
#
#   bench/metrics.sh [OUTDIR]
#
# Builds rs-agent (release), boots ONE virtme-ng VM with a Debian kernel that has IPVS, runs
# bench/metrics-guest.sh inside it and prints the table (also in OUTDIR/results.txt; every
# scrape in OUTDIR/raw.txt). Knobs (environment):
#   CARGO_TARGET_DIR  where cargo builds (default: target/)
#   BENCH_KERNEL      kernel image (default: the running kernel's /boot image, else the highest
#                     /boot/vmlinuz-* with modules installed)
#   BENCH_SERVICES    services in the table (default 1000), 16 real servers each
#   BENCH_SCRAPES     scrapes per exporter (default 7; the median is reported)
#   BENCH_TIMEOUT     seconds before the VM is abandoned (default 1800)
# KVM is not used (--disable-kvm): timings are under TCG emulation; compare ratios, not ms.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUTDIR=${1:-$(mktemp -d /tmp/rs-agent-metrics-bench.XXXXXX)}
KERNEL=${BENCH_KERNEL:-}
SERVICES=${BENCH_SERVICES:-1000}
SCRAPES=${BENCH_SCRAPES:-7}
TIMEOUT=${BENCH_TIMEOUT:-1800}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

for tool in vng ipvsadm curl python3 prometheus-node-exporter; do
    command -v "$tool" >/dev/null || { echo "metrics.sh: $tool is not installed (scripts/setup.sh --test)" >&2; exit 2; }
done
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
        echo "metrics.sh: no /boot/vmlinuz-* with modules in /lib/modules (apt install linux-image-amd64, or set BENCH_KERNEL)" >&2
        exit 2
    }
fi
[ -r "$KERNEL" ] || { echo "metrics.sh: no kernel image $KERNEL (set BENCH_KERNEL)" >&2; exit 2; }

(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release)
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
rm -f "$OUTDIR/results.txt"

echo "metrics.sh: booting $KERNEL under emulation; output in $OUTDIR" >&2
timeout "$TIMEOUT" vng --disable-kvm --verbose --user root --memory 2G --cpus 2 --rwdir "$OUTDIR" \
    --run "$KERNEL" \
    --exec "$ROOT/bench/metrics-guest.sh $TARGET/release/rs-agent $OUTDIR $SERVICES $SCRAPES" \
    </dev/null >"$OUTDIR/vm.log" 2>&1 || echo "metrics.sh: the VM exited with status $?" >&2

if [ ! -s "$OUTDIR/results.txt" ]; then
    echo "metrics.sh: no results; see $OUTDIR/vm.log" >&2
    grep -v '^\[' "$OUTDIR/vm.log" | tail -20 >&2
    exit 1
fi
cat "$OUTDIR/results.txt"
echo "metrics.sh: results in $OUTDIR/results.txt" >&2
