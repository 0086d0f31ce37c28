#!/bin/bash
# Metrics scrape benchmark, guest side: runs inside a VM whose kernel has IPVS (bench/metrics.sh).
#
#   metrics-guest.sh RS_AGENT OUTDIR [SERVICES] [SCRAPES]
#
# In one fresh namespace: `rs-agent director run` programs SERVICES x 16 real servers (bench/gen.py)
# and serves /metrics on 127.0.0.1; node_exporter's ipvs collector alone serves the same table.
# For each exporter (rs-agent with metrics_per_real_server = true, then = false; node_exporter):
# VmRSS/VmHWM of its process before the first scrape, SCRAPES scrapes timed by curl's
# time_total (the median is reported) with their size, VmRSS/VmHWM after them.
# Raw lines go to OUTDIR/raw.txt, the table to OUTDIR/results.txt. Every wait is bounded.
set -u

RS_AGENT=${1:?usage: metrics-guest.sh RS_AGENT OUTDIR [SERVICES] [SCRAPES]}
OUTDIR=${2:?usage: metrics-guest.sh RS_AGENT OUTDIR [SERVICES] [SCRAPES]}
SERVICES=${3:-1000}
SCRAPES=${4:-7}
REALS_PER_SERVICE=16
HERE=$(cd "$(dirname "$0")" && pwd)
RAW=$OUTDIR/raw.txt
NS=mbench
OURS=127.0.0.1:9100
NODE=127.0.0.1:9200

# Inputs and state on a guest tmpfs (the shared directory is 9p, slow under emulation).
WORK=${METRICS_BENCH_WORK:-$(mktemp -d /tmp/metrics-bench.XXXXXX)} || exit 1

log() { echo "bench: $*" >&2; }
raw() { echo "$*" | tee -a "$RAW"; }

dest_count() { grep -c '^  -> [0-9A-F]\{8\}:' /proc/net/ip_vs; }

# Polls (bounded: 6,000 x 50 ms = 300 s) until the table holds $1 destinations.
wait_count() {
    local i
    for ((i = 0; i < 6000; i++)); do
        [ "$(dest_count)" -ge "$1" ] && return 0
        sleep 0.05
    done
    return 1
}

# Polls (bounded: 1,200 x 100 ms) until http://$1/metrics answers.
wait_http() {
    local i
    for ((i = 0; i < 1200; i++)); do
        curl -s -o /dev/null --max-time 60 "http://$1/metrics" && return 0
        sleep 0.1
    done
    return 1
}

# "VmRSS VmHWM" of a process, in KiB.
mem() { awk '/^VmRSS:/ { r = $2 } /^VmHWM:/ { h = $2 } END { print r, h }' "/proc/$1/status"; }

stop_pid() {
    local i
    kill -TERM "$1" 2>/dev/null
    for ((i = 0; i < 600; i++)); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}

# Measures one exporter: NAME PID ADDR. Prints "RESULT NAME median_ms bytes rss0 hwm0 rss1 hwm1"
# and keeps the last scrape in $WORK/NAME.prom.
measure() {
    local name=$1 pid=$2 addr=$3 before after times=() t bytes i
    before=$(mem "$pid")
    for ((i = 0; i < SCRAPES; i++)); do
        read -r t bytes < <(curl -s --max-time 120 -o "$WORK/$name.prom" \
            -w '%{time_total} %{size_download}\n' "http://$addr/metrics")
        raw "SCRAPE $name $i ${t}s ${bytes}B"
        times+=("$t")
    done
    after=$(mem "$pid")
    t=$(printf '%s\n' "${times[@]}" | sort -g | awk '{ a[NR] = $1 } END { printf "%.1f", a[int((NR + 1) / 2)] * 1000 }')
    raw "RESULT $name $t $bytes $before $after"
}

# rs-agent `director run` on CONFIG in the background, its pid in AGENT_PID; waits (bounded) for
# the full table and for /metrics.
start_agent() {
    "$RS_AGENT" --state-dir "$WORK/state" director run --config "$1" --metrics-listen "$OURS" \
        >>"$OUTDIR/agent.log" 2>&1 &
    AGENT_PID=$!
    wait_count "$((SERVICES * REALS_PER_SERVICE))" || { log "table not full: $(dest_count)"; return 1; }
    wait_http "$OURS" || { log "rs-agent /metrics does not answer"; return 1; }
}

