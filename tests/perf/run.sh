#!/usr/bin/env bash
# taskmesh-agent against nginx and haproxy, and against no proxy at all, on this machine, in one
# run; writes BENCHMARKS.md at the repository root. Run as root (network namespace, iptables,
# resetting a process's peak RSS): `tests/perf/run.sh`. Not part of scripts/test.sh.
#
# What it does (about 4 minutes per round, 21 with the default 5 rounds, once the release build
# exists):
#  1. installs wrk, nginx (+ stream module), haproxy, h2load (nghttp2-client), iperf3 if missing;
#  2. builds taskmesh-agent and perf-backend (tests/src/bin/perf-backend.rs) in release;
#  3. makes a network namespace with its own hosts file (tests/perf/hosts: the mesh's DNS names)
#     and one nat rule (port 9000 -> the agent's egress port, for the tcpRoute run), so nothing
#     here touches the machine's own network or ports;
#  4. starts perf-backend (HTTP/1.1 + h2c, 127.0.0.1:18081 "v1" and :18082 "v2") and an iperf3
#     server (127.0.0.1:25201, the TCP sink); client tools and backends share CPU $LOAD_CPU, each
#     proxy runs alone on CPU $PROXY_CPU with one worker (agent TASKMESH_WORKERS=1, nginx
#     worker_processes 1, haproxy nbthread 1);
#  5. $ROUNDS rounds of: wrk (HTTP/1.1 keep-alive) at each of $CONNS connections ($WARMUP s
#     warm-up, then $DURATION s measured), h2load (h2c) and iperf3 through the TCP route, each
#     point through direct / agent / agent-trace / nginx / haproxy in turn, the proxy started
#     for it and stopped after (its first start in a round checks that the route answers 200
#     with the 90/10 split and records its idle RSS), recording the proxy's peak RSS (VmHWM,
#     reset before each measured run), CPU time, the TCP segments sent in the namespace and the
#     proxy's context switches. agent-trace is the same agent tracing every
#     request (TASKMESH_TRACE_SAMPLING=1) to an OTLP/HTTP sink (a second perf-backend on
#     127.0.0.1:4318, CPU $LOAD_CPU); its spans exported and dropped are read from its
#     /stats/prometheus after each point (no TCP run: opaque TCP gets no spans). Head to head
#     (h2h): after the wrk points, at each connection count, the agent and nginx, then the
#     agent and haproxy, run at the same time on CPU $PROXY_CPU, each in its own namespace
#     (the second one, $NS_B, has its own backend and the same nat rule) with its own wrk, both
#     ways round: their ratios of requests and CPU per request are free of the machine's drift;
#  6. runs the route-table criterion benchmarks (cargo bench -p taskmesh-mesh);
#  7. renders BENCHMARKS.md with tests/perf/report.py.
#
# Knobs (environment): ROUNDS (5: step 5 is repeated, and BENCHMARKS.md reports each figure's
# median; within a round the proxies take turns point by point: all at 16 connections, then all
# at 256, and so on, each started for its point and stopped after; this machine's speed drifts
# by tens of percent from minute to minute, and measuring one proxy after the other would hand
# the drift to whichever ran then),
# DURATION (6), WARMUP (3), CONNS ("16 256"), H2_CONNS (16), H2_STREAMS (10),
# TCP_SECONDS (5), PROXY_CPU (1), LOAD_CPU (0), LOAD_MAX (1.5) and LOAD_WAIT (0 seconds: how long
# to wait for the 1-minute load average to fall under LOAD_MAX before measuring), PROXIES
# ("direct agent agent-trace nginx haproxy"), KINDS ("http1 h2h h2 tcp": which runs; fewer for a
# quick look, the report then leaves the others' tables out), SKIP_BENCH (1: no criterion run), OUT (BENCHMARKS.md path),
# MESH (the agent's mesh document, default tests/perf/mesh.yaml), SKIP_BUILD (1: use the release
# binaries already under the target directory, e.g. for an A/B run of a binary built elsewhere).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PERF=$ROOT/tests/perf
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-3}
CONNS=${CONNS:-"16 256"}
H2_CONNS=${H2_CONNS:-16}
H2_STREAMS=${H2_STREAMS:-10}
TCP_SECONDS=${TCP_SECONDS:-5}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
LOAD_MAX=${LOAD_MAX:-1.5}
LOAD_WAIT=${LOAD_WAIT:-0}
PROXIES=${PROXIES:-"direct agent agent-trace nginx haproxy"}
KINDS=${KINDS:-"http1 h2h h2 tcp"}
ROUNDS=${ROUNDS:-5}
SKIP_BENCH=${SKIP_BENCH:-0}
OUT=${OUT:-$ROOT/BENCHMARKS.md}
MESH=${MESH:-$PERF/mesh.yaml}
SKIP_BUILD=${SKIP_BUILD:-0}
NS=taskmesh-perf
NS_MAIN=$NS
NS_B=taskmesh-perf-b # the second side of the head-to-head runs
HOST=svc7.bench.local
URL_PATH=/api/v1/items

