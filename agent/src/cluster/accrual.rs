//! Failure accrual for connect failures, independent of outlier detection (which App Mesh does
//! not configure by default). An endpoint whose connection attempt fails — refused, connect
//! timeout, reset during connect, TLS handshake failure — is put in a cool-down: the balancer
//! does not choose it (unless every endpoint is cooling) until a deadline. Without this, power of
//! two choices over in-flight requests would favour an endpoint that refuses connections at once
//! (it never has requests in flight) and every client request drawing it would cost a retry.
//!
//! The schedule: the n-th consecutive connect failure cools the endpoint for
//! min([`COOLDOWN_BASE`] × 2^(n-1), [`COOLDOWN_MAX`]), jittered down by up to
//! [`JITTER_PERCENT`] % so agents that saw the same failure do not probe together. Once the
//! deadline passes the endpoint is eligible again and the next pick probes it; another connect
//! failure starts a longer cool-down, a successful response ends the streak. Failures of
//! attempts that were already under way when the cool-down began (the connects racing the first
//! failure) neither lengthen it nor count again. Two relaxed atomics per endpoint, no lock, no
//! allocation.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Cluster, Host};

/// First cool-down (linkerd2-proxy's failure accrual `minPenalty`).
pub const COOLDOWN_BASE: Duration = Duration::from_secs(1);
/// Longest cool-down (Envoy's default `baseEjectionTime`; linkerd's `maxPenalty` is 60 s).
pub const COOLDOWN_MAX: Duration = Duration::from_secs(30);
/// The cool-down is drawn uniformly from [(100 − this) %, 100 %] of the schedule's value
/// (linkerd's `jitterRatio` 0.5).
pub const JITTER_PERCENT: u64 = 50;

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The cool-down after the `streak`-th consecutive connect failure (1-based), before jitter.
pub fn cooldown(streak: u32) -> Duration {
    let doublings = streak.saturating_sub(1).min(16);
    COOLDOWN_BASE
        .saturating_mul(1u32 << doublings)
        .min(COOLDOWN_MAX)
}

/// [`cooldown`] jittered with `random` bits, in nanoseconds (at least 1).
pub fn jittered(streak: u32, random: u64) -> u64 {
    let full = nanos(cooldown(streak));
    let spread = full / 100 * JITTER_PERCENT;
    (full
        - if spread == 0 {
            0
        } else {
            random % (spread + 1)
        })
    .max(1)
}

impl Host {
    /// Whether the endpoint is in a connect-failure cool-down at `now` (cluster nanos).
    pub fn is_cooling(&self, now: u64) -> bool {
        self.cooldown_until.load(Ordering::Relaxed) > now
    }

    /// Consecutive connect failures that started a cool-down (0 after a success).
    pub fn connect_failures(&self) -> u32 {
        self.connect_failures.load(Ordering::Relaxed)
    }

    /// A connection attempt failed at `now`: starts the next cool-down unless one is running.
    /// Returns whether a cool-down started.
    pub(super) fn connect_failed(&self, now: u64, random: u64) -> bool {
        let until = self.cooldown_until.load(Ordering::Relaxed);
        if until > now {
            return false;
        }
        let streak = self
            .connect_failures
            .load(Ordering::Relaxed)
            .saturating_add(1);
        let end = now.saturating_add(jittered(streak, random));
        if self
            .cooldown_until
            .compare_exchange(until, end, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            // Another failure started it first.
            return false;
        }
        self.connect_failures.store(streak, Ordering::Relaxed);
        true
    }

    /// A response came back: the endpoint accepts connections; the streak ends.
    pub(super) fn connect_succeeded(&self) {
        // Read first: a store per request would bounce the cache line between workers.
        if self.connect_failures.load(Ordering::Relaxed) != 0 {
            self.connect_failures.store(0, Ordering::Relaxed);
            self.cooldown_until.store(0, Ordering::Relaxed);
        }
    }
}

