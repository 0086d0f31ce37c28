#!/bin/bash
# Director benchmark, guest side: runs inside a VM whose kernel has IPVS (see bench/ipvs.sh).
#
#   ipvs-guest.sh RS_AGENT OUTDIR [SIZES] [RUNS] [CMD_TIMEOUT]
#
# For each size S (services x 16 real servers) and run, in a FRESH network namespace each:
#   bulk     rs-agent `director up` | `ipvsadm-restore < file` | keepalived until the table is full
# then one weight change in the S=1000 table:
#   weight   rs-agent `director up` | rs-agent `director run` + SIGHUP until it logs the applied
#            weight | one `ipvsadm -e` | keepalived SIGHUP until the weight shows
# Raw results go to OUTDIR/raw.txt as "RESULT case S tool run microseconds [note]".
# Every wait is bounded: rs-agent gets CMD_TIMEOUT seconds (default 120), ipvsadm-restore 300 s,
# keepalived polls stop after 120 s. A measurement that times out is recorded as FAIL, not as
# a number, and that tool's later (larger) runs of the same case are skipped.
set -u

RS_AGENT=${1:?usage: ipvs-guest.sh RS_AGENT OUTDIR [SIZES] [RUNS]}
OUTDIR=${2:?usage: ipvs-guest.sh RS_AGENT OUTDIR [SIZES] [RUNS]}
SIZES=${3:-100 1000 4000}
RUNS=${4:-3}
# The copy re-executed in a namespace gets its settings from the environment, not arguments.
CMD_TIMEOUT=${IPVS_BENCH_CMD_TIMEOUT:-${5:-120}}
export IPVS_BENCH_CMD_TIMEOUT=$CMD_TIMEOUT
RESTORE_TIMEOUT=300
WEIGHT_SIZE=1000
REALS_PER_SERVICE=16
POLL_SECONDS=0.02
POLL_LIMIT=6000 # x 20 ms = 120 s
HERE=$(cd "$(dirname "$0")" && pwd)
RAW=$OUTDIR/raw.txt

# Inputs and state live on a guest tmpfs: the shared directory is 9p, slow under emulation.
WORK=${IPVS_BENCH_WORK:-$(mktemp -d /tmp/ipvs-bench.XXXXXX)} || exit 1
export IPVS_BENCH_WORK=$WORK

log() { echo "bench: $*" >&2; }
result() { echo "RESULT $*" | tee -a "$RAW"; }
now_us() { echo "${EPOCHREALTIME/./}"; }

# Number of destinations in this namespace's IPVS table (/proc/net/ip_vs is what ipvsadm -Ln
# shows, without the netlink dump and formatting; its header line does not match).
dest_count() { grep -c '^  -> [0-9A-F]\{8\}:' /proc/net/ip_vs; }

# Weight of one destination as `ipvsadm -Ln` shows it ("" if absent).
dest_weight() { # VIP:PORT RS:PORT
    ipvsadm -Ln -t "$1" | awk -v rs="$2" '$1 == "->" && $2 == rs { print $4 }'
}

# Polls (bounded) until `dest_count` is at least $1. Returns 1 on timeout.
wait_count() {
    local want=$1 i
    for ((i = 0; i < POLL_LIMIT; i++)); do
        [ "$(dest_count)" -ge "$want" ] && return 0
        sleep "$POLL_SECONDS"
    done
    return 1
}

# Polls (bounded) until the destination shows weight $3. Returns 1 on timeout.
wait_weight() { # VIP:PORT RS:PORT WEIGHT
    local i
    for ((i = 0; i < POLL_LIMIT; i++)); do
        [ "$(dest_weight "$1" "$2")" = "$3" ] && return 0
        sleep "$POLL_SECONDS"
    done
    return 1
}

# --- inside a namespace (the script re-executes itself under `ip netns exec`) ---------------