log() { printf '[perf %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (network namespace, iptables, /proc/<pid>/clear_refs)"

# ---- 1. tools ---------------------------------------------------------------------------------
need_pkgs=()
command -v wrk >/dev/null || need_pkgs+=(wrk)
command -v nginx >/dev/null || need_pkgs+=(nginx)
[[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || need_pkgs+=(libnginx-mod-stream)
command -v haproxy >/dev/null || need_pkgs+=(haproxy)
command -v h2load >/dev/null || need_pkgs+=(nghttp2-client)
command -v iperf3 >/dev/null || need_pkgs+=(iperf3)
command -v iptables >/dev/null || need_pkgs+=(iptables)
command -v taskset >/dev/null || need_pkgs+=(util-linux)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v python3 >/dev/null || need_pkgs+=(python3)
if ((${#need_pkgs[@]})); then
    log "installing ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
ncpu=$(nproc)
((PROXY_CPU < ncpu && LOAD_CPU < ncpu)) || die "PROXY_CPU=$PROXY_CPU / LOAD_CPU=$LOAD_CPU: this machine has $ncpu CPUs"

# ---- 2. build ---------------------------------------------------------------------------------
if [[ $SKIP_BUILD != 1 ]]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release -q -p taskmesh-agent --bin taskmesh-agent \
        && cargo build --release -q -p taskmesh-e2e --bin perf-backend)
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
AGENT=$TARGET_DIR/release/taskmesh-agent
BACKEND=$TARGET_DIR/release/perf-backend
[[ -x $AGENT && -x $BACKEND ]] || die "release binaries missing under $TARGET_DIR/release"

# ---- 3. namespace -----------------------------------------------------------------------------
RUN=$(mktemp -d /tmp/taskmesh-perf.XXXXXX)
RESULTS=$RUN/results.jsonl
: >"$RESULTS"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    local ns
    for ns in "$NS_MAIN" "$NS_B"; do
        ip netns del "$ns" 2>/dev/null || true
        rm -rf "/etc/netns/$ns"
    done
}
trap cleanup EXIT
# A namespace with loopback up, the mesh's hosts file, and the tcpRoute run's nat rule: a
# connection to 127.0.0.1:9000 is redirected to the agent's egress listener, which finds the
# route by the original destination port (SO_ORIGINAL_DST). Every namespace gets the rule: it
# makes the kernel track every connection of the namespace, and in the head-to-head runs a
# namespace without it would give its proxy less work per packet than the other's.
make_ns() {
    ip netns del "$1" 2>/dev/null || true
    ip netns add "$1"
    ip -n "$1" link set lo up
    mkdir -p "/etc/netns/$1"
    cp "$PERF/hosts" "/etc/netns/$1/hosts"
    ip netns exec "$1" iptables -t nat -A OUTPUT -p tcp -d 127.0.0.1 --dport 9000 -j REDIRECT --to-ports 15001
}
make_ns "$NS"
# Every helper below works in namespace $NS: the head-to-head runs call some with NS=$NS_B.
nsx() { ip netns exec "$NS" "$@"; }

on_load() { nsx taskset -c "$LOAD_CPU" "$@"; }
# Starts a command in the background on CPU $1 with output to file $2; BG_PID is the command's
# own pid (ip netns exec and taskset exec into it).
BG_PID=
start_bg() {
    local cpu=$1 out=$2
    shift 2
    ip netns exec "$NS" taskset -c "$cpu" "$@" >"$out" 2>&1 &
    BG_PID=$!
    PIDS+=("$BG_PID")
}

# Waits until something accepts on 127.0.0.1:$1 inside the namespace, while process $2 lives.
wait_port() {
    local i
    for i in $(seq 1 100); do
        if nsx bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; then return 0; fi
        [[ -z ${2:-} ]] || kill -0 "$2" 2>/dev/null || die "pid $2 exited before listening on port $1; its output: $3: $(tail -5 "$3")"
        sleep 0.1
    done
    die "nothing listens on port $1 (logs in $RUN)"
}

# ---- 4. backend and sink ----------------------------------------------------------------------
start_bg "$LOAD_CPU" "$RUN/backend.log" "$BACKEND" 127.0.0.1:18081 127.0.0.1:18082
wait_port 18081 "$BG_PID" "$RUN/backend.log"
wait_port 18082 "$BG_PID" "$RUN/backend.log"
start_bg "$LOAD_CPU" "$RUN/iperf3-server.log" iperf3 -s -B 127.0.0.1 -p 25201
wait_port 25201 "$BG_PID" "$RUN/iperf3-server.log"
# The OTLP/HTTP sink of the agent-trace run (answers POST /v1/traces with 200).
OTLP_SINK=127.0.0.1:4318
start_bg "$LOAD_CPU" "$RUN/otlp-sink.log" "$BACKEND" "$OTLP_SINK"
wait_port "${OTLP_SINK##*:}" "$BG_PID" "$RUN/otlp-sink.log"

# The head-to-head runs' second namespace, with its own backend on the same CPU as the first's.
if [[ " $KINDS " == *" h2h "* ]]; then
    make_ns "$NS_B"
    NS=$NS_B start_bg "$LOAD_CPU" "$RUN/backend-b.log" "$BACKEND" 127.0.0.1:18081 127.0.0.1:18082
    NS=$NS_B wait_port 18081 "$BG_PID" "$RUN/backend-b.log"
    NS=$NS_B wait_port 18082 "$BG_PID" "$RUN/backend-b.log"
fi

sed "s#@RUN@#$RUN#g" "$PERF/nginx.conf" >"$RUN/nginx.conf"
sed "s#@RUN@#$RUN#g" "$PERF/haproxy.cfg" >"$RUN/haproxy.cfg"
mkdir -p "$RUN/cache"

# ---- measuring helpers ------------------------------------------------------------------------
PROXY_PIDS=() # the proxy's processes (nginx: master and worker)

proc_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
sum_kb() {
    local p t=0
    for p in "${PROXY_PIDS[@]}"; do t=$((t + $(proc_kb "$p" "$1"))); done
    echo "$t"
}
cpu_ticks() {
    local p t=0
    for p in "${PROXY_PIDS[@]}"; do
        # utime + stime: fields 14 and 15, counted after the ")" closing the command name.
        t=$((t + $(sed 's/.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 }')))
    done
    echo "$t"
}
# The proxy's context switches so far (voluntary: it slept in epoll_wait; involuntary: preempted).
ctx_switches() {
    local p t=0
    for p in "${PROXY_PIDS[@]}"; do
        t=$((t + $(proc_kb "$p" voluntary_ctxt_switches) + $(proc_kb "$p" nonvoluntary_ctxt_switches)))
    done
    echo "$t"
}
# TCP segments sent in the namespace so far (every hop is on its loopback: requests, responses and
# pure ACKs, client, proxy and backend alike).
tcp_out_segs() { nsx awk '$1 == "Tcp:" && $2 ~ /^[0-9]/ { print $12 }' /proc/net/snmp; }
reset_peak() {
    local p
    for p in "${PROXY_PIDS[@]}"; do echo 5 >"/proc/$p/clear_refs"; done
}
TICK=$(getconf CLK_TCK)

# Emits one JSON result line: fields given as key=value (numbers) or key:=value (strings); the
# round ($ROUND) is added.
ROUND=1
record() {
    python3 - "$@" round="$ROUND" >>"$RESULTS" <<'PY'
import json, sys
out = {}
for a in sys.argv[1:]:
    if ":=" in a:
        k, v = a.split(":=", 1)
        out[k] = v
    else:
        k, v = a.split("=", 1)
        out[k] = json.loads(v) if v else None
print(json.dumps(out))
PY
}

# Port layout: agent egress 15001 serves HTTP/1.1 and h2c; nginx 8081 (h1) / 8082 (h2c) / 8083
# (TCP); haproxy 8091 / 8092 / 8093; direct goes to the backend (v1) and the iperf3 sink.
ports_of() {
    case $1 in
        direct) echo "18081 18081 25201" ;;
        agent | agent-trace) echo "15001 15001 9000" ;;
        nginx) echo "8081 8082 8083" ;;
        haproxy) echo "8091 8092 8093" ;;
    esac
}

