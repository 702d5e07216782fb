//! Outlier detection, per the target node listener's `outlierDetection` (App Mesh's
//! `maxServerErrors`, `interval`, `baseEjectionDuration`, `maxEjectionPercent`, applied at the
//! client as Envoy did). Every attempt reports how it ended: a 5xx response, a connect failure, a
//! reset or a per-try timeout is a server error; anything else ends the streak. When an
//! endpoint's streak reaches `maxServerErrors` within one `interval` (a streak whose first error
//! is older than `interval` starts over) it is ejected for `baseEjectionDuration` × the number
//! of times it was ejected (capped at [`MAX_EJECTION`] or the base, whichever is longer); the
//! count decays by one for every `interval` the endpoint stays healthy between ejections.
//! Ejection never takes more than `maxEjectionPercent` of the set (one endpoint may always go,
//! "regardless", as App Mesh says) and never the last endpoint that is not ejected. Ejected
//! endpoints return by themselves when their time is up; until then the balancer skips them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use taskmesh_mesh::OutlierDetection;

use super::{Cluster, Host, InFlight};

/// Longest single ejection (Envoy's default `max_ejection_time`), unless the base is longer.
pub const MAX_EJECTION: Duration = Duration::from_secs(300);

/// How an attempt on an endpoint ended, as outlier detection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response that is not a server error.
    Success,
    /// 5xx, reset or per-try timeout.
    ServerError,
    /// The connection attempt failed (refused, connect timeout, reset during connect, TLS
    /// handshake): a server error for outlier detection, and a cool-down ([`super::accrual`]).
    ConnectFailure,
}

