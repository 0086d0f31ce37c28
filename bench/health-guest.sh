#!/bin/bash
# Runs inside the VM booted by bench/health.sh (never on a host: it loads modules and creates
# network namespaces). Two benchmarks, rs-agent `director run` side by side with keepalived:
#   (b) failure detection: director + 2 real servers, break one, time (in-process, ipvs_watch)
#       until the director's table shows it at weight 0; runs alternate rs-agent / keepalived,
#       each in fresh namespaces. Two kinds (DETECT_KINDS):
#         kill:   busybox httpd SIGKILLed (connections refused); end to end, timer phase included;
#         status: bench_listener switched to answering 503 (SIGUSR1); it logs every request
#                 with CLOCK_MONOTONIC, so each run also yields the phase (break -> 1st failed
#                 check), the spacing (1st -> fall-th failed check) and the reaction (fall-th
#                 failed check -> weight 0 seen), which compare the tools without the phase.
#   (c) checking cost: 2,000 real servers (500 addresses x 4 ports, one bench_listener),
#       CPU (utime+stime deltas) and RSS (VmRSS/VmHWM) of the checker over COST_SECS.
# Raw results go to OUT/detect.tsv, OUT/reaction.tsv and OUT/cost.tsv, the summary to
# OUT/summary.md.
#
# usage: health-guest.sh OUT AGENT IPVS_WATCH BENCH_LISTENER
# env:   RUNS (detection runs per implementation and kind, default 10), DETECT_KINDS ("kill
#        status"), COST_SECS (30),
#        COST_WARMUP (10), COST_TYPES ("http"; e.g. "http tcp http-reuse": http-reuse is
#        rs-agent's http check with reuse_connection = true), COST_INTERVALS (check
#        interval in ms, "1000"; e.g. "1000 10000"), SKIP_DETECT, SKIP_COST,
#        PROFILE=1 (after each cost window, 10 s of `perf record -e cpu-clock` on the checker
#        processes; reports in OUT/perf-*.txt), AGENT_B=PATH (a second rs-agent build, e.g.
#        before a change, also run in the cost bench as "rs-agent-b"), STRACE=1 (strace -tt
#        the checker during detection runs: OUT/strace-*.txt, to split the latency up)
set -u

OUT=$1 AGENT=$2 WATCH=$3 LISTENER=$4
RUNS=${RUNS:-10}
DETECT_KINDS=${DETECT_KINDS:-kill status}
COST_SECS=${COST_SECS:-30}
COST_WARMUP=${COST_WARMUP:-10}
COST_TYPES=${COST_TYPES:-http}
COST_INTERVALS=${COST_INTERVALS:-1000}
PROFILE=${PROFILE:-}
# 2,000 checks a second means thousands of sockets open at once on the listener's side.
ulimit -n 65536

# Detection settings (both implementations): HTTP GET /, interval 1 s, timeout 0.5 s, rise/fall 2.
INTERVAL_MS=1000 TIMEOUT_MS=500 RISE=2 FALL=2

# /run is a tmpfs under virtme-ng (the host root fs is shared read-only).
S=$(mktemp -d /run/hbench.XXXXXX)
LOG=$OUT/guest.log
say() { echo "HBENCH $*" | tee -a "$LOG"; }

# A sleep without a process (each exec costs 0.5-2 s under emulation): read on a FIFO nobody
# writes to.
mkfifo "$S/nap"
exec 9<>"$S/nap"
nap() { read -r -t "$1" -u 9 || true; }

CLK_TCK=$(getconf CLK_TCK)
STARTED=()   # pids this script started, killed on exit
NETNS=()     # namespaces this script created, deleted on exit