start_proxy() {
    PROXY_PIDS=()
    case $1 in
        direct) return 0 ;;
        agent | agent-trace)
            local tracing=()
            [[ $1 == agent-trace ]] &&
                tracing=(TASKMESH_OTLP_ENDPOINT="http://$OTLP_SINK" TASKMESH_TRACE_SAMPLING=1)
            start_bg "$PROXY_CPU" "$RUN/$1.log" env \
                APPMESH_VIRTUAL_NODE_NAME=mesh/bench/virtualNode/bench-client \
                TASKMESH_CONFIG="file://$MESH" TASKMESH_WORKERS=1 \
                TASKMESH_CACHE="$RUN/cache/last-good.json" ENVOY_ADMIN_ACCESS_PORT=9901 \
                LISTENER_DRAIN_WAIT_TIME_S=0 \
                "${tracing[@]}" "$AGENT"
            ;;
        nginx) start_bg "$PROXY_CPU" "$RUN/nginx.log" nginx -c "$RUN/nginx.conf" -p "$RUN" ;;
        haproxy) start_bg "$PROXY_CPU" "$RUN/haproxy.log" haproxy -f "$RUN/haproxy.cfg" -db ;;
    esac
    local pid=$BG_PID out=$RUN/$1.log
    local h1 h2 tcp
    read -r h1 h2 tcp <<<"$(ports_of "$1")"
    wait_port "$h1" "$pid" "$out"
    if [[ $1 == agent* ]]; then
        local i
        for i in $(seq 1 100); do
            nsx "$AGENT" health --admin-port 9901 && break
            sleep 0.1
        done
        nsx "$AGENT" health --admin-port 9901 || die "agent not LIVE (log: $RUN/$1.log)"
    fi
    case $(cat "/proc/$pid/comm") in
        taskmesh-agent | nginx | haproxy) ;;
        *) die "$1: pid $pid is $(cat "/proc/$pid/comm"), not the proxy itself" ;;
    esac
    PROXY_PIDS=("$pid")
    if [[ $1 == nginx ]]; then
        local w=""
        for i in $(seq 1 50); do
            w=$(pgrep -P "$pid" || true)
            [[ -n $w ]] && break
            sleep 0.1
        done
        [[ $(wc -w <<<"$w") == 1 ]] || die "nginx: expected one worker under master $pid, got '$w'"
        PROXY_PIDS+=("$w")
    fi
    local p
    for p in "${PROXY_PIDS[@]}"; do
        [[ $(taskset -cp "$p" | awk '{ print $NF }') == "$PROXY_CPU" ]] ||
            die "$1 (pid $p) is not pinned to CPU $PROXY_CPU"
    done
}

