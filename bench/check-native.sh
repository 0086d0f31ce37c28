#!/bin/bash
# Checking cost of `director run` on this machine's own CPU (no emulation): 2,000 real servers
# (4 services x 500 addresses) checked at a 1 s (and 10 s) interval, as in bench/health.sh (c).
# A benchmark, not a test: it prints figures and never fails on them.
#
#   sudo bench/check-native.sh      # knobs: WARMUP=10 SECS=30 TYPES="http tcp" INTERVALS="1000 10000"
#                                   #        (TYPES also: http-reuse, an http check with
#                                   #        reuse_connection = true: one kept connection per server;
#                                   #        https and https-reuse, against a TLS listener on ports
#                                   #        8011-8014, rs-agent only: the yardstick has no TLS)
#                                   #        MODES="rs-agent blocking" (also: blocking-rst blocking-reuse)
#                                   #        PERF=/tmp/cn.perf (perf record -g each run to PERF.MODE.TYPE.MS)
#                                   #        SPLIT=1 (real servers' side on the other CPU; see below)
#                                   #        NAPI=1 (receive processing in kernel threads; see below)
#
# This host's kernel has no IPVS, so `director run` cannot start here; examples/check_cost runs
# the library's checking half (`director::run::check_only`: the same tasks, jitter, in-flight
# bound, timeouts and rise/fall state machine) on the same single-threaded runtime and reports
# its own CPU time (getrusage) and RSS; `blocking` rows do the same exchanges at the same rate with
# blocking sockets one at a time (what the kernel alone charges here). What it leaves out is the reconcile: one full IPVS dump
# per --reconcile-interval and one scoped pass per verdict change (none in this steady state);
# their cost is in bench/health.sh's VM figures.
#
# Namespaces rsa-cn-dir (the checker) and rsa-cn-srv (bench_listener on ports 8001-8004 with
# 198.51.100.1-250 and 203.0.113.1-250) joined by one veth; both are deleted on exit.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WARMUP=${WARMUP:-10}
SECS=${SECS:-30}
TYPES=${TYPES:-http tcp}
INTERVALS=${INTERVALS:-1000 10000}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
DIR=rsa-cn-dir
SRV=rsa-cn-srv
PORTS="8001 8004"
TLS_PORTS="8011 8014" # https and https-reuse: a second bench_listener speaking TLS
WORK=$(mktemp -d /tmp/rsa-check-native.XXXXXX)
LISTENER_PID=""

[ "$(id -u)" = 0 ] || { echo "check-native.sh: run as root (network namespaces)" >&2; exit 2; }

cleanup() {
    set +e
    local pid
    for pid in $LISTENER_PID; do
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    ip netns del "$DIR" 2>/dev/null || true
    ip netns del "$SRV" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release --example check_cost --example bench_listener)

timewait() { # NETNS: sockets in TIME_WAIT there
    ip netns exec "$1" ss -H -t -n state time-wait | wc -l
}

reals() {
    local i
    for i in $(seq 250); do echo "198.51.100.$i"; echo "203.0.113.$i"; done
}

config() { # TYPE INTERVAL_MS
    local port rs
    printf '[director]\ninterface = "v0"\ngarp_count = 0\n'
    local ports=$PORTS
    case $1 in https*) ports=$TLS_PORTS ;; esac
    for port in $(seq $ports); do
        printf '\n[[director.service]]\nvip = "192.0.2.100"\nport = %s\nscheduler = "wlc"\n' "$port"
        printf 'reals = [%s]\n' "$(reals | sed "s/.*/\"&:$port\"/" | paste -sd,)"
        printf '\n[director.service.check]\ntype = "%s"\n' "${1%-reuse}"
        [ "$1" != tcp ] && printf 'path = "/"\n'
        case $1 in *-reuse) printf 'reuse_connection = true\n' ;; esac
        printf 'interval_ms = %s\ntimeout_ms = 1000\nrise = 2\nfall = 2\n' "$2"
    done
}

ip netns add "$DIR"
ip netns add "$SRV"
ip -n "$DIR" link set lo up
ip -n "$SRV" link set lo up
ip -n "$DIR" link add v0 type veth peer name eth0 netns "$SRV"
ip -n "$DIR" addr add 192.0.2.253/30 dev v0
ip -n "$DIR" link set v0 up
{
    echo "addr add 192.0.2.254/30 dev eth0"
    for rs in $(reals); do echo "addr add $rs/32 dev eth0"; done
    echo "link set eth0 up"
} | ip -n "$SRV" -batch -
ip -n "$DIR" route add 198.51.100.0/24 via 192.0.2.254
ip -n "$DIR" route add 203.0.113.0/24 via 192.0.2.254
# SPLIT=1 (needs 2 CPUs): the real servers' side on CPU 1 — the listener pinned there and the
# packets the checker sends steered there by RPS — and the checker on CPU 0, as if the real
# servers were other machines. Without it, veth runs the real servers' receive path in the
# checker's own context and charges it to the checker.
PIN_SRV="" PIN_DIR=""
if [ "${SPLIT:-0}" = 1 ]; then
    ip netns exec "$SRV" sh -c 'echo 2 >/sys/class/net/eth0/queues/rx-0/rps_cpus'
    ip netns exec "$DIR" sh -c 'echo 1 >/sys/class/net/v0/queues/rx-0/rps_cpus'
    PIN_SRV="taskset -c 1" PIN_DIR="taskset -c 0"