# Prints the elapsed microseconds of one measurement, or FAIL and a reason.
measure() { # CASE TOOL S DIR
    local case=$1 tool=$2 s=$3 dir=$4 t0 t1 want=$(($3 * REALS_PER_SERVICE))
    local vs rs
    read -r vs rs <"$dir/weight-change"
    case "$case/$tool" in
    bulk/rs-agent)
        t0=$(now_us)
        timeout "$CMD_TIMEOUT" "$RS_AGENT" --state-dir "$WORK/state.$$" director up \
            --config "$dir/rs-agent.toml" >"$WORK/out.$$" 2>&1
        failed "$?" rs-agent && return
        t1=$(now_us)
        full "$want" || return
        echo "$((t1 - t0)) $(grep -o '[0-9]* netlink write(s)' "$WORK/out.$$" | tr ' ' _)"
        ;;
    bulk/ipvsadm-restore)
        t0=$(now_us)
        timeout "$RESTORE_TIMEOUT" ipvsadm-restore <"$dir/ipvs.restore" >"$WORK/out.$$" 2>&1
        failed "$?" ipvsadm-restore && return
        t1=$(now_us)
        full "$want" || return
        echo "$((t1 - t0))"
        ;;
    bulk/keepalived)
        t0=$(now_us)
        keepalived_start "$dir/keepalived.conf"
        wait_count "$want" || { keepalived_stop; echo "FAIL timeout: $(dest_count) of $want"; return; }
        t1=$(now_us)
        full "$want" || { keepalived_stop; return; }
        keepalived_stop
        echo "$((t1 - t0))"
        ;;
    weight/rs-agent)
        # The table is loaded the same way for every tool. Made by ipvsadm, its services are
        # not rs-agent's (its state directory is new): `--adopt` takes over the ones its
        # config names, and only the one weight changes in the kernel.
        ipvsadm-restore <"$dir/ipvs.restore" || { echo "FAIL setup"; return; }
        t0=$(now_us)
        timeout "$CMD_TIMEOUT" "$RS_AGENT" --state-dir "$WORK/state.$$" director up --adopt \
            --config "$dir/rs-agent-w.toml" >"$WORK/out.$$" 2>&1
        failed "$?" rs-agent && return
        t1=$(now_us)
        [ "$(dest_weight "$vs" "$rs")" = 5 ] || { echo "FAIL weight not applied"; return; }
        echo "$((t1 - t0)) $(grep -o '[0-9]* IPVS change(s) in [0-9]* netlink write(s)' \
            "$WORK/out.$$" | tr ' ' _)"
        ;;
    weight/rs-agent-reload)
        # The daemon path: `director run --adopt` takes over the table ipvsadm made (untimed),
        # then SIGHUP with the changed config; timed until the daemon logs the applied weight
        # (it logs after the kernel acked it).
        ipvsadm-restore <"$dir/ipvs.restore" || { echo "FAIL setup"; return; }
        local cfg=$WORK/reload.toml.$$ fifo=$WORK/reload.fifo.$$ pid
        cp "$dir/rs-agent.toml" "$cfg" && mkfifo "$fifo" || { echo "FAIL setup"; return; }
        RS_AGENT_LOG=info "$RS_AGENT" --state-dir "$WORK/state.$$" director run --adopt \
            --config "$cfg" 2>"$fifo" >/dev/null &
        pid=$!
        exec 3<"$fifo"
        if ! until_line 3 "director configured"; then
            daemon_stop "$pid"
            echo "FAIL setup: director run did not report configured"
            return
        fi
        cp "$dir/rs-agent-w.toml" "$cfg"
        t0=$(now_us)
        kill -HUP "$pid"
        if ! until_line 3 "weight 5)"; then
            daemon_stop "$pid"
            echo "FAIL timeout: no applied weight after SIGHUP"
            return
        fi
        t1=$(now_us)
        # After the clock stops: the pass's summary line, with its netlink write count.
        local changes="?" writes="?"
        if until_line 3 "reconciled"; then
            [[ $LINE =~ ipvs_changes=([0-9]+) ]] && changes=${BASH_REMATCH[1]}
            [[ $LINE =~ netlink_writes=([0-9]+) ]] && writes=${BASH_REMATCH[1]}
        fi
        daemon_stop "$pid"
        [ "$(dest_weight "$vs" "$rs")" = 5 ] || { echo "FAIL weight not applied"; return; }
        echo "$((t1 - t0)) ${changes}_IPVS_change(s)_in_${writes}_netlink_write(s)"
        ;;
    weight/ipvsadm)
        ipvsadm-restore <"$dir/ipvs.restore" || { echo "FAIL setup"; return; }
        t0=$(now_us)
        ipvsadm -e -t "$vs" -r "$rs" -g -w 5 || { echo "FAIL ipvsadm -e"; return; }
        t1=$(now_us)
        [ "$(dest_weight "$vs" "$rs")" = 5 ] || { echo "FAIL weight not applied"; return; }
        echo "$((t1 - t0))"
        ;;
    weight/keepalived)
        cp "$dir/keepalived.conf" "$WORK/k.conf.$$"
        keepalived_start "$WORK/k.conf.$$"
        wait_count "$want" || { keepalived_stop; echo "FAIL setup: $(dest_count) of $want"; return; }
        cp "$dir/keepalived-w.conf" "$WORK/k.conf.$$"
        t0=$(now_us)
        kill -HUP "$KEEPALIVED_PID"
        wait_weight "$vs" "$rs" 5 || { keepalived_stop; echo "FAIL timeout"; return; }
        t1=$(now_us)
        keepalived_stop
        echo "$((t1 - t0))"
        ;;
    *) echo "FAIL unknown measurement $case/$tool" ;;
    esac
}

# Reads lines from fd $1 until one contains $2 (left in LINE): at most 100,000 lines, 120 s
# each.
until_line() { # FD TEXT
    local i
    for ((i = 0; i < 100000; i++)); do
        read -r -t 120 LINE <&"$1" || return 1
        [[ $LINE == *"$2"* ]] && return 0
    done
    return 1
}

# Stops a process: TERM, at most 60 s for it to exit, then KILL.
stop_pid() { # PID
    local i
    kill -TERM "$1" 2>/dev/null
    for ((i = 0; i < 600; i++)); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}