# Stops the proxy and waits for it to exit (its ports are needed again by its next start).
stop_proxy() {
    local p i
    for p in "${PROXY_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PROXY_PIDS[@]}"; do
        for i in $(seq 1 50); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$p" 2>/dev/null || true
    done
    sleep 0.2
    PROXY_PIDS=()
}

# The route must answer 200 and split about 90/10 over v1 (:18081) and v2 (:18082).
check_route() {
    local name=$1 port=$2 n=200 urls=() i
    for i in $(seq 1 $n); do urls+=("http://127.0.0.1:$port$URL_PATH"); done
    local out
    out=$(nsx curl -s -o /dev/null -H "Host: $HOST" -w '%{http_code} %header{x-backend}\n' "${urls[@]}")
    local ok v2
    ok=$(grep -c '^200 ' <<<"$out" || true)
    v2=$(grep -c ':18082$' <<<"$out" || true)
    ((ok == n)) || die "$name: $((n - ok)) of $n requests did not answer 200: $(sort <<<"$out" | uniq -c | head -3)"
    if [[ $name != direct ]] && ((v2 < 4 || v2 > 45)); then
        die "$name: $v2 of $n requests went to v2; the route says 10 %"
    fi
    echo "$v2"
}

measure_wrk() {
    local name=$1 port=$2 conns=$3
    local url="http://127.0.0.1:$port$URL_PATH"
    on_load wrk -t1 -c"$conns" -d"${WARMUP}s" -H "Host: $HOST" "$url" >/dev/null
    [[ $name == direct ]] || reset_peak
    local c0 c1 json s0 s1 x0="" x1
    [[ $name == direct ]] || { c0=$(cpu_ticks); x0=$(ctx_switches); }
    s0=$(tcp_out_segs)
    json=$(on_load wrk -t1 -c"$conns" -d"${DURATION}s" --latency -H "Host: $HOST" \
        -s "$PERF/wrk-report.lua" "$url" | tee "$RUN/wrk-$name-$conns.txt" | grep '^{') ||
        die "$name: wrk at $conns connections failed (output: $RUN/wrk-$name-$conns.txt)"
    s1=$(tcp_out_segs)
    local rss="" cpu="" ctxsw=""
    if [[ $name != direct ]]; then
        c1=$(cpu_ticks)
        x1=$(ctx_switches)
        rss=$(sum_kb VmHWM)
        cpu=$(python3 -c "print(($c1 - $c0) / $TICK)")
        ctxsw=$((x1 - x0))
    fi
    record kind:=http1 proxy:="$name" conns="$conns" wrk:="$json" peak_rss_kb="$rss" cpu_s="$cpu" \
        tcp_segs="$((s1 - s0))" ctxsw="$ctxsw"
    log "$name http/1.1 c=$conns: $json peak_rss_kb=$rss cpu_s=$cpu tcp_segs=$((s1 - s0)) ctxsw=$ctxsw"
}