fi
# NAPI=1: both veth ends in NAPI mode (GRO on, TSO off) with threaded NAPI, so every packet's receive
# processing runs in a `napi/<dev>` kernel thread instead of the sending process's context —
# as a NIC's receive path runs in interrupt and softirq context, not in the director's system
# calls. The threads' CPU over the measured window is reported beside the checker's
# (`napi_cpu_pct`): the checker's own cost, and what the kernel spent receiving for both sides.
NAPI_PIDS=""
if [ "${NAPI:-0}" = 1 ]; then
    command -v ethtool >/dev/null || { echo "check-native.sh: NAPI=1 needs ethtool (apt install ethtool)" >&2; exit 2; }
    before=$(pgrep '^napi/' | sort)
    # veth hands a packet to NAPI only when the receiver has GRO on and the sender no TSO.
    ip netns exec "$DIR" ethtool -K v0 gro on tso off
    ip netns exec "$SRV" ethtool -K eth0 gro on tso off
    ip netns exec "$DIR" sh -c 'echo 1 >/sys/class/net/v0/threaded'
    ip netns exec "$SRV" sh -c 'echo 1 >/sys/class/net/eth0/threaded'
    NAPI_PIDS=$(comm -13 <(echo "$before") <(pgrep '^napi/' | sort) | paste -sd' ')
    [ -n "$NAPI_PIDS" ] || { echo "check-native.sh: NAPI=1 but no napi threads appeared" >&2; exit 1; }
fi

napi_ticks() { # utime + stime of the NAPI threads, in clock ticks
    local p f total=0
    for p in $NAPI_PIDS; do
        read -r -a f <"/proc/$p/stat" && total=$((total + f[13] + f[14]))
    done
    echo $total
}

ip netns exec "$SRV" $PIN_SRV "$TARGET/release/examples/bench_listener" "$WORK/conns" $(seq $PORTS) &
LISTENER_PID=$!
case " $TYPES " in *" https"*)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj /CN=bench -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
    BENCH_TLS="$WORK/cert.pem:$WORK/key.pem" ip netns exec "$SRV" $PIN_SRV \
        "$TARGET/release/examples/bench_listener" "$WORK/tls-conns" $(seq $TLS_PORTS) &
    LISTENER_PID+=" $!"
esac
sleep 1

echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) CPU(s): $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "# 2,000 real servers (4 services x 500), timeout 1 s, rise/fall 2; ${WARMUP} s warm-up, ${SECS} s measured; SPLIT=${SPLIT:-0} NAPI=${NAPI:-0}"
for type in $TYPES; do
    for interval in $INTERVALS; do
        config "$type" "$interval" >"$WORK/cost.toml"
        conns=$WORK/conns
        case $type in https*) conns=$WORK/tls-conns ;; esac
        for mode in ${MODES:-rs-agent blocking}; do
            # The blocking yardstick speaks no TLS.
            case $type/$mode in https*/blocking*) continue ;; esac
            before=$(cat "$conns" 2>/dev/null || echo 0)
            # Over the measured window: the NAPI threads' CPU (NAPI=1), and half way through
            # it the TIME_WAIT sockets on each side.
            (
                sleep "$WARMUP"
                n0=$(napi_ticks)
                sleep $((SECS / 2))
                tw="tw_checker=$(timewait "$DIR") tw_servers=$(timewait "$SRV")"
                sleep $((SECS - SECS / 2))
                n1=$(napi_ticks)
                [ -n "$NAPI_PIDS" ] && tw+=" napi_cpu_pct=$(awk -v t=$((n1 - n0)) -v hz="$(getconf CLK_TCK)" -v s="$SECS" 'BEGIN { printf "%.2f", 100 * t / hz / s }')"
                echo "$tw" >"$WORK/tw"
            ) &
            sampler=$!
            line=$(timeout $((WARMUP + SECS + 30)) ip netns exec "$DIR" $PIN_DIR \
                ${PERF:+perf record -q -g -o "$PERF.$mode.$type.$interval" --} \
                "$TARGET/release/examples/check_cost" "$WORK/cost.toml" "$WARMUP" "$SECS" \
                $([ "$mode" != rs-agent ] && echo "$mode"))
            wait "$sampler" || true
            after=$(cat "$conns" 2>/dev/null || echo 0)
            echo "type=$type interval_ms=$interval $line server_accepts_total=$((after - before)) $(cat "$WORK/tw")"
            # The next run starts without this one's TIME_WAIT sockets (they last 60 s).
            ip netns exec "$DIR" ss -K state time-wait >/dev/null 2>&1 || true
            ip netns exec "$SRV" ss -K state time-wait >/dev/null 2>&1 || true
        done
    done
done