cleanup() {
    local p
    for p in "${STARTED[@]}"; do kill -KILL "$p" 2>/dev/null; done
    [ ${#NETNS[@]} -gt 0 ] && printf 'netns del %s\n' "${NETNS[@]}" | ip -force -batch - 2>/dev/null
    STARTED=() NETNS=()
}
trap cleanup EXIT

# Stops a process: SIGTERM, up to 10 s, then SIGKILL.
stop() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null
    for i in {1..50}; do kill -0 "$pid" 2>/dev/null || break; nap 0.2; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}

# Creates namespaces (one `ip` run) and records them for cleanup.
make_netns() {
    printf 'netns add %s\n' "$@" | ip -batch - || return 1
    NETNS+=("$@")
}

# Runs a batch of `ip` commands (stdin) inside namespace $1.
ipb() { ip -n "$1" -batch -; }

modprobe -a ip_vs ip_vs_rr ip_vs_wlc dummy veth || { say "FATAL modprobe failed"; exit 1; }
mkdir -p "$S/www"
echo ok > "$S/www/index.html"
say "kernel $(uname -r), $(nproc) cpus, keepalived $(keepalived --version 2>&1 | head -1)"

# ---------------------------------------------------------------------------------------------
# (b) failure detection

rs_agent_detect_conf() {
    cat <<EOF
[director]
interface = "eth0"
garp_count = 0

[[director.service]]
vip = "192.0.2.100"
port = 80
scheduler = "rr"

[director.service.check]
type = "http"
path = "/"
interval_ms = $INTERVAL_MS
timeout_ms = $TIMEOUT_MS
rise = $RISE
fall = $FALL
on_failure = "quiesce"

[[director.service.real]]
address = "198.51.100.11"

[[director.service.real]]
address = "203.0.113.12"
EOF
}

# keepalived has no rise/fall: a failed check is retried `retry` times, `delay_before_retry`
# apart, before the server goes down, so fall = retry + 1 and delay_before_retry = delay_loop.
keepalived_detect_conf() {
    local interval timeout rs
    interval=$(awk "BEGIN{print $INTERVAL_MS/1000}")
    timeout=$(awk "BEGIN{print $TIMEOUT_MS/1000}")
    echo "global_defs { router_id hbench }"
    echo "virtual_server 192.0.2.100 80 {"
    echo "  delay_loop $interval"
    echo "  lvs_sched rr"
    echo "  lvs_method DR"
    echo "  protocol TCP"
    echo "  inhibit_on_failure"
    for rs in 198.51.100.11 203.0.113.12; do
        echo "  real_server $rs 80 {"
        echo "    weight 1"
        echo "    HTTP_GET {"
        echo "      url { path / status_code 200 }"
        echo "      connect_timeout $timeout"
        echo "      retry $((FALL - 1))"
        echo "      delay_before_retry $interval"
        echo "    }"
        echo "  }"
    done
    echo "}"
}

# Starts the checker of implementation $1 in namespace $2 with config $3; prints its pid.
start_checker() {
    local impl=$1 ns=$2 conf=$3 tag=$4
    if [ "$impl" != keepalived ]; then
        local agent=$AGENT
        [ "$impl" = rs-agent-b ] && agent=$AGENT_B
        ip netns exec "$ns" "$agent" --state-dir "$S/state-$tag" -v director run \
            --config "$conf" >"$S/$tag.log" 2>&1 &
    else
        ip netns exec "$ns" keepalived --dont-fork --log-console --check --log-detail \
            -f "$conf" -p "$S/$tag.pid" -c "$S/$tag.cpid" -r "$S/$tag.vpid" \
            >"$S/$tag.log" 2>&1 &
    fi
    echo $!
}

detect_run() {
    local impl=$1 kind=$2 run=$3 d=hbd-dir r1=hbd-rs1 r2=hbd-rs2 tag conf web1 web2 checker out ms how
    local signal=kill split="" reqlog
    tag=detect-$kind-$impl-$run
    reqlog=$S/$tag.requests
    make_netns $d $r1 $r2 || return 1
    ipb $d <<EOF || return 1
link set lo up
link add eth0 type dummy
link set eth0 up
addr add 192.0.2.1/24 dev eth0
link add v1 type veth peer name eth0 netns $r1
link add v2 type veth peer name eth0 netns $r2
addr add 198.51.100.1/24 dev v1
addr add 203.0.113.1/24 dev v2
link set v1 up
link set v2 up
EOF
    printf 'link set lo up\naddr add 198.51.100.11/24 dev eth0\nlink set eth0 up\n' | ipb $r1 || return 1
    printf 'link set lo up\naddr add 203.0.113.12/24 dev eth0\nlink set eth0 up\n' | ipb $r2 || return 1
    if [ "$kind" = status ]; then
        signal=usr1
        BENCH_LOG=$reqlog ip netns exec $r1 "$LISTENER" "$S/$tag.count" 80 2>>"$LOG" & web1=$!
    else
        ip netns exec $r1 busybox httpd -f -p 80 -h "$S/www" & web1=$!
    fi
    ip netns exec $r2 busybox httpd -f -p 80 -h "$S/www" & web2=$!
    STARTED+=("$web1" "$web2")
    if [ "$impl" = rs-agent ]; then
        conf=$S/detect.toml
        rs_agent_detect_conf >"$conf"
    else
        conf=$S/detect-keepalived.conf
        keepalived_detect_conf >"$conf"
    fi
    checker=$(start_checker "$impl" $d "$conf" "$tag")
    STARTED+=("$checker")
    if [ -n "${STRACE:-}" ]; then
        strace -f -tt -e trace=connect,getsockopt,sendto,sendmsg,recvfrom,recvmsg,openat,rename \
            -o "$OUT/strace-$tag.txt" -p "$checker" 2>/dev/null &
        STARTED+=($!)
    fi
    out=$(ip netns exec $d "$WATCH" quiesce --dest 198.51.100.11:80 --kill "$web1" \
        --signal $signal --settle-ms 3500 --timeout-ms 40000 2>&1)
    if [ "$kind" = status ]; then
        # phase, spacing and reaction in ms from the request log (failed checks = 503s after
        # the switch) and ipvs_watch's monotonic stamps.
        split=$(awk -v out="$out" -v fall=$FALL '
            BEGIN { n = split(out, f, /[ =]/)
                    for (i = 1; i < n; i++) { if (f[i] == "kill_mono_ns") k = f[i + 1]; if (f[i] == "seen_mono_ns") w = f[i + 1] } }
            $2 == 503 && $1 >= k { fails[++nf] = $1 }
            END { if (k == "" || w == "" || nf < fall) { print "- - - -"; exit }
                  printf "%.1f %.1f %.1f %.1f", (fails[1] - k) / 1e6, (fails[fall] - fails[1]) / 1e6,
                      (w - fails[fall]) / 1e6, (w - fails[1]) / 1e6 }' "$reqlog")
        cp "$reqlog" "$OUT/$tag.requests"
    fi
    echo "$tag: $out; checker rss $(status_kb VmRSS $(procs_of "$checker")) kB" >>"$LOG"
    stop "$checker"
    cleanup
    case $out in
    detect_ms=*)
        ms=${out#detect_ms=}; ms=${ms%% *}; how=${out##*how=}; how=${how%% *}
        printf '%s\t%s\t%s\t%s\t%s\n' "$impl" "$run" "$ms" "$how" "$kind" >>"$OUT/detect.tsv"
        if [ -n "$split" ]; then
            printf '%s\t%s\t%s\t%s\n' "$impl" "$run" "$ms" "${split// /$'\t'}" >>"$OUT/reaction.tsv"
        fi
        say "detect $kind $impl run $run: ${ms} ms ($how)${split:+; phase spacing reaction spacing+reaction ms: $split}"
        ;;
    *)
        say "detect $kind $impl run $run: FAILED: $out"
        sed 's/^/    /' "$S/$tag.log" | tail -20 >>"$LOG"
        ;;
    esac
}

# ---------------------------------------------------------------------------------------------
# (c) checking cost: 4 services (VIP ports 8001-8004) x 500 real servers
# (198.51.100.1-250 and 203.0.113.1-250, same port as the service).

COST_PORTS="8001 8002 8003 8004"
cost_reals() {
    local i
    for i in $(seq 250); do echo "198.51.100.$i"; echo "203.0.113.$i"; done
}

rs_agent_cost_conf() {
    local type=$1 interval=$2 port rs
    printf '[director]\ninterface = "eth0"\ngarp_count = 0\n'
    for port in $COST_PORTS; do
        printf '\n[[director.service]]\nvip = "192.0.2.100"\nport = %s\nscheduler = "wlc"\n' "$port"
        printf '\n[director.service.check]\ntype = "%s"\n' "${type%-reuse}"
        [ "$type" != tcp ] && printf 'path = "/"\n'
        [ "$type" = http-reuse ] && printf 'reuse_connection = true\n'
        printf 'interval_ms = %s\ntimeout_ms = 1000\nrise = 2\nfall = 2\n' "$interval"
        for rs in $(cost_reals); do
            printf '\n[[director.service.real]]\naddress = "%s"\n' "$rs"
        done
    done
}

keepalived_cost_conf() {
    local type=$1 interval port rs check
    interval=$(awk "BEGIN{print $2/1000}")
    # keepalived has no keep-alive check: http-reuse runs its usual HTTP_GET (a new connection
    # per check) beside rs-agent's reuse_connection = true.
    if [ "$type" != tcp ]; then
        check="HTTP_GET { url { path / status_code 200 } connect_timeout 1 retry 1 delay_before_retry $interval }"
    else
        check="TCP_CHECK { connect_timeout 1 retry 1 delay_before_retry $interval }"
    fi
    echo "global_defs { router_id hbench }"
    for port in $COST_PORTS; do
        echo "virtual_server 192.0.2.100 $port {"
        echo "  delay_loop $interval"
        echo "  lvs_sched wlc"
        echo "  lvs_method DR"
        echo "  protocol TCP"
        echo "  inhibit_on_failure"
        for rs in $(cost_reals); do
            echo "  real_server $rs $port { weight 1"
            echo "    $check"
            echo "  }"
        done
        echo "}"
    done
}

# The checker's processes: the pid and (keepalived) its children.
procs_of() {
    local pid=$1
    echo "$pid"
    cat "/proc/$pid/task/$pid/children" 2>/dev/null | tr ' ' '\n' | grep .
}

# "utime stime" in clock ticks, each summed over the given pids.
ticks() {
    local user=0 sys=0 p f
    for p in "$@"; do
        read -r -a f <"/proc/$p/stat" || continue
        # Fields 14 and 15 (utime, stime); comm has no spaces for rs-agent and keepalived.
        user=$((user + f[13])) sys=$((sys + f[14]))
    done
    echo "$user $sys"
}

# A field of /proc/PID/status in kB, summed over the given pids.
status_kb() {
    local key=$1 total=0 p k v
    shift
    for p in "$@"; do
        while read -r k v _; do
            [ "$k" = "$key:" ] && total=$((total + v))
        done <"/proc/$p/status"
    done
    echo $total
}

# 10 s of cpu-clock samples (no PMU under TCG) on the given pids, after the measured window.
profile() {
    local tag=$1 pids
    shift
    pids=$(IFS=,; echo "$*")
    perf record -q -e cpu-clock -F 499 -p "$pids" -o "$S/$tag.perf" -- sleep 10 \
        >>"$LOG" 2>&1 || return
    perf report -i "$S/$tag.perf" --stdio --no-children --sort dso,sym -g none 2>/dev/null |
        grep -v '^$' | head -400 >"$OUT/perf-$tag.txt"
    perf report -i "$S/$tag.perf" --stdio --no-children --sort dso -g none 2>/dev/null |
        grep -v '^$' | head -40 >"$OUT/perf-$tag-dso.txt"
}

uptime_s() { local u _; read -r u _ </proc/uptime; echo "$u"; }

cost_run() {
    local impl=$1 type=$2 interval=$3 d=hbc-dir srv=hbc-srv tag conf checker out pids t0 t1 c0 c1
    local n0 n1 rss hwm per applied
    tag=cost-$impl-$type-$interval
    make_netns $d $srv || return 1
    ipb $d <<EOF || return 1
link set lo up
link add eth0 type dummy
link set eth0 up
addr add 192.0.2.1/25 dev eth0
link add v0 type veth peer name eth0 netns $srv
addr add 192.0.2.253/30 dev v0
link set v0 up
EOF
    {
        echo "link set lo up"
        echo "addr add 192.0.2.254/30 dev eth0"
        for rs in $(cost_reals); do echo "addr add $rs/32 dev eth0"; done
        echo "link set eth0 up"
    } | ipb $srv || return 1
    printf 'route add 198.51.100.0/24 via 192.0.2.254\nroute add 203.0.113.0/24 via 192.0.2.254\n' |
        ipb $d || return 1
    rm -f "$S/conns"
    ip netns exec $srv "$LISTENER" "$S/conns" $COST_PORTS 2>>"$LOG" &
    STARTED+=($!)
    if [ "$impl" != keepalived ]; then
        conf=$S/$tag.toml
        rs_agent_cost_conf "$type" "$interval" >"$conf"
    else
        conf=$S/$tag.conf
        keepalived_cost_conf "$type" "$interval" >"$conf"
    fi
    checker=$(start_checker "$impl" $d "$conf" "$tag")
    STARTED+=("$checker")
    applied=$(ip netns exec $d "$WATCH" count --min 2000 --timeout-ms 180000 2>&1)
    echo "$tag: applied: $applied" >>"$LOG"
    nap "$COST_WARMUP"
    mapfile -t pids < <(procs_of "$checker")
    t0=$(uptime_s) c0=$(ticks "${pids[@]}") n0=$(cat "$S/conns" 2>/dev/null || echo 0)
    nap "$COST_SECS"
    t1=$(uptime_s) c1=$(ticks "${pids[@]}") n1=$(cat "$S/conns" 2>/dev/null || echo 0)
    [ -n "$PROFILE" ] && profile "$tag" "${pids[@]}"
    rss=$(status_kb VmRSS "${pids[@]}")
    hwm=$(status_kb VmHWM "${pids[@]}")
    per=""
    for p in "${pids[@]}"; do
        per+="pid $p ($(cat /proc/$p/comm)): ticks (user sys) $(ticks "$p") rss $(status_kb VmRSS "$p") kB (anon $(status_kb RssAnon "$p"), file $(status_kb RssFile "$p")) hwm $(status_kb VmHWM "$p") kB; "
    done
    out=$(ip netns exec $d "$WATCH" count 2>&1)
    echo "$tag: processes: $per" >>"$LOG"
    echo "$tag: after: $out" >>"$LOG"
    stop "$checker"
    cp "$S/$tag.log" "$OUT/$tag.log"
    cleanup
    awk -v impl="$impl" -v type="$type" -v interval="$interval" -v t0="$t0" -v t1="$t1" -v c0="$c0" -v c1="$c1" \
        -v n0="$n0" -v n1="$n1" -v hz="$CLK_TCK" -v rss="$rss" -v hwm="$hwm" \
        -v np="${#pids[@]}" -v after="$out" -v applied="$applied" 'BEGIN {
            wall = t1 - t0; split(c0, x, " "); split(c1, y, " ")
            user = (y[1] - x[1]) / hz; sys = (y[2] - x[2]) / hz; cpu = user + sys
            split(after, a, /[ =]/); split(applied, b, /[ =]/)
            checks = n1 - n0; per = checks > 0 ? 1000 * cpu / checks : 0
            printf "%s\t%s\t%s\t%.1f\t%.2f\t%.2f\t%.2f\t%.1f\t%.0f\t%.2f\t%.1f\t%.1f\t%d\t%s\t%s\n",
                impl, type, interval, wall, cpu, user, sys, 100 * cpu / wall, checks / wall, per,
                rss / 1024, hwm / 1024, np, a[6], b[8]
        }' >>"$OUT/cost.tsv"
    say "cost $impl $type: $(tail -1 "$OUT/cost.tsv")"
}