measure_h2() {
    local name=$1 port=$2
    [[ $name == direct ]] || reset_peak
    local c0 c1 out
    [[ $name == direct ]] || c0=$(cpu_ticks)
    out=$(on_load h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" --warm-up-time=2 -D "$DURATION" \
        -H ":authority: $HOST" "http://127.0.0.1:$port$URL_PATH" | tee "$RUN/h2load-$name.txt") ||
        die "$name: h2load failed (output: $RUN/h2load-$name.txt)"
    local rss="" cpu=""
    if [[ $name != direct ]]; then
        c1=$(cpu_ticks)
        rss=$(sum_kb VmHWM)
        cpu=$(python3 -c "print(($c1 - $c0) / $TICK)")
    fi
    local rps ok failed mean max
    rps=$(awk '/^finished in/ { gsub(",", "", $4); print $4 }' <<<"$out")
    ok=$(awk '/^status codes:/ { print $3 }' <<<"$out")
    failed=$(awk '/^requests:/ { for (i = 1; i <= NF; i++) if ($(i + 1) == "failed,") print $i }' <<<"$out")
    read -r mean max < <(python3 "$PERF/report.py" --h2load-latency <<<"$out")
    record kind:=h2 proxy:="$name" conns="$H2_CONNS" streams="$H2_STREAMS" rps="$rps" ok2xx="$ok" \
        failed="${failed:-0}" mean_us="$mean" max_us="$max" peak_rss_kb="$rss" cpu_s="$cpu"
    log "$name h2 c=$H2_CONNS m=$H2_STREAMS: $rps req/s, 2xx=$ok failed=${failed:-0} mean=${mean}us cpu_s=$cpu"
}

measure_tcp() {
    local name=$1 port=$2
    [[ $name == direct ]] || reset_peak
    local c0 c1 json
    [[ $name == direct ]] || c0=$(cpu_ticks)
    json=$(on_load iperf3 -c 127.0.0.1 -p "$port" -t "$TCP_SECONDS" -J | tee "$RUN/iperf3-$name.json")
    local rss="" cpu=""
    if [[ $name != direct ]]; then
        c1=$(cpu_ticks)
        rss=$(sum_kb VmHWM)
        cpu=$(python3 -c "print(($c1 - $c0) / $TICK)")
    fi
    local bps
    bps=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])' <<<"$json") ||
        die "$name: iperf3 through port $port failed: $(head -c 400 <<<"$json")"
    record kind:=tcp proxy:="$name" gbps="$(python3 -c "print($bps / 1e9)")" peak_rss_kb="$rss" cpu_s="$cpu" seconds="$TCP_SECONDS"
    log "$name tcp: $(python3 -c "print(round($bps / 1e9, 2))") Gbit/s cpu_s=$cpu"
}