impl Outcome {
    /// How a failed opaque TCP forward ended: refused, unreachable or timed out (only the
    /// connect can end so) is a connect failure, anything else a server error.
    pub fn of_tcp_error(e: &std::io::Error) -> Outcome {
        use std::io::ErrorKind::*;
        match e.kind() {
            ConnectionRefused | TimedOut | HostUnreachable | NetworkUnreachable
            | AddrNotAvailable => Outcome::ConnectFailure,
            _ => Outcome::ServerError,
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Cluster {
    /// Records the outcome of the attempt holding `attempt`, ejecting its endpoint when
    /// `outlier` says so.
    pub fn report(&self, attempt: &InFlight, outcome: Outcome, outlier: Option<&OutlierDetection>) {
        let host = &attempt.host;
        match outcome {
            Outcome::Success => {
                // Read first: a store per request would bounce the cache line between workers.
                if host.consecutive_errors.load(Ordering::Relaxed) != 0 {
                    host.consecutive_errors.store(0, Ordering::Relaxed);
                }
                host.connect_succeeded();
            }
            Outcome::ServerError | Outcome::ConnectFailure => {
                if outcome == Outcome::ConnectFailure {
                    self.connect_failed(host);
                }
                host.rq_error.fetch_add(1, Ordering::Relaxed);
                if let Some(od) = outlier {
                    self.server_error(host, od);
                }
            }
        }
    }

    fn server_error(&self, host: &Host, od: &OutlierDetection) {
        let now = self.now();
        let interval = nanos(od.interval).max(1);
        let start = host.streak_start.load(Ordering::Relaxed);
        let mut streak = host.consecutive_errors.fetch_add(1, Ordering::Relaxed) + 1;
        if streak == 1 {
            host.streak_start.store(now, Ordering::Relaxed);
        } else if now.saturating_sub(start) > interval {
            host.consecutive_errors.store(1, Ordering::Relaxed);
            host.streak_start.store(now, Ordering::Relaxed);
            streak = 1;
        }
        if streak >= od.max_server_errors.max(1) && !host.is_ejected(now) {
            self.eject(host, od, now, interval);
        }
    }

    fn eject(&self, host: &Host, od: &OutlierDetection, now: u64, interval: u64) {
        let Ok(_serial) = self.eject_lock.lock() else {
            return;
        };
        if host.is_ejected(now) {
            return;
        }
        let set = self.hosts.load();
        let n = set.hosts.len() as u64;
        let ejected = set.hosts.iter().filter(|h| h.is_ejected(now)).count() as u64;
        let within_percent =
            ejected == 0 || (ejected + 1) * 100 <= u64::from(od.max_ejection_percent) * n;
        if ejected + 1 >= n || !within_percent {
            self.stats.ejections_refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                target_node = &*self.node, upstream = %host.addr, ejected, endpoints = n,
                "outlier not ejected: maxEjectionPercent or last endpoint standing"
            );
            return;
        }
        let last_end = host.ejected_until.load(Ordering::Relaxed);
        let mut times = u64::from(host.times_ejected.load(Ordering::Relaxed));
        if last_end > 0 {
            times = times.saturating_sub(now.saturating_sub(last_end) / interval);
        }
        times += 1;
        let base = nanos(od.base_ejection_duration);
        let duration = base
            .saturating_mul(times)
            .min(base.max(nanos(MAX_EJECTION)));
        host.ejected_until
            .store(now.saturating_add(duration.max(1)), Ordering::Relaxed);
        host.times_ejected
            .store(u32::try_from(times).unwrap_or(u32::MAX), Ordering::Relaxed);
        host.consecutive_errors.store(0, Ordering::Relaxed);
        self.stats.ejections_total.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            target_node = &*self.node, port = self.port, upstream = %host.addr,
            times, ejection_ms = duration / 1_000_000,
            "outlier ejected after {} consecutive server errors", od.max_server_errors
        );
    }

    /// Endpoints of the current set ejected now.
    pub fn ejected_now(&self) -> usize {
        let now = self.now();
        self.hosts
            .load()
            .hosts
            .iter()
            .filter(|h| h.is_ejected(now))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cluster::HostSet;
    use crate::cluster::balance::Tried;

    fn cluster(n: usize) -> Cluster {
        let c = Cluster::new("node", 80);
        let addrs: Arc<[std::net::SocketAddr]> = (0..n)
            .map(|i| format!("10.0.0.{i}:80").parse().unwrap())
            .collect();
        let hosts = addrs.iter().map(|a| Arc::new(Host::new(*a))).collect();
        c.hosts.store(Arc::new(HostSet { addrs, hosts }));
        c
    }

    fn policy(max: u64, pct: u32, base_ms: u64) -> OutlierDetection {
        OutlierDetection {
            max_server_errors: max,
            interval: Duration::from_secs(10),
            base_ejection_duration: Duration::from_millis(base_ms),
            max_ejection_percent: pct,
        }
    }

    fn attempt_on(c: &Cluster, i: usize) -> InFlight {
        let set = c.hosts();
        let host = set.hosts[i].clone();
        host.rq_active.fetch_add(1, Ordering::Relaxed);
        InFlight { host, index: i }
    }

    #[test]
    fn consecutive_errors_eject_and_success_resets() {
        let c = cluster(3);
        let od = policy(3, 50, 60_000);
        for _ in 0..2 {
            c.report(&attempt_on(&c, 0), Outcome::ServerError, Some(&od));
        }
        c.report(&attempt_on(&c, 0), Outcome::Success, Some(&od));
        c.report(&attempt_on(&c, 0), Outcome::ServerError, Some(&od));
        assert_eq!(c.ejected_now(), 0, "streak was broken by a success");
        c.report(&attempt_on(&c, 0), Outcome::ServerError, Some(&od));
        c.report(&attempt_on(&c, 0), Outcome::ServerError, Some(&od));
        assert_eq!(c.ejected_now(), 1);
        assert_eq!(c.stats.ejections_total.load(Ordering::Relaxed), 1);
        // The balancer no longer picks it.
        for _ in 0..100 {
            assert_ne!(c.pick(&c.hosts(), Tried::default()).index(), 0);
        }
    }

    #[test]
    fn max_ejection_percent_and_last_endpoint_are_respected() {
        let c = cluster(3);
        let od = policy(1, 50, 60_000);
        for i in 0..3 {
            c.report(&attempt_on(&c, i), Outcome::ServerError, Some(&od));
        }
        assert_eq!(c.ejected_now(), 1, "50% of 3: only the first ejection fits");
        assert_eq!(c.stats.ejections_refused.load(Ordering::Relaxed), 2);
        let c = cluster(3);
        let od = policy(1, 100, 60_000);
        for i in 0..3 {
            c.report(&attempt_on(&c, i), Outcome::ServerError, Some(&od));
        }
        assert_eq!(c.ejected_now(), 2, "one endpoint always stays");
    }

    #[test]
    fn ejection_ends_after_the_duration_and_grows_when_repeated() {
        let c = cluster(2);
        let od = policy(1, 50, 40);
        c.report(&attempt_on(&c, 0), Outcome::ServerError, Some(&od));
        assert_eq!(c.ejected_now(), 1);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.ejected_now(), 0, "back after baseEjectionDuration");
        c.report(&attempt_on(&c, 0), Outcome::ServerError, Some(&od));
        let h = &c.hosts().hosts[0];
        assert_eq!(h.times_ejected.load(Ordering::Relaxed), 2);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.ejected_now(), 1, "second ejection lasts 2 × base");
    }

    #[test]
    fn without_outlier_detection_nothing_is_ejected() {
        let c = cluster(3);
        for _ in 0..20 {
            c.report(&attempt_on(&c, 0), Outcome::ServerError, None);
        }
        assert_eq!(c.ejected_now(), 0);
        assert_eq!(c.hosts().hosts[0].rq_error.load(Ordering::Relaxed), 20);
    }
}
