#!/usr/bin/env bash
# Where taskmesh-agent's time and memory go on the benchmark's request (tests/perf/run.sh set-up:
# same mesh, backend, CPU pinning, explicit-mode egress). Run as root:
# `tests/perf/profile.sh [perf|callgrind|both|heap]`.
#
#  perf       `perf record -e cpu-clock` (software sampling: this VM exposes no hardware
#             counters) with DWARF call graphs over the agent's life: start, $DURATION s of wrk at
#             $CONNS connections, stop;
#             prints the hottest symbols (self and with children).
#  callgrind  `valgrind --tool=callgrind` over exactly $REQUESTS requests (h2load --h1, $CONNS
#             connections, default 16) and over none: stable instruction counts per function (inclusive
#             and self), and the instructions per request (the difference of the two runs).
#             CACHE_SIM=1 adds L1d and L2 misses per request (a simulation of this machine's
#             per-core caches); PEER=nginx measures nginx the same way.
#  order      regenerates agent/symbol-order.txt, the functions the agent runs laid out first in
#             its binary (agent/build.rs): `valgrind --tool=callgrind --demangle=no` on the
#             release binary itself (the names carry hashes of its exact build) over start, the
#             first mesh load, $ORDER_REQUESTS HTTP/1.1 and h2c requests, admin reads and stop;
#             every function of the binary that ran, hottest first. Rebuild after it.
#  syscalls   the agent and nginx (tests/perf/nginx.conf, one process) in turn, $SYS_ROUNDS times,
#             each for $DURATION s of wrk at $CONNS connections (after $WARMUP s of warm-up) with
#             `perf stat` attached: per request, CPU time (task-clock), context switches, the
#             system calls by name, and requests served per epoll_wait call: what differs between the
#             two where user space is not the difference. PERF_TRACE=1 adds a `perf trace -s`
#             run of each (every system call traced: slow, but with the time spent in each).
#  heap       `heaptrack` over the agent's life: start, $DURATION s of wrk at $CONNS connections
#             (use CONNS=256 for the benchmark's peak), stop; prints the peak heap, the
#             allocation sites holding most of it at the peak, and the peak RSS (VmHWM).
#
# The agent is built with symbols in a separate cargo profile (`profiling`: release + line
# tables, not stripped) into target/profiling, so target/release is left alone (SKIP_BUILD=1: use
# the binaries already there; AGENT=path: profile that agent binary instead, e.g. a release
# build of another commit for an A/B comparison).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PERF=$ROOT/tests/perf
MODE=${1:-both}
DURATION=${DURATION:-8}
CONNS=${CONNS:-16}
REQUESTS=${REQUESTS:-20000}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
NS=taskmesh-prof
HOST=svc7.bench.local
URL=http://127.0.0.1:15001/api/v1/items