# The tracing agent's span counters: every request was sampled, so exported + dropped should be
# about the requests served; a run with no exported span did not measure tracing at all.
trace_stats() {
    local prom exported dropped failures
    prom=$(nsx curl -s http://127.0.0.1:9901/stats/prometheus) || die "agent-trace: no /stats/prometheus"
    exported=$(awk '$1 == "taskmesh_trace_spans_exported_total{exporter=\"otlp\"}" { print $2 }' <<<"$prom")
    dropped=$(awk '$1 == "taskmesh_trace_spans_dropped_total" { print $2 }' <<<"$prom")
    failures=$(awk '$1 == "taskmesh_trace_export_failures_total{exporter=\"otlp\"}" { print $2 }' <<<"$prom")
    [[ -n $exported && $exported -gt 0 ]] || die "agent-trace exported no span (log: $RUN/agent-trace.log)"
    record kind:=trace proxy:=agent-trace exported="$exported" dropped="${dropped:-0}" failures="${failures:-0}"
    log "agent-trace: $exported spans exported, ${dropped:-0} dropped, ${failures:-0} failed exports"
}

# ---- 5. the runs ------------------------------------------------------------------------------
load1() { cut -d' ' -f1 /proc/loadavg; }
load_high() { python3 -c "import sys; sys.exit(0 if $(load1) >= $LOAD_MAX else 1)"; }
waited=0
while ((waited < LOAD_WAIT)) && load_high; do
    log "load average $(load1) >= $LOAD_MAX; waiting (${waited}s of ${LOAD_WAIT}s)"
    sleep 15
    waited=$((waited + 15))
done
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
log "load average before: $LOAD_BEFORE; results in $RUN"

# One measurement (`http1:CONNS`, `h2` or `tcp`) of one proxy, started for it and stopped after.
# The first start of a proxy in a round records its idle RSS and checks its route.
STARTED_IN_ROUND=" "
run_point() {
    local name=$1 what=$2 h1 h2 tcp idle v2
    read -r h1 h2 tcp <<<"$(ports_of "$name")"
    start_proxy "$name"
    if [[ $STARTED_IN_ROUND != *" $name "* ]]; then
        idle=""
        if [[ $name != direct ]]; then
            sleep 1
            idle=$(sum_kb VmRSS)
        fi
        v2=$(check_route "$name" "$h1")
        record kind:=start proxy:="$name" idle_rss_kb="$idle" v2_of_200="$v2"
        log "$name: idle RSS ${idle:-n/a} kB, $v2 of 200 requests to v2"
        STARTED_IN_ROUND+="$name "
    fi
    case $what in
        http1:*) measure_wrk "$name" "$h1" "${what#http1:}" ;;
        h2) measure_h2 "$name" "$h2" ;;
        tcp) measure_tcp "$name" "$tcp" ;;
    esac
    [[ $name != agent-trace ]] || trace_stats
    stop_proxy
}