# ---------------------------------------------------------------------------------------------

if [ -z "${SKIP_DETECT:-}" ]; then
    : >"$OUT/detect.tsv"
    : >"$OUT/reaction.tsv"
    for kind in $DETECT_KINDS; do
        for run in $(seq "$RUNS"); do
            detect_run rs-agent "$kind" "$run"
            detect_run keepalived "$kind" "$run"
        done
    done
fi
if [ -z "${SKIP_COST:-}" ]; then
    : >"$OUT/cost.tsv"
    for interval in $COST_INTERVALS; do
        for type in $COST_TYPES; do
            cost_run rs-agent "$type" "$interval"
            cost_run keepalived "$type" "$interval"
            [ -n "${AGENT_B:-}" ] && cost_run rs-agent-b "$type" "$interval"
        done
    done
fi

# A markdown row "| LABEL | n | median | max | min |" (plus "all runs" with ALL) of the sorted
# numbers on stdin.
stats_row() {
    awk -v label="$1" -v all="${2:-}" '{ v[NR] = $1; list = list (NR > 1 ? ", " : "") $1 }
        END {
            tail = all ? " |" : ""
            if (NR == 0) { printf "| %s | 0 | – | – | –%s |\n", label, tail; exit }
            med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "| %s | %d | %.0f | %.0f | %.0f", label, NR, med, v[NR], v[1]
            printf all ? " | %s |\n" : " |\n", list
        }'
}