log() { printf '[profile %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ $(id -u) == 0 ]] || die "run as root"
case $MODE in perf | callgrind | both | heap | order | syscalls) ;; *) die "unknown mode '$MODE' (perf, callgrind, both, heap, order or syscalls)" ;; esac
ORDER_REQUESTS=${ORDER_REQUESTS:-2000}
need_pkgs=()
command -v wrk >/dev/null || need_pkgs+=(wrk)
command -v h2load >/dev/null || need_pkgs+=(nghttp2-client)
command -v taskset >/dev/null || need_pkgs+=(util-linux)
[[ $MODE != perf && $MODE != both && $MODE != syscalls ]] || command -v perf >/dev/null || need_pkgs+=(linux-perf)
[[ $MODE != syscalls ]] || command -v nginx >/dev/null || need_pkgs+=(nginx)
[[ $MODE != syscalls || -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || need_pkgs+=(libnginx-mod-stream)
[[ $MODE != callgrind && $MODE != both && $MODE != order ]] || command -v valgrind >/dev/null || need_pkgs+=(valgrind)
[[ $MODE != order ]] || command -v curl >/dev/null || need_pkgs+=(curl)
[[ $MODE != heap ]] || command -v heaptrack >/dev/null || need_pkgs+=(heaptrack)
if ((${#need_pkgs[@]})); then
    log "installing ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

if [[ ${SKIP_BUILD:-0} != 1 && $MODE == order ]]; then
    # Built alone, as the image (agent/Dockerfile) and tests/perf/run.sh build it: built together
    # with another package, shared dependencies get other features and every name another hash.
    log "building the release binaries"
    (cd "$ROOT" && cargo build -q --release -p taskmesh-agent --bin taskmesh-agent &&
        cargo build -q --release -p taskmesh-e2e --bin perf-backend)
elif [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "building the agent with symbols (cargo profile 'profiling')"
    (cd "$ROOT" && cargo build -q -p taskmesh-agent --bin taskmesh-agent --profile profiling \
        --config 'profile.profiling.inherits="release"' --config 'profile.profiling.strip="none"' \
        --config 'profile.profiling.debug="line-tables-only"' \
        --config 'profile.profiling.package.taskmesh-agent.strip="none"' &&
        cargo build --release -q -p taskmesh-e2e --bin perf-backend)
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
AGENT=${AGENT:-$TARGET_DIR/profiling/taskmesh-agent}
BACKEND=$TARGET_DIR/release/perf-backend

RUN=$(mktemp -d /tmp/taskmesh-prof.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "/etc/netns/$NS"
}
trap cleanup EXIT
ip netns del "$NS" 2>/dev/null || true
ip netns add "$NS"
ip -n "$NS" link set lo up
mkdir -p "/etc/netns/$NS"
cp "$PERF/hosts" "/etc/netns/$NS/hosts"
nsx() { ip netns exec "$NS" "$@"; }
wait_port() {
    local i
    for i in $(seq 1 300); do
        nsx bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null && return 0
        sleep 0.1
    done
    die "nothing listens on port $1 (logs in $RUN)"
}

# Background commands run as `ip netns exec … &` (not through a shell function) so that $! is the
# command itself: ip netns exec, taskset and env exec into it.
ip netns exec "$NS" taskset -c "$LOAD_CPU" "$BACKEND" 127.0.0.1:18081 127.0.0.1:18082 >"$RUN/backend.log" 2>&1 &
PIDS+=($!)
wait_port 18081
wait_port 18082

agent_env=(APPMESH_VIRTUAL_NODE_NAME=mesh/bench/virtualNode/bench-client
    "TASKMESH_CONFIG=file://$PERF/mesh.yaml" TASKMESH_WORKERS=1
    "TASKMESH_CACHE=$RUN/last-good.json")

if [[ $MODE == perf || $MODE == both ]]; then
    # perf starts the agent (attaching with -p records nothing on this VM).
    ip netns exec "$NS" taskset -c "$PROXY_CPU" perf record -q -e cpu-clock -F 1999 --call-graph dwarf,16384 \
        -o "$RUN/perf.data" -- env "${agent_env[@]}" LISTENER_DRAIN_WAIT_TIME_S=0 "$AGENT" >"$RUN/agent.log" 2>&1 &
    rec=$!
    PIDS+=("$rec")
    wait_port 15001
    pid=$(pgrep -P "$rec")
    nsx taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "Host: $HOST" "$URL" | tee "$RUN/wrk.txt"
    kill "$pid"
    wait "$rec" || true
    log "perf: hottest symbols, self time (top 40)"
    perf report -i "$RUN/perf.data" --no-children --stdio --sort comm,dso,symbol -g none --percent-limit 0.5 2>/dev/null |
        grep -v '^#' | grep -v '^$' | sed 's/  */ /g; s/ - - *$//' | cut -c1-200 >"$RUN/perf-self.txt" || true
    sed -n 1,40p "$RUN/perf-self.txt"
    log "perf: by thread"
    perf report -i "$RUN/perf.data" --no-children --stdio --sort comm -g none 2>/dev/null |
        grep -v '^#' | grep -v '^$' | sed 's/  */ /g' | sed -n 1,8p || true
    log "perf: with children (top 45)"
    perf report -i "$RUN/perf.data" --children --stdio --sort symbol -g none --percent-limit 3 2>/dev/null |
        grep -v '^#' | grep -v '^$' | sed 's/  */ /g; s/ - - *$//' | cut -c1-200 >"$RUN/perf-children.txt" || true
    sed -n 1,45p "$RUN/perf-children.txt"
fi

# CACHE_SIM=1: callgrind also simulates the data caches, modelled on this machine's per-core
# ones (L1d $D1, and $LL standing for the private L2, both size,associativity,line): misses per
# request, a stable measure of the per-request working set (the shared L3 is left out: other
# tenants' load decides how much of it is ours).
CACHE_SIM=${CACHE_SIM:-0}
D1=${D1:-32768,8,64}
LL=${LL:-1048576,16,64}
cache_flags=()
[[ $CACHE_SIM != 1 ]] || cache_flags=(--cache-sim=yes "--D1=$D1" "--LL=$LL")

# PEER=nginx: the callgrind mode measures nginx instead (tests/perf/nginx.conf, one process:
# `master_process off`), same request, same counts: the same yardstick for both.
PEER=${PEER:-}
case $PEER in
    "") ;;
    nginx)
        command -v nginx >/dev/null || die "PEER=nginx: nginx is not installed (tests/perf/run.sh installs it)"
        [[ $MODE == callgrind ]] || die "PEER=nginx goes with the callgrind mode"
        mkdir -p "$RUN/nginx"
        sed "s#@RUN@#$RUN/nginx#g" "$PERF/nginx.conf" >"$RUN/nginx/nginx.conf"
        ;;
    *) die "PEER=$PEER: only nginx" ;;
esac

# Runs the agent (or $PEER) under callgrind, sends $1 requests ($CONNS connections), stops it;
# prints the dump.
callgrind_run() {
    local n=$1 out=$RUN/callgrind.$1.out port=15001 url=$URL
    local cmd=(env "${agent_env[@]}" LISTENER_DRAIN_WAIT_TIME_S=0 valgrind --tool=callgrind
        "${cache_flags[@]}" --callgrind-out-file="$out" "$AGENT")
    if [[ $PEER == nginx ]]; then
        port=8081
        url=http://127.0.0.1:8081/api/v1/items
        cmd=(valgrind --tool=callgrind "${cache_flags[@]}" --callgrind-out-file="$out"
            nginx -c "$RUN/nginx/nginx.conf" -p "$RUN/nginx" -g "master_process off;")
    fi
    ip netns exec "$NS" taskset -c "$PROXY_CPU" "${cmd[@]}" >"$RUN/callgrind.$n.log" 2>&1 &
    local pid=$!
    wait_port "$port"
    sleep 1
    if ((n > 0)); then
        nsx taskset -c "$LOAD_CPU" h2load --h1 -t1 -c"$CONNS" -n "$n" -H ":authority: $HOST" "$url" |
            grep -E '^(finished|requests|status)' >&2
    fi
    # nginx stops gracefully on QUIT (TERM is its fast shutdown); the agent on TERM.
    if [[ $PEER == nginx ]]; then kill -QUIT "$pid"; else kill -TERM "$pid"; fi
    wait "$pid" 2>/dev/null || true
    kill -0 "$pid" 2>/dev/null && die "the agent under callgrind (pid $pid) did not stop"
    echo "$out"
}
ir_total() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'; }
# "event=count ..." of a dump's totals (Ir, and with CACHE_SIM=1 the cache events).
totals() {
    callgrind_annotate "$1" 2>/dev/null | awk '
        /^Ir/ && !ev { n = NF; for (i = 1; i <= NF; i++) ev_names[i] = $i; ev = 1 }
        /PROGRAM TOTALS/ { j = 0; for (i = 1; i <= NF && j < n; i++) if ($i !~ /^\(/) { v = $i; gsub(",", "", v); printf "%s=%s ", ev_names[++j], v } }'
}

if [[ $MODE == callgrind || $MODE == both ]]; then
    # Instructions per request = (start + N requests + stop) - (start + stop), over N: the
    # difference removes start-up (document parsing, table compilation) and shutdown.
    base=$(callgrind_run 0)
    dump=$(callgrind_run "$REQUESTS")
    b=$(ir_total "$base")
    t=$(ir_total "$dump")
    log "callgrind: start+stop $b instructions; with $REQUESTS requests $t: $(((t - b) / REQUESTS)) per request"
    if [[ $CACHE_SIM == 1 ]]; then
        # D1 misses (reads + writes) and L2 misses ("LL", reads + writes), per request.
        python3 - "$(totals "$base")" "$(totals "$dump")" "$REQUESTS" <<'PY' >&2
import sys
def parse(s):
    return {k: int(v) for k, v in (kv.split("=") for kv in s.split())}
b, t, n = parse(sys.argv[1]), parse(sys.argv[2]), int(sys.argv[3])
per = {k: (t[k] - b.get(k, 0)) / n for k in t}
print("[profile] cache simulation, per request: D1 misses %.0f (reads %.0f, writes %.0f); "
      "L2 misses %.0f (reads %.0f, writes %.0f)" % (
          per["D1mr"] + per["D1mw"], per["D1mr"], per["D1mw"],
          per["DLmr"] + per["DLmw"], per["DLmr"], per["DLmw"]))
PY
    fi
    log "callgrind: inclusive (top 45)"
    callgrind_annotate --inclusive=yes "$dump" 2>/dev/null >"$RUN/callgrind-inclusive.txt"
    sed -n '/^Ir/,$p' "$RUN/callgrind-inclusive.txt" | sed -n 1,48p
    log "callgrind: self (top 40)"
    callgrind_annotate "$dump" 2>/dev/null >"$RUN/callgrind-self.txt"
    sed -n '/^Ir/,$p' "$RUN/callgrind-self.txt" | sed -n 1,43p
fi
if [[ $MODE == order ]]; then
    RELEASE_AGENT=$TARGET_DIR/release/taskmesh-agent
    nm "$RELEASE_AGENT" >/dev/null 2>&1 || die "$RELEASE_AGENT has no symbol table"
    out=$RUN/callgrind.order.out
    ip netns exec "$NS" taskset -c "$PROXY_CPU" env "${agent_env[@]}" LISTENER_DRAIN_WAIT_TIME_S=0 valgrind --tool=callgrind \
        --demangle=no --callgrind-out-file="$out" "$RELEASE_AGENT" >"$RUN/agent-order.log" 2>&1 &
    pid=$!
    wait_port 15001
    wait_port 9901
    sleep 2
    nsx curl -sf -o /dev/null http://127.0.0.1:9901/ready
    nsx curl -sf -o /dev/null http://127.0.0.1:9901/stats/prometheus
    nsx taskset -c "$LOAD_CPU" h2load --h1 -t1 -c16 -n "$ORDER_REQUESTS" -H ":authority: $HOST" "$URL" |
        grep -E '^(finished|requests|status)' >&2
    nsx taskset -c "$LOAD_CPU" h2load -t1 -c4 -m10 -n "$ORDER_REQUESTS" -H ":authority: $HOST" "$URL" |
        grep -E '^(finished|requests|status)' >&2
    sleep 2
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    # Every function of the agent's own binary with a cost, hottest first (self cost).
    callgrind_annotate --threshold=100 "$out" 2>/dev/null |
        awk -v bin="[$RELEASE_AGENT]" '$NF == bin { f = $(NF - 1); sub(/^.*:/, "", f); if (f !~ /^0x/) print f }' >"$RUN/order.txt"
    n=$(wc -l <"$RUN/order.txt")
    ((n > 500)) || die "only $n functions found in $out"
    cp "$RUN/order.txt" "$ROOT/agent/symbol-order.txt"
    log "agent/symbol-order.txt: $n functions; rebuild the agent to lay them out"
fi
if [[ $MODE == heap ]]; then
    ip netns exec "$NS" taskset -c "$PROXY_CPU" env "${agent_env[@]}" LISTENER_DRAIN_WAIT_TIME_S=0 \
        heaptrack -o "$RUN/heaptrack" "$AGENT" >"$RUN/agent-heaptrack.log" 2>&1 &
    ht=$!
    PIDS+=("$ht")
    wait_port 15001
    sleep 1
    pid=$(pgrep -f "^$AGENT" | head -1)
    nsx taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "Host: $HOST" "$URL" | tee "$RUN/wrk.txt"
    log "agent VmHWM (peak RSS, heaptrack's own overhead included): $(awk '/VmHWM/ {print $2, $3}' "/proc/$pid/status")"
    kill -TERM "$pid"
    wait "$ht" || true
    data=$(ls "$RUN"/heaptrack* 2>/dev/null | head -1)
    heaptrack_print -f "$data" --print-peaks 1 --print-allocators 0 --print-temporary 0 \
        --print-leaks 0 --peak-limit 25 --merge-backtraces 1 >"$RUN/heap-peaks.txt" 2>/dev/null || true
    log "heaptrack: peak and the sites holding it"
    grep -E '^(peak heap memory|PEAK MEMORY)' -A400 "$RUN/heap-peaks.txt" | sed -n 1,400p | cut -c1-220 >"$RUN/heap-peaks-short.txt" || true
    sed -n 1,160p "$RUN/heap-peaks-short.txt"
    grep -E '^(total runtime|calls to allocation|peak heap|peak RSS)' "$RUN/heap-peaks.txt" || true
fi
if [[ $MODE == syscalls ]]; then
    SYS_ROUNDS=${SYS_ROUNDS:-3}
    WARMUP=${WARMUP:-3}
    PERF_TRACE=${PERF_TRACE:-0}
    mkdir -p "$RUN/nginx"
    sed "s#@RUN@#$RUN/nginx#g" "$PERF/nginx.conf" >"$RUN/nginx/nginx.conf"
    events=task-clock,context-switches
    for sc in epoll_wait epoll_pwait epoll_ctl recvfrom read readv sendto write writev sendmsg recvmsg \
        accept4 connect close getsockopt setsockopt getpid; do
        events+=",syscalls:sys_enter_$sc"
    done
    events+=",raw_syscalls:sys_enter"
    # One proxy ($1: agent or nginx) on CPU $PROXY_CPU: warm-up, then wrk with perf stat attached;
    # prints "name requests perf-stat-csv-file".
    sys_point() {
        local name=$1 i=$2 port pid
        if [[ $name == agent ]]; then
            port=15001
            ip netns exec "$NS" taskset -c "$PROXY_CPU" env "${agent_env[@]}" LISTENER_DRAIN_WAIT_TIME_S=0 \
                "$AGENT" >"$RUN/agent-sys.log" 2>&1 &
        else
            port=8081
            ip netns exec "$NS" taskset -c "$PROXY_CPU" nginx -c "$RUN/nginx/nginx.conf" -p "$RUN/nginx" \
                -g "master_process off;" >"$RUN/nginx-sys.log" 2>&1 &
        fi
        pid=$!
        wait_port "$port"
        local url=http://127.0.0.1:$port/api/v1/items
        nsx taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${WARMUP}s" -H "Host: $HOST" "$url" >/dev/null
        perf stat -x, -e "$events" -p "$pid" -o "$RUN/stat-$name-$i.csv" &
        local st=$!
        nsx taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "Host: $HOST" "$url" >"$RUN/wrk-$name-$i.txt"
        kill -INT "$st"
        wait "$st" || true
        if [[ $PERF_TRACE == 1 ]]; then
            perf trace -s -p "$pid" -o "$RUN/trace-$name-$i.txt" &
            st=$!
            sleep 1
            nsx taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "Host: $HOST" "$url" >"$RUN/wrk-trace-$name-$i.txt"
            kill -INT "$st"
            wait "$st" || true
        fi
        if [[ $name == nginx ]]; then kill -QUIT "$pid"; else kill -TERM "$pid"; fi
        wait "$pid" 2>/dev/null || true
        local reqs
        reqs=$(awk '/requests in/ { print $1 }' "$RUN/wrk-$name-$i.txt")
        [[ -n $reqs ]] || die "$name: wrk failed: $(cat "$RUN/wrk-$name-$i.txt")"
        echo "$name $reqs $RUN/stat-$name-$i.csv"
    }
    points=()
    for i in $(seq 1 "$SYS_ROUNDS"); do
        for name in agent nginx; do
            points+=("$(sys_point "$name" "$i")")
            log "round $i: ${points[-1]}"
        done
    done
    log "per request, $CONNS connections (median of $SYS_ROUNDS rounds, the rounds after '|')"
    printf '%s\n' "${points[@]}" | python3 "$PERF/report.py" --syscalls
    if [[ $PERF_TRACE == 1 ]]; then
        for f in "$RUN"/trace-*.txt; do
            log "perf trace -s: $f (requests: $(awk '/requests in/ { print $1 }' "${f/trace-/wrk-trace-}"))"
            grep -E '^\s+(epoll|recv|read|write|send|close|accept|connect|getsock|setsock|getpid)' "$f" | head -20
        done
    fi
fi
log "raw data in $RUN"