# Head to head: the agent and a peer at the same time, each in its own namespace with its own
# backend (CPU $LOAD_CPU) and wrk (CPU $LOAD_CPU), both proxies on CPU $PROXY_CPU, sharing it.
# Whatever the machine's speed does during the run, it does to both: the ratio of their requests
# and of their CPU per request is free of the drift that the one-after-the-other runs carry.
# `$1` peer, `$2` connections, `$3` the agent's side (a: the first namespace, b: the second).
# One side's wrk of a head-to-head run: from namespace $1 (CPU $LOAD_CPU) to $2, $3 connections,
# for $4 seconds, output to $5; more wrk arguments after.
h2h_wrk() {
    local ns=$1 url=$2 conns=$3 secs=$4 out=$5
    shift 5
    ip netns exec "$ns" taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${secs}s" -H "Host: $HOST" "$@" "$url" >"$out"
}
h2h_point() {
    local peer=$1 conns=$2 side=$3 ns_agent=$NS_MAIN ns_peer=$NS_B
    [[ $side == a ]] || { ns_agent=$NS_B; ns_peer=$NS_MAIN; }
    local agent_pids peer_pids h1_agent h1_peer _
    NS=$ns_agent start_proxy agent
    agent_pids=("${PROXY_PIDS[@]}")
    NS=$ns_peer start_proxy "$peer"
    peer_pids=("${PROXY_PIDS[@]}")
    read -r h1_agent _ _ <<<"$(ports_of agent)"
    read -r h1_peer _ _ <<<"$(ports_of "$peer")"
    local url_agent=http://127.0.0.1:$h1_agent$URL_PATH url_peer=http://127.0.0.1:$h1_peer$URL_PATH w1 w2
    h2h_wrk "$ns_agent" "$url_agent" "$conns" "$WARMUP" /dev/null &
    w1=$!
    h2h_wrk "$ns_peer" "$url_peer" "$conns" "$WARMUP" /dev/null &
    w2=$!
    { wait "$w1" && wait "$w2"; } || die "head to head with $peer at $conns connections: the warm-up's wrk failed"
    local a0 p0 a1 p1
    a0=$(PROXY_PIDS=("${agent_pids[@]}"); cpu_ticks)
    p0=$(PROXY_PIDS=("${peer_pids[@]}"); cpu_ticks)
    local out_agent=$RUN/h2h-agent-$peer-$conns-$side.txt out_peer=$RUN/h2h-$peer-$conns-$side.txt
    h2h_wrk "$ns_agent" "$url_agent" "$conns" "$DURATION" "$out_agent" --latency -s "$PERF/wrk-report.lua" &
    w1=$!
    h2h_wrk "$ns_peer" "$url_peer" "$conns" "$DURATION" "$out_peer" --latency -s "$PERF/wrk-report.lua" &
    w2=$!
    { wait "$w1" && wait "$w2"; } ||
        die "head to head with $peer at $conns connections: wrk failed (output: $out_agent, $out_peer)"
    a1=$(PROXY_PIDS=("${agent_pids[@]}"); cpu_ticks)
    p1=$(PROXY_PIDS=("${peer_pids[@]}"); cpu_ticks)
    PROXY_PIDS=("${agent_pids[@]}" "${peer_pids[@]}")
    stop_proxy
    local ja jp
    ja=$(grep '^{' "$out_agent") || die "head to head: no wrk report in $out_agent"
    jp=$(grep '^{' "$out_peer") || die "head to head: no wrk report in $out_peer"
    record kind:=h2h peer:="$peer" proxy:=agent conns="$conns" side:="$side" agent:="$ja" peer_wrk:="$jp" \
        agent_cpu_s="$(python3 -c "print(($a1 - $a0) / $TICK)")" peer_cpu_s="$(python3 -c "print(($p1 - $p0) / $TICK)")"
    log "head to head, $conns connections, agent (side $side) vs $peer: $(python3 -c "import json,sys; a, p = json.loads(sys.argv[1]), json.loads(sys.argv[2]); print(f\"{a['requests']} vs {p['requests']} requests\")" "$ja" "$jp")"
}