impl Cluster {
    /// Records a connect failure of `host` (cool-down, counted and logged when one starts).
    pub(super) fn connect_failed(&self, host: &Host) {
        if host.connect_failed(self.now(), rand::random()) {
            self.stats.cooldowns_total.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                target_node = &*self.node, port = self.port, upstream = %host.addr,
                consecutive = host.connect_failures(),
                "connect failure: endpoint cooling down"
            );
        }
    }

    /// Endpoints of the current set cooling down now.
    pub fn cooling_now(&self) -> usize {
        let now = self.now();
        self.hosts
            .load()
            .hosts
            .iter()
            .filter(|h| h.is_cooling(now))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cluster::HostSet;
    use crate::cluster::balance::{Tried, choose};
    use crate::cluster::outlier::Outcome;

    const S: u64 = 1_000_000_000;

    #[test]
    fn schedule_doubles_from_one_second_up_to_thirty() {
        let secs: Vec<u64> = (1..=8).map(|n| cooldown(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(cooldown(u32::MAX), COOLDOWN_MAX);
        assert_eq!(cooldown(0), COOLDOWN_BASE);
        // Jitter only shortens, by at most half, and spreads.
        for n in 1..10 {
            let full = nanos(cooldown(n));
            for r in [0u64, 1, 12_345, u64::MAX, u64::MAX / 7] {
                let j = jittered(n, r);
                assert!(j <= full && j >= full / 2, "{n} {r}: {j}");
            }
        }
        assert_eq!(jittered(1, 0), S);
        let spread: std::collections::BTreeSet<_> = (0..50u64)
            .map(|i| jittered(3, i.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
            .collect();
        assert!(spread.len() > 40, "not jittered");
    }

    #[test]
    fn failures_grow_the_cooldown_and_success_resets_it() {
        let h = Host::new("10.0.0.1:80".parse().unwrap());
        assert!(!h.is_cooling(0));
        // First failure at t = 10 s: cooling for 1 s (no jitter with random 0).
        assert!(h.connect_failed(10 * S, 0));
        assert!(h.is_cooling(10 * S) && h.is_cooling(11 * S - 1));
        assert!(!h.is_cooling(11 * S));
        // Failures of attempts that raced the first do not lengthen it or count.
        assert!(!h.connect_failed(10 * S + 5, 0));
        assert_eq!(h.connect_failures(), 1);
        assert!(!h.is_cooling(11 * S));
        // The probe after the deadline fails: 2 s, then 4 s, ... up to 30 s.
        let mut t = 11 * S;
        for (n, secs) in [(2u32, 2u64), (3, 4), (4, 8), (5, 16), (6, 30), (7, 30)] {
            assert!(h.connect_failed(t, 0));
            assert_eq!(h.connect_failures(), n);
            assert!(h.is_cooling(t + secs * S - 1), "streak {n}");
            assert!(!h.is_cooling(t + secs * S), "streak {n}");
            t += secs * S;
        }
        // A response resets the streak and ends a running cool-down.
        assert!(h.connect_failed(t, 0));
        assert!(h.is_cooling(t + 1));
        h.connect_succeeded();
        assert_eq!(h.connect_failures(), 0);
        assert!(!h.is_cooling(t + 1));
        assert!(h.connect_failed(t + 2, 0));
        assert!(!h.is_cooling(t + 2 + S), "back to the 1 s start");
    }

    #[test]
    fn the_balancer_skips_cooling_endpoints_unless_all_are() {
        let hosts: Vec<Arc<Host>> = (0..3)
            .map(|i| Arc::new(Host::new(format!("10.0.0.{i}:80").parse().unwrap())))
            .collect();
        let r = |i: u64| i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        hosts[1].connect_failed(0, 0);
        let mut picks = [0u32; 3];
        for i in 0..600 {
            picks[choose(&hosts, 10, Tried::default(), r(i))] += 1;
        }
        assert_eq!(picks[1], 0, "{picks:?}");
        assert!(picks[0] > 200 && picks[2] > 200, "{picks:?}");
        // A retry that tried the only healthy endpoints goes back to one of them, not to the
        // cooling one.
        let mut tried = Tried::default();
        tried.add(0);
        tried.add(2);
        for i in 0..100 {
            assert_ne!(choose(&hosts, 10, tried, r(i)), 1);
        }
        // After the deadline it is eligible again (the next pick probes it).
        assert!((0..100).any(|i| choose(&hosts, S, Tried::default(), r(i)) == 1));
        // Every endpoint cooling: the choice falls back to all of them, as without accrual.
        hosts[0].connect_failed(0, 0);
        hosts[2].connect_failed(0, 0);
        let mut picks = [0u32; 3];
        for i in 0..600 {
            picks[choose(&hosts, 10, Tried::default(), r(i))] += 1;
        }
        assert!(picks.iter().all(|p| *p > 100), "{picks:?}");
        // And a retry still prefers an endpoint it has not tried.
        let mut tried = Tried::default();
        tried.add(0);
        tried.add(1);
        assert_eq!(choose(&hosts, 10, tried, r(3)), 2);
    }

    #[test]
    fn connect_failures_reported_to_a_cluster_are_counted_and_cooled() {
        let c = Cluster::new("node", 80);
        let addrs: Arc<[std::net::SocketAddr]> = (0..3)
            .map(|i| format!("10.0.0.{i}:80").parse().unwrap())
            .collect();
        let hosts = addrs.iter().map(|a| Arc::new(Host::new(*a))).collect();
        c.hosts.store(Arc::new(HostSet { addrs, hosts }));
        let on = |i: usize| {
            let set = c.hosts();
            let host = set.hosts[i].clone();
            host.rq_active.fetch_add(1, Ordering::Relaxed);
            crate::cluster::InFlight { host, index: i }
        };
        // Several attempts fail together: one cool-down.
        for _ in 0..4 {
            c.report(&on(0), Outcome::ConnectFailure, None);
        }
        assert_eq!(c.cooling_now(), 1);
        assert_eq!(c.stats.cooldowns_total.load(Ordering::Relaxed), 1);
        assert_eq!(c.hosts().hosts[0].rq_error.load(Ordering::Relaxed), 4);
        for _ in 0..100 {
            assert_ne!(c.pick(&c.hosts(), Tried::default()).index(), 0);
        }
        // A 5xx response or a reset is not a connect failure; a success ends the cool-down.
        c.report(&on(1), Outcome::ServerError, None);
        assert_eq!(c.cooling_now(), 1);
        c.report(&on(0), Outcome::Success, None);
        assert_eq!(c.cooling_now(), 0);
    }
}
