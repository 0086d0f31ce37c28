#!/usr/bin/env bash
# Drift-repair latency of `rs-agent run` on a real server (a benchmark, not a test).
#
# In a throwaway network namespace: start `rs-agent run --vip 192.0.2.100`, then delete the
# VIP N times (default 100) and measure, from `ip -ts monitor address` timestamps, the time
# between the kernel's "Deleted" notification and the notification of the VIP's return.
# Both timestamps are taken by the same monitor process when it receives each event, so the
# difference is the agent's reaction (event → debounce → observe → plan → apply) plus the
# same small delivery delay on both ends. Prints the median, p90, p99 and max.
#
# Usage: sudo bench/drift.sh [N]       (RS_AGENT=path overrides target/release/rs-agent)
# Needs: root, iproute2, python3. Only 192.0.2.0/24 is used, inside the namespace.
set -euo pipefail

N=${1:-100}
BIN=${RS_AGENT:-${CARGO_TARGET_DIR:-target}/release/rs-agent}
VIP=192.0.2.100
NS=rsa-bench-drift-$$
TMP=$(mktemp -d)
AGENT=
MONITOR=

cleanup() {
    [ -n "$MONITOR" ] && kill "$MONITOR" 2>/dev/null || true
    [ -n "$AGENT" ] && kill -TERM "$AGENT" 2>/dev/null || true
    wait 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

[ -x "$BIN" ] || { echo "no rs-agent binary at $BIN (cargo build --release)" >&2; exit 2; }
[ "$N" -ge 1 ] && [ "$N" -le 10000 ] || { echo "N must be 1..10000" >&2; exit 2; }

ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add eth0 type veth peer name eth1
ip -n "$NS" link set eth0 up
ip -n "$NS" link set eth1 up
ip -n "$NS" addr add 192.0.2.2/24 dev eth0

bound() { ip -n "$NS" -o -4 addr show dev lo | grep -q " $VIP/32 "; }

# Wait (bounded: 2 s in 5 ms steps) for the VIP to be bound.
wait_bound() {
    for _ in $(seq 400); do bound && return 0; sleep 0.005; done
    return 1
}

ip netns exec "$NS" env RS_AGENT_STATE_DIR="$TMP/state" RS_AGENT_LOG=info \
    timeout 900 "$BIN" run --vip "$VIP" 2>"$TMP/agent.log" &
AGENT=$!
wait_bound || { echo "agent did not bind $VIP:" >&2; cat "$TMP/agent.log" >&2; exit 1; }

# The monitor runs at real-time priority where possible so that, on a busy machine, its
# timestamps are taken when the events arrive rather than when it next gets a CPU.
RT=(); command -v chrt >/dev/null && chrt -f 10 true 2>/dev/null && RT=(chrt -f 10)
"${RT[@]}" ip -n "$NS" -ts monitor address >"$TMP/monitor" &
MONITOR=$!
sleep 0.3

for _ in $(seq "$N"); do
    ip -n "$NS" addr del "$VIP/32" dev lo
    wait_bound || { echo "VIP did not come back within 2 s" >&2; exit 1; }
    sleep 0.02
done
sleep 0.3
kill "$MONITOR"; wait "$MONITOR" 2>/dev/null || true; MONITOR=

python3 - "$TMP/monitor" "$VIP" "$N" <<'PY'
import re, sys
from datetime import datetime
path, vip, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
stamp = re.compile(r"^\[(\S+)\]\s+(Deleted\s+)?\d+:\s+lo\s+inet\s+" + re.escape(vip) + "/32 ")
deleted, gaps = None, []
for line in open(path):
    m = stamp.match(line)
    if not m:
        continue
    t = datetime.fromisoformat(m.group(1))
    if m.group(2):
        deleted = t
    elif deleted is not None:
        gaps.append((t - deleted).total_seconds() * 1000)
        deleted = None
if len(gaps) != n:
    sys.exit(f"expected {n} delete/return pairs in the monitor output, found {len(gaps)}")
gaps.sort()
pick = lambda q: gaps[min(len(gaps) - 1, int(q * len(gaps)))]
print(f"drift repair (VIP deleted -> VIP back), n={n}: "
      f"median {pick(0.5):.2f} ms, p90 {pick(0.9):.2f} ms, p99 {pick(0.99):.2f} ms, "
      f"max {gaps[-1]:.2f} ms, min {gaps[0]:.2f} ms")
PY
echo "repairs logged by the agent: $(grep -c 'repaired: ' "$TMP/agent.log")"