# Interleaved point by point: every proxy in turn at one connection count, then at the next, so
# that the figures compared are measured seconds apart, not minutes.
for ROUND in $(seq 1 "$ROUNDS"); do
    log "round $ROUND of $ROUNDS"
    STARTED_IN_ROUND=" "
    if [[ " $KINDS " == *" http1 "* ]]; then
        for c in $CONNS; do
            for name in $PROXIES; do run_point "$name" "http1:$c"; done
        done
    fi
    if [[ " $KINDS " == *" h2h "* && " $PROXIES " == *" agent "* ]]; then
        for c in $CONNS; do
            for peer in nginx haproxy; do
                [[ " $PROXIES " == *" $peer "* ]] || continue
                h2h_point "$peer" "$c" a
                h2h_point "$peer" "$c" b
            done
        done
    fi
    if [[ " $KINDS " == *" h2 "* ]]; then
        for name in $PROXIES; do run_point "$name" h2; done
    fi
    if [[ " $KINDS " == *" tcp "* ]]; then
        for name in $PROXIES; do
            # No TCP run for agent-trace: opaque TCP gets no spans.
            [[ $name == agent-trace ]] || run_point "$name" tcp
        done
    fi
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average after: $LOAD_AFTER"

# ---- 6. route-table micro-benchmarks ----------------------------------------------------------
BENCH_SINCE=$(date +%s)
if [[ $SKIP_BENCH != 1 ]]; then
    log "cargo bench -p taskmesh-mesh (short measurement)"
    (cd "$ROOT" && cargo bench -q -p taskmesh-mesh --bench routing -- \
        --warm-up-time 0.5 --measurement-time 1 --noplot >"$RUN/criterion.txt" 2>&1) ||
        die "cargo bench failed: $(tail -20 "$RUN/criterion.txt")"
fi

# How many of the names in agent/symbol-order.txt (agent/build.rs) the benchmarked binary has: a
# list gone stale (dependencies or the compiler changed) no longer lays the agent's code out.
symbol_order_coverage() {
    local list=$ROOT/agent/symbol-order.txt bin=$TARGET_DIR/release/taskmesh-agent
    [[ -f $list ]] || { echo "no list"; return; }
    local total found
    total=$(wc -l <"$list")
    found=$(nm --defined-only "$bin" 2>/dev/null | awk '{ print $3 }' | sort -u | comm -12 - <(sort -u "$list") | wc -l)
    echo "$found of $total functions of agent/symbol-order.txt found in the binary"
}

# ---- 7. report --------------------------------------------------------------------------------
{
    echo "{\"started\": \"$STARTED\", \"load_before\": \"$LOAD_BEFORE\", \"load_after\": \"$LOAD_AFTER\","
    echo " \"cpu_model\": $(lscpu | awk -F: '/^Model name/ { gsub(/^ +/, "", $2); print $2; exit }' | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().strip()))'),"
    echo " \"cpus\": $ncpu, \"kernel\": \"$(uname -r)\","
    echo " \"os\": $(. /etc/os-release && python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$PRETTY_NAME"),"
    echo " \"nginx\": \"$(nginx -v 2>&1 | sed 's/.*: //')\", \"haproxy\": \"$(haproxy -v | head -1)\","
    echo " \"rustc\": \"$(rustc --version)\", \"wrk\": \"$(wrk -v 2>&1 | head -1 | awk '{ print $1, $2 }')\","
    echo " \"h2load\": \"$(h2load --version | head -1)\", \"iperf3\": \"$(iperf3 --version | head -1)\","
    echo " \"commit\": \"$(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && git diff --quiet -- agent mesh tests/perf || echo '+dirty')\","
    echo " \"rounds\": $ROUNDS, \"duration\": $DURATION, \"warmup\": $WARMUP, \"proxy_cpu\": $PROXY_CPU, \"load_cpu\": $LOAD_CPU,"
    echo " \"host\": \"$HOST\", \"path\": \"$URL_PATH\", \"h2_conns\": $H2_CONNS, \"h2_streams\": $H2_STREAMS,"
    echo " \"tcp_seconds\": $TCP_SECONDS, \"criterion_dir\": \"$TARGET_DIR/criterion\", \"bench_since\": $BENCH_SINCE,"
    echo " \"skip_bench\": $SKIP_BENCH, \"symbol_order\": \"$(symbol_order_coverage)\"}"
} >"$RUN/meta.json"
python3 "$PERF/report.py" "$RUN/meta.json" "$RESULTS" >"$OUT"
log "wrote $OUT (raw results: $RUN)"
