#!/usr/bin/env python3
"""Renders BENCHMARKS.md from one run of tests/perf/run.sh.

`report.py META.json RESULTS.jsonl` prints the Markdown on stdout: machine, versions, the exact
commands, then per traffic kind a table whose every cell is the median over the run's rounds of
`value (×direct, ×best peer)`, where
the best peer is the better of nginx and haproxy for that figure (higher req/s and Gbit/s; lower
latency, memory and CPU), the head-to-head ratios (the agent and a peer on one core at the
same time), the goals of issue 7 checked against the figures, the route-table
criterion results, the cost of tracing (the agent with and without tracing every request to an
OTLP sink), and tests/perf/profile.md (where the agent's time goes).

`report.py --h2load-latency` reads h2load's output on stdin and prints the mean and max request
time in microseconds (h2load prints no percentiles).

`report.py --syscalls` reads lines `PROXY REQUESTS PERF-STAT-CSV` (tests/perf/profile.sh
syscalls) on stdin and prints, per proxy, each `perf stat` count per request: the median over
the proxy's lines, then every line's own figure.
"""

import json
import os
import re
import sys

PEERS = ("nginx", "haproxy")
ORDER = ("direct", "agent", "agent-trace", "nginx", "haproxy")
NAMES = {"direct": "direct (no proxy)", "agent": "taskmesh-agent", "agent-trace": "agent + tracing 100 %",
         "nginx": "nginx", "haproxy": "haproxy"}


