//! The fault test of issue #5: one of three endpoints dies under steady load. Three real
//! backends on 127.0.0.1/.2/.3 (one `ENDPOINTS` name in a hosts file) serve a target node;
//! six keep-alive clients send GETs through the agent's egress for ~10 s; after 3 s the .2
//! backend dies (listener closed, open connections reset). With App Mesh's default retry policy
//! and outlier detection configured, the client sees no failed request after the ejection; the
//! numbers are printed (run with `--nocapture`) and written in the agent README. Without
//! outlier detection (App Mesh's default) the connect-failure cool-down does the job: the dead
//! endpoint is probed now and then, ever more rarely, and clients see (almost) no failure after
//! its first cool-down.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use support::endpoints::{
    api_mesh, cluster_of, endpoint_set, host_of, hosts_file, prom_value, start_front,
};
use support::{HttpClient, World};

const CLIENTS: usize = 6;

/// What one run measured.
struct Report {
    total: u64,
    /// Client failures up to and after the cut: the ejection with outlier detection, the
    /// dead endpoint's first cool-down without.
    failures_before_cut: u64,
    failures_after_cut: u64,
    kill_to_ejection: Option<Duration>,
    kill_to_cooldown: Option<Duration>,
    hits: Vec<u64>,
    /// Retries and attempts on the dead endpoint, sampled once things settled (the cut +
    /// 500 ms) and at the end.
    retries_settled: f64,
    retries_end: f64,
    dead_rq_settled: u64,
    dead_rq_end: u64,
    /// Cool-downs started on the cluster by the end, and the dead endpoint's streak then.
    cooldowns_end: f64,
    connect_streak_end: u64,
}

async fn dead_rq(admin: SocketAddr, dead: SocketAddr) -> u64 {
    host_of(&cluster_of(admin, "api").await, dead)["rq_total"]
        .as_u64()
        .unwrap_or(0)
}