inner() {
    local gen=$WORK/gen cfg
    python3 "$HERE/gen.py" "$SERVICES" "$gen" || exit 1
    for per in true false; do
        cfg=$WORK/rs-agent-$per.toml
        sed "s/^\[director\]$/[director]\nmetrics_per_real_server = $per/" "$gen/rs-agent.toml" >"$cfg"
        log "rs-agent, metrics_per_real_server = $per"
        start_agent "$cfg" || { stop_pid "$AGENT_PID"; raw "RESULT rs-agent-per-rs-$per FAIL"; continue; }
        # Settled: the first pass done, the daemon idle before the first scrape.
        sleep 2
        measure "rs-agent-per-rs-$per" "$AGENT_PID" "$OURS"
        # The table stays (SIGTERM leaves it), the next run finds it already as configured.
        stop_pid "$AGENT_PID"
    done
    log "node_exporter, ipvs collector only"
    prometheus-node-exporter --collector.disable-defaults --collector.ipvs \
        --web.disable-exporter-metrics --web.listen-address="$NODE" >>"$OUTDIR/node_exporter.log" 2>&1 &
    local node=$!
    if wait_http "$NODE"; then
        sleep 2
        measure node_exporter "$node" "$NODE"
    else
        raw "RESULT node_exporter FAIL"
    fi
    stop_pid "$node"
    # One backend (the first service's first real server) as each exporter labels it: the
    # label names and values must match for joins.
    local one='local_address="192.0.2.1",.*remote_address="198.51.100.2",remote_port="1"}'
    raw "LABELS $(grep -m1 "^rs_agent_ipvs_backend_weight{.*$one" "$WORK/rs-agent-per-rs-true.prom")"
    raw "LABELS $(grep -m1 "^node_ipvs_backend_weight{.*$one" "$WORK/node_exporter.prom")"
    "$RS_AGENT" --state-dir "$WORK/state" director down --config "$gen/rs-agent.toml" >/dev/null 2>&1
}

if [ "${METRICS_BENCH_IN_NS:-}" = 1 ]; then
    inner
    exit 0
fi

modprobe ip_vs && modprobe ip_vs_rr && modprobe dummy || { log "cannot load ip_vs, ip_vs_rr, dummy"; exit 1; }
: >"$RAW"
raw "# kernel $(uname -r), $(nproc) CPU(s), $(prometheus-node-exporter --version 2>&1 | head -1)"
raw "# $SERVICES services x $REALS_PER_SERVICE real servers, $SCRAPES scrapes each (median of curl's time_total)"
ip netns add "$NS" &&
    ip -n "$NS" link set lo up &&
    ip -n "$NS" link add eth0 type dummy &&
    ip -n "$NS" addr add 198.51.100.1/24 dev eth0 &&
    ip -n "$NS" addr add 203.0.113.1/24 dev eth0 &&
    ip -n "$NS" link set eth0 up || { log "cannot make namespace $NS"; exit 1; }
METRICS_BENCH_IN_NS=1 METRICS_BENCH_WORK=$WORK ip netns exec "$NS" "$0" "$RS_AGENT" "$OUTDIR" \
    "$SERVICES" "$SCRAPES" </dev/null
ip netns exec "$NS" ipvsadm -C
ip netns del "$NS"
python3 - "$RAW" >"$OUTDIR/results.txt" <<'EOF'
import sys
rows = {}
for line in open(sys.argv[1]):
    w = line.split()
    if w[:1] == ["RESULT"] and len(w) == 8:
        rows[w[1]] = [float(x) for x in w[2:]]
print("| exporter | scrape (median ms) | bytes | VmRSS before → after (KiB) | VmHWM before → after (KiB) |")
print("|---|---:|---:|---|---|")
for name, (ms, size, r0, h0, r1, h1) in rows.items():
    print(f"| {name} | {ms:.1f} | {size:.0f} | {r0:.0f} → {r1:.0f} (+{r1 - r0:.0f}) | {h0:.0f} → {h1:.0f} (+{h1 - h0:.0f}) |")
node = rows.get("node_exporter")
if node:
    for name, r in rows.items():
        if name != "node_exporter":
            print(f"\n{name} / node_exporter: scrape {r[0] / node[0]:.2f}x, bytes {r[1] / node[1]:.2f}x, "
                  f"VmRSS after {r[4] / node[4]:.2f}x, VmHWM after {r[5] / node[5]:.2f}x")
for line in open(sys.argv[1]):
    if line.startswith("LABELS "):
        print("\n    " + line[7:].rstrip())
EOF
cat "$OUTDIR/results.txt"