# Summary (markdown) from the raw files.
{
    if [ -s "$OUT/detect.tsv" ]; then
        bound=$((INTERVAL_MS * FALL + TIMEOUT_MS + 100))
        for kind in $DETECT_KINDS; do
            case $kind in
            kill) what="web server SIGKILLed" ;;
            *) what="web server answers 503" ;;
            esac
            echo "Failure detection, $kind (HTTP check, interval ${INTERVAL_MS} ms, timeout ${TIMEOUT_MS} ms, rise ${RISE}, fall ${FALL}; $what → weight 0):"
            echo
            echo "| director | runs | median ms | max ms | min ms | all runs (ms) |"
            echo "|---|---|---|---|---|---|"
            for impl in rs-agent keepalived; do
                awk -F'\t' -v impl="$impl" -v kind="$kind" '$1 == impl && $5 == kind { print $3 }' \
                    "$OUT/detect.tsv" | sort -n | stats_row "$impl" all
            done
            echo
        done
        echo "Bound interval × fall + timeout + 100 ms = ${bound} ms; interval × fall + 100 ms = $((INTERVAL_MS * FALL + 100)) ms."
        echo
    fi
    if [ -s "$OUT/reaction.tsv" ]; then
        echo "Without the timer phase (kind status; ms from bench_listener's request log and ipvs_watch, one clock):"
        echo "phase = switch to 503 → first failed check; spacing = first → deciding (fall = ${FALL}) failed check; reaction = deciding failed check → weight 0 seen (ipvs_watch polls every 5 ms); spacing + reaction = detection without the phase."
        echo
        echo "| director | part | runs | median ms | max ms | min ms |"
        echo "|---|---|---|---|---|---|"
        for impl in rs-agent keepalived; do
            for col in 4:phase 5:spacing 6:reaction "7:spacing + reaction"; do
                awk -F'\t' -v impl="$impl" -v c="${col%%:*}" '$1 == impl && $c != "-" { print $c }' \
                    "$OUT/reaction.tsv" | sort -n | stats_row "$impl | ${col#*:}"
            done
        done
        echo
    fi
    if [ -s "$OUT/cost.tsv" ]; then
        echo "Checking cost, 2,000 real servers (4 services × 500), timeout 1 s, rise/fall 2, over ${COST_SECS} s after ${COST_WARMUP} s warm-up:"
        echo
        echo "| director | check | interval ms | wall s | CPU s (user + sys) | CPU % of one core | checks/s seen by servers | CPU ms per check | RSS MiB | peak RSS (VmHWM) MiB | processes | quiesced at end | ms to apply 2,000 |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        awk -F'\t' '{ printf "| %s | %s | %s | %s | %s (%s + %s) | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15 }' "$OUT/cost.tsv"
        echo
    fi
} >"$OUT/summary.md"
cat "$OUT/summary.md" | sed 's/^/HBENCH | /'
say "done"