def h2load_latency(text):
    m = re.search(r"^time for request:\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M)
    if not m:
        return None, None
    def us(v):
        n = float(re.sub(r"[a-z]+$", "", v))
        unit = re.search(r"[a-z]+$", v).group(0)
        return round(n * {"us": 1, "ms": 1e3, "s": 1e6}[unit])
    return us(m.group(3)), us(m.group(2))


def fmt_num(v, unit):
    if v is None:
        return "—"
    if unit == "rps":
        return f"{v:,.0f}".replace(",", " ")
    if unit == "us":
        return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs"
    if unit == "kb":
        return f"{v / 1024:.1f} MB"
    if unit == "s":
        return f"{v:.2f} s"
    if unit == "gbps":
        return f"{v:.2f} Gbit/s"
    if unit == "us_cpu":
        return f"{v:.1f} µs"
    if unit == "per_req":
        return f"{v:.2f}"
    return str(v)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×"


def cell(values, proxy, unit, higher_better):
    """`value (×direct, ×best peer)` for one proxy's figure."""
    v = values.get(proxy)
    peers = [values[p] for p in PEERS if values.get(p) is not None]
    best = (max(peers) if higher_better else min(peers)) if peers else None
    text = fmt_num(v, unit)
    if v is None:
        return text
    return f"{text} ({ratio(v, values.get('direct'))}, {ratio(v, best)})"


def table(rows, proxies):
    """rows: (label, {proxy: value}, unit, higher_better)."""
    out = ["| figure | " + " | ".join(NAMES[p] for p in proxies) + " |",
           "|---|" + "---|" * len(proxies)]
    for label, values, unit, hb in rows:
        out.append(f"| {label} | " + " | ".join(cell(values, p, unit, hb) for p in proxies) + " |")
    return "\n".join(out)


def criterion(meta):
    found = {}
    root = meta["criterion_dir"]
    for d, _, files in os.walk(root):
        if os.path.basename(d) != "new" or "benchmark.json" not in files:
            continue
        try:
            if os.path.getmtime(os.path.join(d, "estimates.json")) < meta["bench_since"]:
                continue
            bench = json.load(open(os.path.join(d, "benchmark.json")))
            est = json.load(open(os.path.join(d, "estimates.json")))
        except (OSError, ValueError):
            continue
        fid = bench.get("full_id", "")
        if fid.startswith(("compile/", "match/", "weighted_pick/")):
            found[fid] = est["mean"]["point_estimate"]
    return found


def fmt_ns(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.1f} ns"


def median(values):
    xs = sorted(v for v in values if v is not None)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def merge(records):
    """The records of one measurement over the rounds as one: every number is the median of
    the rounds' (nested `wrk` figures too); `by_round` keeps the records themselves."""
    out = dict(records[0])
    for k, v in records[0].items():
        if k in ("round", "conns", "streams", "seconds"):
            continue
        if is_number(v) or v is None:
            out[k] = median(r.get(k) for r in records)
        elif isinstance(v, dict):
            out[k] = {kk: median(r[k].get(kk) for r in records) if is_number(vv) else vv
                      for kk, vv in v.items()}
    out["by_round"] = sorted(records, key=lambda r: r.get("round", 1))
    return out


def main(meta_path, results_path):
    meta = json.load(open(meta_path))
    res = [json.loads(l) for l in open(results_path) if l.strip()]
    proxies = [p for p in ORDER if any(r["proxy"] == p for r in res)]
    groups = {}
    h2h = {}
    for r in res:
        if r["kind"] == "h2h":
            r["agent"], r["peer_wrk"] = json.loads(r["agent"]), json.loads(r["peer_wrk"])
            h2h.setdefault((r["conns"], r["peer"]), []).append(r)
            continue
        if r["kind"] == "http1":
            r["wrk"] = json.loads(r["wrk"])
            # Per round, so that the median is of the rounds' own figures.
            r["cpu_us_per_req"] = (r["cpu_s"] * 1e6 / r["wrk"]["requests"]) if r.get("cpu_s") else None
            n = r["wrk"]["requests"] or None
            r["segs_per_req"] = r["tcp_segs"] / n if n and r.get("tcp_segs") is not None else None
            r["ctxsw_per_req"] = r["ctxsw"] / n if n and r.get("ctxsw") is not None else None
        groups.setdefault((r["kind"], r["proxy"], r.get("conns")), []).append(r)
    merged = [merge(rs) for rs in groups.values()]
    rounds = len({r.get("round", 1) for r in res}) or 1
    start = {r["proxy"]: r for r in merged if r["kind"] == "start"}
    http1 = {}
    for r in merged:
        if r["kind"] == "http1":
            http1.setdefault(r["conns"], {})[r["proxy"]] = r
    h2 = {r["proxy"]: r for r in merged if r["kind"] == "h2"}
    tcp = {r["proxy"]: r for r in merged if r["kind"] == "tcp"}
    # Span counters of every point the tracing agent served (a fresh agent each), summed.
    traces = [r for r in res if r["kind"] == "trace"]
    trace = {k: sum(r[k] for r in traces) for k in ("exported", "dropped", "failures")} if traces else None

    o = []
    w = o.append
    w("# Benchmarks: taskmesh-agent against nginx and haproxy")
    w("")
    w("Generated by `tests/perf/run.sh` (issue 7); rerun it to refresh this file. Every cell is")
    w("`value (× direct, × best peer)`: the ratio to the same figure without a proxy, and to the")
    w("better of nginx and haproxy for that figure (higher is better for req/s and Gbit/s, lower")
    w("for latency, memory and CPU).")
    if rounds > 1:
        w(f"Each figure is the median of {rounds} rounds; in every round the proxies take turns point"
          " by point (all at one connection count, then all at the next), so the figures compared"
          " are measured seconds apart and a slow spell of the machine (its speed drifts by tens"
          " of percent from minute to minute) falls on all of them rather than on one. The rounds"
          " themselves are listed under \"Round by round\". Ratios are of the medians.")
    else:
        w("One round, one machine: differences of a few percent are noise.")
    w("")
    w("## Machine and versions")
    w("")
    w(f"- CPU: {meta['cpu_model']}, {meta['cpus']} CPUs; {meta['os']}, kernel {meta['kernel']}")
    w(f"- Load average (1, 5, 15 min) before the runs: {meta['load_before']}; after: {meta['load_after']}"
      f" (run started {meta['started']})")
    w(f"- taskmesh commit {meta['commit']}; {meta['rustc']}; release profile (fat LTO, 1 codegen unit)")
    if meta.get("symbol_order"):
        w(f"- Code layout (agent/build.rs, `tests/perf/profile.sh order`): {meta['symbol_order']}")
    w(f"- nginx {meta['nginx']}; {meta['haproxy']}; {meta['wrk']}; {meta['h2load']}; {meta['iperf3']}")
    w("")
    w("## Set-up")
    w("")
    w(f"- Everything runs in one network namespace over loopback. Each proxy runs alone on CPU"
      f" {meta['proxy_cpu']} (`taskset -c {meta['proxy_cpu']}`) with one worker: taskmesh-agent"
      f" `TASKMESH_WORKERS=1` (tokio's current-thread runtime: every connection on one thread), nginx `worker_processes 1` (figures are"
      f" master + worker), haproxy `nbthread 1`. The load generators (wrk, h2load, iperf3 client)"
      f" and the backends (perf-backend, one thread; iperf3 server) share CPU {meta['load_cpu']}.")
    w(f"- Backend: `perf-backend` (tests/src/bin/perf-backend.rs, hyper, HTTP/1.1 + h2c) on"
      f" 127.0.0.1:18081 (v1) and :18082 (v2), 64-byte body.")
    w(f"- Mesh: tests/perf/mesh.yaml, 10 HTTP virtual services (50 routes: header and prefix"
      f" matches, priorities, weighted targets) and one TCP service; targets by DNS name"
      f" (tests/perf/hosts). The request `GET {meta['path']}` with `Host: {meta['host']}` is"
      f" decided by the 4th route of its router (after a header route, a prefix route and a header"
      f" route that do not match): 90 % v1, 10 % v2. nginx (tests/perf/nginx.conf) and haproxy"
      f" (tests/perf/haproxy.cfg) implement the same 50 routes and weights, keep upstream"
      f" connections alive, and, like the agent, add `x-forwarded-for` and an `x-request-id`;"
      f" no access logs anywhere. Before measuring, 200 requests through each proxy must all"
      f" answer 200 and the v2 share must be near 10 %.")
    if "agent-trace" in proxies:
        w("- \"agent + tracing 100 %\": the same agent binary and mesh with"
          " `TASKMESH_OTLP_ENDPOINT=http://127.0.0.1:4318 TASKMESH_TRACE_SAMPLING=1`: every request"
          " gets both trace headers, a span, and is exported over OTLP/HTTP protobuf (batches of up"
          " to 512) to an OTLP sink (a second perf-backend on 127.0.0.1:4318, CPU"
          f" {meta['load_cpu']}, answering 200). No TCP run for it (opaque TCP gets no spans).")
    w("- Peak RSS: VmHWM (reset through `/proc/<pid>/clear_refs` before each measured run), CPU:"
      " utime + stime over the measured run. Idle RSS: after start and the first configuration"
      " load, before any traffic. TCP segments per request: every segment sent in the namespace"
      " (client, proxy and backend; data and pure ACKs) over the run, per request; context"
      " switches: the proxy's voluntary (it slept waiting for events) and involuntary ones.")
    w("")
    w("Commands (inside the namespace):")
    w("")
    w("```sh")
    w(f"taskset -c {meta['load_cpu']} perf-backend 127.0.0.1:18081 127.0.0.1:18082")
    w(f"taskset -c {meta['load_cpu']} iperf3 -s -B 127.0.0.1 -p 25201")
    w(f"APPMESH_VIRTUAL_NODE_NAME=mesh/bench/virtualNode/bench-client TASKMESH_CONFIG=file://…/tests/perf/mesh.yaml \\")
    w(f"  TASKMESH_WORKERS=1 taskset -c {meta['proxy_cpu']} target/release/taskmesh-agent      # egress :15001, explicit mode")
    w(f"taskset -c {meta['proxy_cpu']} nginx -c nginx.conf -p RUN_DIR                          # :8081 h1, :8082 h2c, :8083 tcp")
    w(f"taskset -c {meta['proxy_cpu']} haproxy -f haproxy.cfg -db                              # :8091 h1, :8092 h2c, :8093 tcp")
    if "agent-trace" in proxies:
        w(f"taskset -c {meta['load_cpu']} perf-backend 127.0.0.1:4318                             # OTLP sink")
        w(f"TASKMESH_OTLP_ENDPOINT=http://127.0.0.1:4318 TASKMESH_TRACE_SAMPLING=1 …same agent…  # agent + tracing 100 %")
    w(f"iptables -t nat -A OUTPUT -p tcp -d 127.0.0.1 --dport 9000 -j REDIRECT --to-ports 15001  # the agent's tcpRoute")
    w(f"taskset -c {meta['load_cpu']} wrk -t1 -cC -d{meta['warmup']}s -H 'Host: {meta['host']}' http://127.0.0.1:PORT{meta['path']}   # warm-up")
    w(f"taskset -c {meta['load_cpu']} wrk -t1 -cC -d{meta['duration']}s --latency -s tests/perf/wrk-report.lua -H 'Host: {meta['host']}' http://127.0.0.1:PORT{meta['path']}")
    w(f"taskset -c {meta['load_cpu']} h2load -t1 -c{meta['h2_conns']} -m{meta['h2_streams']} --warm-up-time=2 -D {meta['duration']} -H ':authority: {meta['host']}' http://127.0.0.1:PORT{meta['path']}")
    w(f"taskset -c {meta['load_cpu']} iperf3 -c 127.0.0.1 -p PORT -t {meta['tcp_seconds']} -J")
    w("cargo bench -p taskmesh-mesh --bench routing -- --warm-up-time 0.5 --measurement-time 1")
    w("```")
    w("")

    goals = []
    for conns in sorted(http1):
        runs = http1[conns]
        def col(f):
            return {p: (runs[p]["wrk"][f] if p in runs else None) for p in proxies}
        rps = col("rps")
        lat = {f: col(f) for f in ("p50_us", "p99_us", "p999_us")}
        added = {f: {p: (lat[f][p] - lat[f]["direct"]) if lat[f].get(p) is not None
                     and lat[f].get("direct") is not None and p != "direct" else None
                     for p in proxies} for f in ("p50_us", "p99_us")}
        rss = {p: runs[p]["peak_rss_kb"] if p in runs else None for p in proxies}
        cpu = {p: runs[p]["cpu_s"] if p in runs else None for p in proxies}
        cpu_req = {p: runs[p]["cpu_us_per_req"] if p in runs else None for p in proxies}
        segs = {p: runs[p].get("segs_per_req") if p in runs else None for p in proxies}
        ctxsw = {p: runs[p].get("ctxsw_per_req") if p in runs else None for p in proxies}
        # Summed over the rounds: any error counts.
        errs = {p: sum(x["wrk"]["socket_errors"] + x["wrk"]["timeouts"] + x["wrk"]["non2xx"]
                       for x in runs[p]["by_round"])
                for p in proxies if p in runs}
        w(f"## HTTP/1.1, keep-alive, {conns} connections (wrk, {meta['duration']} s)")
        w("")
        w(table([
            ("requests/s", rps, "rps", True),
            ("p50 latency", lat["p50_us"], "us", False),
            ("p99 latency", lat["p99_us"], "us", False),
            ("p99.9 latency", lat["p999_us"], "us", False),
            ("p50 added (vs direct)", added["p50_us"], "us", False),
            ("p99 added (vs direct)", added["p99_us"], "us", False),
            ("proxy peak RSS", rss, "kb", False),
            ("proxy CPU time", cpu, "s", False),
            ("proxy CPU per request", cpu_req, "us_cpu", False),
            ("TCP segments per request", segs, "per_req", False),
            ("proxy context switches per request", ctxsw, "per_req", False),
        ], proxies))
        w("")
        w(f"Errors (socket errors + timeouts + non-2xx{', all rounds' if rounds > 1 else ''}): " +
          ", ".join(f"{NAMES[p]} {errs[p]}" for p in proxies if p in errs) + ".")
        w("")
        if "agent" in runs:
            for peer in PEERS:
                if peer in runs:
                    goals.append((f"req/s ≥ {peer} at {conns} connections",
                                  rps["agent"] >= rps[peer],
                                  f"{rps['agent']:.0f} vs {rps[peer]:.0f}"))
            peer_added = [added["p99_us"][p] for p in PEERS if added["p99_us"].get(p) is not None]
            if peer_added and added["p99_us"]["agent"] is not None:
                goals.append((f"p99 added ≤ best peer's at {conns} connections",
                              added["p99_us"]["agent"] <= min(peer_added),
                              f"{added['p99_us']['agent']} µs vs {min(peer_added)} µs"))
            if conns == max(http1):
                goals.append((f"peak RSS ≤ 20 MB at {conns} connections",
                              rss["agent"] <= 20 * 1024, fmt_num(rss["agent"], "kb")))

    if h2h:
        w("## Head to head: the agent and a peer on the same core at the same time")
        w("")
        w(f"The agent and one peer run together on CPU {meta['proxy_cpu']}, each in its own network"
          " namespace with its own backend and its own wrk (both on CPU"
          f" {meta['load_cpu']}, same command as above), for the same {meta['duration']} s. The"
          " scheduler shares the core between them, so each gets about half of it; whatever the"
          " machine's speed does during the run, it does to both. The ratios below are therefore"
          " free of the drift that the runs one after the other carry: requests served (agent ÷"
          " peer, higher is better for the agent) and proxy CPU per request (agent ÷ peer, lower"
          " is better). Each round measures both ways round (the agent in the first namespace,"
          " then in the second); the table gives the median over all runs, with the lowest and"
          " highest.")
        w("")
        w("| connections | peer | runs | requests, agent ÷ peer | CPU per request, agent ÷ peer |"
          " agent CPU per request | peer CPU per request | p99, agent ÷ peer |")
        w("|---|---|---|---|---|---|---|---|")
        for (conns, peer), rs in sorted(h2h.items()):
            req_ratio, cpu_ratio, p99_ratio, cpu_a, cpu_p = [], [], [], [], []
            for r in rs:
                a, pw = r["agent"], r["peer_wrk"]
                ca = r["agent_cpu_s"] * 1e6 / a["requests"]
                cp = r["peer_cpu_s"] * 1e6 / pw["requests"]
                req_ratio.append(a["requests"] / pw["requests"])
                cpu_ratio.append(ca / cp)
                p99_ratio.append(a["p99_us"] / pw["p99_us"])
                cpu_a.append(ca)
                cpu_p.append(cp)
            def rng(v):
                return f"{median(v):.3f} ({min(v):.3f}–{max(v):.3f})"
            w(f"| {conns} | {NAMES[peer]} | {len(rs)} | {rng(req_ratio)} | {rng(cpu_ratio)} |"
              f" {fmt_num(median(cpu_a), 'us_cpu')} | {fmt_num(median(cpu_p), 'us_cpu')} |"
              f" {rng(p99_ratio)} |")
            goals.append((f"req/s ≥ {peer} at {conns} connections, head to head",
                          median(req_ratio) >= 1,
                          f"agent ÷ {peer} {median(req_ratio):.3f} (median of {len(rs)} runs;"
                          f" {sum(x >= 1 for x in req_ratio)} of {len(rs)} ≥ 1)"))
            goals.append((f"p99 ≤ {peer}'s at {conns} connections, head to head",
                          median(p99_ratio) <= 1,
                          f"agent ÷ {peer} {median(p99_ratio):.3f} (median of {len(rs)} runs)"))
        w("")
        def errors(w):
            return w["socket_errors"] + w["timeouts"] + w["non2xx"]
        errs = {"agent": 0}
        for (conns, peer), rs in h2h.items():
            for r in rs:
                errs["agent"] += errors(r["agent"])
                errs[peer] = errs.get(peer, 0) + errors(r["peer_wrk"])
        w("Errors (socket errors + timeouts + non-2xx, all head-to-head runs): " +
          ", ".join(f"{NAMES[p]} {n}" for p, n in errs.items()) + ".")
        w("")

    idle = {p: start[p]["idle_rss_kb"] if p in start else None for p in proxies}
    w("## Memory at idle")
    w("")
    w(table([("idle RSS", idle, "kb", False)], proxies))
    w("")
    if idle.get("agent") is not None:
        goals.append(("idle RSS ≤ 8 MB", idle["agent"] <= 8 * 1024, fmt_num(idle["agent"], "kb")))

    if h2:
        w(f"## HTTP/2 (h2c, prior knowledge), {meta['h2_conns']} connections × {meta['h2_streams']} streams (h2load, {meta['duration']} s)")
        w("")
        w("The agent serves h2c on its egress listener and forwards over HTTP/1.1 to the"
          " HTTP/1.1 target listeners (as nginx and haproxy do here). h2load reports no percentiles:"
          " mean and max request time.")
        w("")
        def hcol(f):
            return {p: (h2[p][f] if p in h2 else None) for p in proxies}
        w(table([
            ("requests/s", hcol("rps"), "rps", True),
            ("mean request time", hcol("mean_us"), "us", False),
            ("max request time", hcol("max_us"), "us", False),
            ("proxy peak RSS", hcol("peak_rss_kb"), "kb", False),
            ("proxy CPU time", hcol("cpu_s"), "s", False),
        ], proxies))
        w("")
        w(f"Failed requests{', all rounds' if rounds > 1 else ''}: " + ", ".join(
            f"{NAMES[p]} {sum(x['failed'] for x in h2[p]['by_round'])}" for p in proxies if p in h2) + ".")
        w("")
    if tcp:
        w(f"## TCP route throughput (iperf3, one stream, {meta['tcp_seconds']} s)")
        w("")
        w("The agent: a connection to 127.0.0.1:9000 is redirected (iptables REDIRECT, as ECS or"
          " `proxy-init` set it up) to the egress listener, which picks the tcpRoute by the original"
          " port and forwards to the target node. nginx: `stream` proxy; haproxy: `mode tcp`.")
        w("")
        def tcol(f):
            return {p: (tcp[p][f] if p in tcp else None) for p in proxies}
        w(table([
            ("throughput", tcol("gbps"), "gbps", True),
            ("proxy peak RSS", tcol("peak_rss_kb"), "kb", False),
            ("proxy CPU time", tcol("cpu_s"), "s", False),
        ], proxies))
        w("")

    if "agent" in proxies and "agent-trace" in proxies:
        w("## The cost of tracing every request")
        w("")
        w("The agent with tracing at 100 % sampling (OTLP/HTTP to a local sink) against the same"
          " agent without tracing, same run: the change of each figure.")
        w("")
        w("| traffic | figure | taskmesh-agent | agent + tracing 100 % | change |")
        w("|---|---|---|---|---|")
        def change(a, b):
            return "—" if a in (None, 0) or b is None else f"{(b - a) / a * 100:+.1f} %"
        for conns in sorted(http1):
            runs = http1[conns]
            if "agent" not in runs or "agent-trace" not in runs:
                continue
            a, t = runs["agent"], runs["agent-trace"]
            for label, f, unit in (("requests/s", "rps", "rps"), ("p50 latency", "p50_us", "us"),
                                   ("p99 latency", "p99_us", "us")):
                w(f"| HTTP/1.1 × {conns} | {label} | {fmt_num(a['wrk'][f], unit)} |"
                  f" {fmt_num(t['wrk'][f], unit)} | {change(a['wrk'][f], t['wrk'][f])} |")
            per = {"a": a["cpu_us_per_req"], "t": t["cpu_us_per_req"]}
            w(f"| HTTP/1.1 × {conns} | proxy CPU per request | {fmt_num(per['a'], 'us_cpu')} |"
              f" {fmt_num(per['t'], 'us_cpu')} | {change(per['a'], per['t'])} |")
            w(f"| HTTP/1.1 × {conns} | proxy peak RSS | {fmt_num(a['peak_rss_kb'], 'kb')} |"
              f" {fmt_num(t['peak_rss_kb'], 'kb')} | {change(a['peak_rss_kb'], t['peak_rss_kb'])} |")
        if "agent" in h2 and "agent-trace" in h2:
            a, t = h2["agent"], h2["agent-trace"]
            w(f"| h2c | requests/s | {fmt_num(a['rps'], 'rps')} | {fmt_num(t['rps'], 'rps')} |"
              f" {change(a['rps'], t['rps'])} |")
            w(f"| h2c | mean request time | {fmt_num(a['mean_us'], 'us')} |"
              f" {fmt_num(t['mean_us'], 'us')} | {change(a['mean_us'], t['mean_us'])} |")
        w("")
        if trace:
            w(f"Spans: {fmt_num(trace['exported'], 'rps')} exported to the sink,"
              f" {fmt_num(trace['dropped'], 'rps')} dropped (queue full),"
              f" {trace['failures']} failed exports over all its points (read from the agent's"
              " /stats/prometheus at the end of each; spans of the last second may still be"
              " queued).")
            w("")

    crit = criterion(meta) if not meta.get("skip_bench") else {}
    if crit:
        w("## Route table (criterion, `cargo bench -p taskmesh-mesh`, short measurement)")
        w("")
        w("| benchmark | mean |")
        w("|---|---|")
        for k in sorted(crit, key=lambda k: (k.split("/")[0], k.split("/")[1],
                                             int(k.split("/")[-1]) if k.split("/")[-1].isdigit() else 0)):
            w(f"| `{k}` | {fmt_ns(crit[k])} |")
        w("")
        if "compile/1000_routes" in crit:
            goals.append(("1 000 routes compile in < 10 ms", crit["compile/1000_routes"] < 10e6,
                          fmt_ns(crit["compile/1000_routes"])))
        for case in ("prefix_last", "exact_mid", "header", "fallback"):
            a, b = crit.get(f"match/{case}/10"), crit.get(f"match/{case}/1000")
            if a and b:
                goals.append((f"matching ({case}) does not grow linearly: 10 → 1 000 routes",
                              b / a < 10, f"{fmt_ns(a)} → {fmt_ns(b)} ({b / a:.1f}× for 100× routes)"))

    if rounds > 1:
        w("## Round by round")
        w("")
        w("HTTP/1.1 requests/s and proxy CPU per request of each round (the tables above show the"
          " medians).")
        w("")
        w("| traffic | proxy | " + " | ".join(f"round {i}" for i in range(1, rounds + 1)) + " |")
        w("|---|---|" + "---|" * rounds)
        for conns in sorted(http1):
            for p in proxies:
                r = http1[conns].get(p)
                if r is None:
                    continue
                cells = []
                for x in r["by_round"]:
                    c = f"{fmt_num(x['wrk']['rps'], 'rps')}"
                    if x.get("cpu_us_per_req") is not None:
                        c += f", {fmt_num(x['cpu_us_per_req'], 'us_cpu')}"
                    cells.append(c)
                w(f"| HTTP/1.1 × {conns} | {NAMES[p]} | " + " | ".join(cells) + " |")
        w("")

    if goals:
        w("## Goals of issue 7 on this run")
        w("")
        w("| goal | met | figures |")
        w("|---|---|---|")
        for g, ok, fig in goals:
            w(f"| {g} | {'yes' if ok else '**no**'} | {fig} |")
        w("")

    notes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "profile.md")
    if os.path.exists(notes):
        w(open(notes).read().rstrip())
        w("")
    sys.stdout.write("\n".join(o) + "\n")