# Stops a `director run` started with its log on fd 3: closes the log first.
daemon_stop() { # PID
    exec 3<&-
    stop_pid "$1"
}

# True (and prints FAIL) if a command's status says it failed or timed out.
failed() { # STATUS WHAT
    [ "$1" = 0 ] && return 1
    if [ "$1" = 124 ]; then
        echo "FAIL timeout: $2 still running after the time limit"
    else
        echo "FAIL $2 exited $1: $(tail -1 "$WORK/out.$$" | tr '\n' ' ')"
    fi
}

# True if the table holds exactly $1 destinations; else prints FAIL with both views' counts.
full() { # WANT
    local proc cli
    proc=$(dest_count)
    [ "$proc" -eq "$1" ] && return 0
    cli=$(ipvsadm -Ln | grep -c '^  -> [0-9]')
    echo "FAIL table has $proc of $1 destinations (ipvsadm -Ln: $cli)"
    return 1
}

# keepalived, checker subsystem only, in the foreground, pid files and log on the tmpfs.
keepalived_start() { # CONF
    local p=$WORK/keepalived.$$
    keepalived --dont-fork --log-console --no-syslog --check --dont-release-ipvs \
        -f "$1" -p "$p.pid" -c "$p.checkers.pid" -r "$p.vrrp.pid" -b "$p.bfd.pid" \
        >>"$OUTDIR/keepalived.log" 2>&1 &
    KEEPALIVED_PID=$!
}

keepalived_stop() {
    stop_pid "$KEEPALIVED_PID"
}

if [ "${IPVS_BENCH_IN_NS:-}" = 1 ]; then
    shift 2
    measure "$@"
    exit 0
fi

# --- outside: namespaces, the loop, the summary ------------------------------------------------

ns_create() { # NAME
    ip netns add "$1" &&
        ip -n "$1" link set lo up &&
        ip -n "$1" link add eth0 type dummy &&
        ip -n "$1" addr add 198.51.100.1/24 dev eth0 &&
        ip -n "$1" addr add 203.0.113.1/24 dev eth0 &&
        ip -n "$1" link set eth0 up
}

# Empties the table synchronously first, so the namespace's teardown does not overlap the next
# measurement, then waits for the kernel to settle.
ns_delete() { # NAME
    ip netns exec "$1" ipvsadm -C
    ip netns del "$1"
    sleep 1
}

one() { # CASE TOOL S RUN
    local ns="bench-$1-$2-$3-$4" out
    ns_create "$ns" || { result "$1 $3 $2 $4 FAIL namespace"; return; }
    if [[ " $SKIP " == *" $1/$2 "* ]]; then
        result "$1 $3 $2 $4 FAIL skipped: timed out at a smaller size or earlier run"
        return
    fi
    out=$(IPVS_BENCH_IN_NS=1 ip netns exec "$ns" "$0" "$RS_AGENT" "$OUTDIR" \
        "$1" "$2" "$3" "$WORK/gen-$3" </dev/null)
    result "$1 $3 $2 $4 $out"
    [[ "$out" == "FAIL timeout"* ]] && SKIP="$SKIP $1/$2"
    ns_delete "$ns"
}

SKIP=""
main() {
    modprobe ip_vs && modprobe ip_vs_rr && modprobe dummy || { log "cannot load ip_vs, ip_vs_rr, dummy"; exit 1; }
    : >"$RAW"
    : >"$OUTDIR/keepalived.log"
    echo "# time limits: rs-agent ${CMD_TIMEOUT}s, ipvsadm-restore ${RESTORE_TIMEOUT}s, keepalived polls 120s" >>"$RAW"
    echo "# kernel $(uname -r), $(nproc) CPU(s), ipvsadm $(ipvsadm --version 2>&1 | awk '{print $2}'), $(keepalived --version 2>&1 | head -1)" >>"$RAW"
    local s run tool t0 t1
    for s in $SIZES $WEIGHT_SIZE; do
        [ -d "$WORK/gen-$s" ] || python3 "$HERE/gen.py" "$s" "$WORK/gen-$s" || exit 1
    done
    # Baselines: what starting a process costs here.
    for run in $(seq 1 "$RUNS"); do
        t0=$(now_us); /bin/true; t1=$(now_us)
        result "start 0 /bin/true $run $((t1 - t0))"
        t0=$(now_us); "$RS_AGENT" --version >/dev/null; t1=$(now_us)
        result "start 0 rs-agent--version $run $((t1 - t0))"
    done
    for s in $SIZES; do
        for run in $(seq 1 "$RUNS"); do
            for tool in rs-agent ipvsadm-restore keepalived; do
                log "bulk S=$s run $run $tool"
                one bulk "$tool" "$s" "$run"
            done
        done
    done
    for run in $(seq 1 "$RUNS"); do
        for tool in rs-agent rs-agent-reload ipvsadm keepalived; do
            log "weight S=$WEIGHT_SIZE run $run $tool"
            one weight "$tool" "$WEIGHT_SIZE" "$run"
        done
    done
    python3 "$HERE/summary.py" "$RAW" >"$OUTDIR/results.txt"
    cat "$OUTDIR/results.txt"
}

main
