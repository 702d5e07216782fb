-- wrk script of tests/perf/run.sh: after the run, print one JSON line with the throughput, the
-- latency percentiles (microseconds) and the error counts, for report.py.
done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_s":%.3f,"rps":%.1f,"socket_errors":%d,"timeouts":%d,"non2xx":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.requests, secs, summary.requests / secs, e.connect + e.read + e.write, e.timeout,
    e.status, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