def perf_stat_csv(path):
    """{event: count} of a `perf stat -x,` output file (task-clock in milliseconds)."""
    out = {}
    for line in open(path):
        f = line.strip().split(",")
        if len(f) < 3 or line.startswith("#") or not f[0]:
            continue
        try:
            out[f[2]] = float(f[0])
        except ValueError:  # "<not counted>"
            out[f[2]] = None
    return out


def syscalls_report(lines):
    by_proxy = {}
    for line in lines:
        if not line.strip():
            continue
        proxy, reqs, path = line.split()
        stat = perf_stat_csv(path)
        per = {}
        for ev, v in stat.items():
            if v is None:
                continue
            name = ev.replace("syscalls:sys_enter_", "").replace("raw_syscalls:sys_enter", "all system calls")
            if ev == "task-clock":
                per["CPU µs"] = v * 1e3 / int(reqs)
            else:
                per[name] = v / int(reqs)
        waits = (stat.get("syscalls:sys_enter_epoll_wait") or 0) + (stat.get("syscalls:sys_enter_epoll_pwait") or 0)
        if waits:
            # epoll_wait calls per request, inverted: requests served per wait.
            per["requests per epoll_wait"] = int(reqs) / waits
        by_proxy.setdefault(proxy, []).append(per)
    names = []
    for runs in by_proxy.values():
        for per in runs:
            names += [n for n in per if n not in names]
    for name in names:
        cells = []
        for proxy, runs in by_proxy.items():
            vals = [per.get(name, 0.0) for per in runs]
            cells.append(f"{proxy} {median(vals):8.3f} | " + " ".join(f"{v:.3f}" for v in vals))
        print(f"{name:>26}: " + "    ".join(cells))


if __name__ == "__main__":
    if sys.argv[1:] == ["--syscalls"]:
        syscalls_report(sys.stdin.read().splitlines())
    elif sys.argv[1:] == ["--h2load-latency"]:
        mean, mx = h2load_latency(sys.stdin.read())
        print(mean if mean is not None else "", mx if mx is not None else "")
    elif len(sys.argv) == 3:
        main(sys.argv[1], sys.argv[2])
    else:
        sys.exit("usage: report.py META.json RESULTS.jsonl | report.py --h2load-latency < h2load.txt"
                 " | report.py --syscalls < points.txt")