async fn run(outlier: bool, run_for: Duration, kill_after: Duration) -> Report {
    let eps = endpoint_set(3).await;
    let port = eps[0].addr.port();
    let od = outlier.then(|| {
        json!({"maxServerErrors": 3, "interval": {"value": 10, "unit": "s"},
            "baseEjectionDuration": {"value": 30, "unit": "s"}, "maxEjectionPercent": 50})
    });
    let world = World::new(&api_mesh(port, od, None));
    let hosts = hosts_file(world.dir.path(), &eps);
    let agent = start_front(&world, &hosts).await;
    let (egress, admin) = (agent.egress_addr, agent.admin_addr);
    let retries_series =
        format!("taskmesh_upstream_retries_total{{target_node=\"api\",port=\"{port}\"}}");
    let cooldowns_series =
        format!("taskmesh_endpoint_cooldowns_total{{target_node=\"api\",port=\"{port}\"}}");

    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let failures: Arc<std::sync::Mutex<Vec<Instant>>> = Arc::default();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (stop, total, failures) = (stop.clone(), total.clone(), failures.clone());
            tokio::spawn(async move {
                let c = HttpClient::new();
                while !stop.load(Ordering::Relaxed) {
                    let req = http::Request::get("/")
                        .header("host", "api.local")
                        .body(http_body_util::Full::new(bytes::Bytes::new()))
                        .unwrap();
                    let res = c.send(egress, req).await;
                    let ok = matches!(&res, Ok(r) if r.status == 200);
                    total.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        failures.lock().unwrap().push(Instant::now());
                    }
                }
            })
        })
        .collect();

    let start = Instant::now();
    tokio::time::sleep(kill_after).await;
    let dead = eps[1].addr;
    let killed_at = Instant::now();
    eps[1].kill();
    let end = start + run_for;
    let (mut ejected_at, mut cooled_at) = (None, None);
    // Watch for the ejection (with outlier detection) or the first cool-down (without; the
    // first one lasts at least 500 ms, so a 10 ms poll sees it).
    let watch_until = if outlier {
        end
    } else {
        killed_at + Duration::from_millis(1500)
    };
    let flags = |h: &serde_json::Value| h["health_flags"].as_str().unwrap_or("").to_string();
    while Instant::now() < watch_until && (if outlier { ejected_at } else { cooled_at }).is_none() {
        let f = flags(&host_of(&cluster_of(admin, "api").await, dead));
        let now = Instant::now();
        if f.contains("/failed_outlier_check") {
            ejected_at.get_or_insert(now);
        }
        if f.contains("/connect_cooldown") {
            cooled_at.get_or_insert(now);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cut = if outlier { ejected_at } else { cooled_at };
    let settle = cut.map_or(killed_at + Duration::from_millis(1500), |t| {
        t + Duration::from_millis(500)
    });
    tokio::time::sleep_until(settle.into()).await;
    let retries_settled = prom_value(admin, &retries_series).await.unwrap();
    let dead_rq_settled = dead_rq(admin, dead).await;
    tokio::time::sleep_until(end.into()).await;
    let retries_end = prom_value(admin, &retries_series).await.unwrap();
    let dead_rq_end = dead_rq(admin, dead).await;
    let cooldowns_end = prom_value(admin, &cooldowns_series).await.unwrap();
    let dead_end = host_of(&cluster_of(admin, "api").await, dead);
    let health_end = flags(&dead_end);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(
        health_end.contains("/failed_outlier_check"),
        outlier,
        "ejected at the end exactly when outlier detection is on: {health_end}"
    );
    let failures = failures.lock().unwrap().clone();
    let cut = cut.unwrap_or(end);
    let report = Report {
        total: total.load(Ordering::Relaxed),
        failures_before_cut: failures.iter().filter(|t| **t <= cut).count() as u64,
        failures_after_cut: failures.iter().filter(|t| **t > cut).count() as u64,
        kill_to_ejection: ejected_at.map(|t| t - killed_at),
        kill_to_cooldown: cooled_at.map(|t| t - killed_at),
        hits: eps.iter().map(|e| e.hits()).collect(),
        retries_settled,
        retries_end,
        dead_rq_settled,
        dead_rq_end,
        cooldowns_end,
        connect_streak_end: dead_end["consecutive_connect_failures"]
            .as_u64()
            .unwrap_or(0),
    };
    agent.shutdown().await;
    let share: Vec<String> = report
        .hits
        .iter()
        .zip(&eps)
        .map(|(h, e)| {
            format!(
                "{}: {h} ({:.1}%)",
                e.addr.ip(),
                100.0 * *h as f64 / report.total.max(1) as f64
            )
        })
        .collect();
    println!(
        "FAULT outlier_detection={outlier} run={:?} kill_at={:?} clients={CLIENTS}: requests={} \
         cut={} failed_before_cut={} failed_after_cut={} kill_to_ejection={:?} \
         kill_to_first_cooldown={:?} retries(settled->end)={}->{} \
         dead_endpoint_attempts(settled->end)={}->{} cooldowns={} connect_streak_end={} \
         share=[{}]",
        run_for,
        kill_after,
        report.total,
        if outlier {
            "ejection"
        } else {
            "first cool-down"
        },
        report.failures_before_cut,
        report.failures_after_cut,
        report.kill_to_ejection,
        report.kill_to_cooldown,
        report.retries_settled,
        report.retries_end,
        report.dead_rq_settled,
        report.dead_rq_end,
        report.cooldowns_end,
        report.connect_streak_end,
        share.join(", ")
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_three_endpoints_dies_under_load_and_clients_see_no_failure_after_ejection() {
    let r = run(true, Duration::from_secs(10), Duration::from_secs(3)).await;
    let eject = r
        .kill_to_ejection
        .expect("the dead endpoint was never ejected");
    // The connect-failure cool-down keeps the dead endpoint from being tried, so its third
    // consecutive error (maxServerErrors) may only come from the second probe: at most
    // 1 s + 2 s after the first cool-down (jitter only shortens); clients see no failure
    // meanwhile either, as the probes are retried elsewhere.
    assert!(eject < Duration::from_secs(5), "ejection took {eject:?}");
    assert_eq!(
        r.failures_after_cut, 0,
        "clients saw failures after the ejection"
    );
    assert!(
        r.total > 300,
        "too little load to mean anything: {}",
        r.total
    );
    // After the ejection nothing is sent to the dead endpoint, so nothing is retried.
    assert_eq!(r.dead_rq_end, r.dead_rq_settled);
    assert_eq!(r.retries_end, r.retries_settled);
    // The survivors share the load.
    assert!(
        r.hits[0] > r.total / 5 && r.hits[2] > r.total / 5,
        "{:?}",
        r.hits
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_outlier_detection_the_dead_endpoint_cools_down_and_is_probed_ever_more_rarely() {
    let r = run(false, Duration::from_secs(10), Duration::from_secs(2)).await;
    assert!(r.kill_to_ejection.is_none());
    let cool = r
        .kill_to_cooldown
        .expect("the dead endpoint never cooled down");
    assert!(
        cool < Duration::from_secs(1),
        "first cool-down after {cool:?}"
    );
    assert!(
        r.total > 300,
        "too little load to mean anything: {}",
        r.total
    );
    // Few client failures after the first cool-down (at most 1 % of all requests; before this
    // cool-down existed it was ~19 %: the dead endpoint won most draws, each a retry, and the
    // retry budget turned the surplus into 503s).
    assert!(
        r.failures_after_cut * 100 <= r.total,
        "{} of {} requests failed after the first cool-down",
        r.failures_after_cut,
        r.total
    );
    // Still probed: between settle (cool-down + 500 ms) and the end (kill + 8 s) the
    // schedule (≤ 1 s, ≤ 2 s, ≤ 4 s, ...) lets at least one probe through...
    assert!(
        r.dead_rq_end > r.dead_rq_settled,
        "the dead endpoint was never probed again ({} attempts)",
        r.dead_rq_end
    );
    // ...but only a few attempts, where before every draw went to it (thousands).
    assert!(
        r.dead_rq_end - r.dead_rq_settled <= 40,
        "dead endpoint attempts {} -> {}",
        r.dead_rq_settled,
        r.dead_rq_end
    );
    assert!(
        r.retries_end - r.retries_settled <= 40.0,
        "retries {} -> {}",
        r.retries_settled,
        r.retries_end
    );
    // The cool-down grows: one that stayed at 1 s (jittered down to ≥ 0.5 s) would have
    // started 8 or more times in the 8 s after the kill; doubling allows at most 5.
    assert!(
        (3.0..=6.0).contains(&r.cooldowns_end),
        "cool-downs started: {}",
        r.cooldowns_end
    );
    assert!(r.connect_streak_end >= 3, "streak {}", r.connect_streak_end);
    // The survivors share the load.
    assert!(
        r.hits[0] > r.total / 5 && r.hits[2] > r.total / 5,
        "{:?}",
        r.hits
    );
}
