//! Load balancing inside an endpoint set: power of two choices over in-flight requests. Two
//! distinct endpoints are drawn at random and the one with fewer requests in flight wins (ties
//! go to the first draw), so a slow or stuck endpoint, whose requests pile up, gets less new
//! work, while the choice stays O(1) and needs no shared queue. Ejected endpoints, endpoints
//! cooling down after a connect failure ([`super::accrual`]; they have nothing in flight, so
//! they would win most draws) and endpoints the request already tried are not eligible; when a
//! draw hits one, the least-loaded eligible endpoint is taken by a scan. When nothing is eligible
//! the request still goes somewhere: to the least-loaded endpoint neither ejected nor cooling
//! even if tried; when every endpoint is cooling or ejected, the choice is made as if nothing
//! were cooling (power of two choices among untried endpoints that are not ejected, else the
//! least-loaded one not ejected even if tried, else — everything ejected, Envoy's "panic" mode
//! — an untried one, else the first draw). No allocation.

use std::sync::Arc;

use super::Host;

/// The endpoints a request already tried, by index in its snapshot (a 64-bit set; sets larger
/// than 64 endpoints share bits, which only makes the preference approximate).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tried(u64);

impl Tried {
    /// Marks endpoint `i` as tried.
    pub fn add(&mut self, i: usize) {
        self.0 |= 1 << (i % 64);
    }

    /// Whether endpoint `i` was tried.
    pub fn contains(self, i: usize) -> bool {
        self.0 & (1 << (i % 64)) != 0
    }
}

/// The index of the endpoint to use among `hosts` (not empty) at `now` (cluster nanos), with
/// `random` as the source of the two draws.
pub fn choose(hosts: &[Arc<Host>], now: u64, tried: Tried, random: u64) -> usize {
    let n = hosts.len();
    if n <= 1 {
        return 0;
    }
    let a = draw(random as u32, n);
    let mut b = draw((random >> 32) as u32, n - 1);
    if b >= a {
        b += 1;
    }
    let up = |i: usize| !hosts[i].is_ejected(now) && !hosts[i].is_cooling(now);
    let eligible = |i: usize| !tried.contains(i) && up(i);
    if let Some(i) = pair(hosts, a, b, eligible)
        .or_else(|| least_loaded(hosts, eligible))
        .or_else(|| least_loaded(hosts, up))
    {
        return i;
    }
    // Nothing is up (everything cooling or ejected): choose as if there were no cool-downs.
    let live = |i: usize| !tried.contains(i) && !hosts[i].is_ejected(now);
    pair(hosts, a, b, live)
        .or_else(|| least_loaded(hosts, live))
        .or_else(|| least_loaded(hosts, |i| !hosts[i].is_ejected(now)))
        .or_else(|| least_loaded(hosts, |i| !tried.contains(i)))
        .unwrap_or(a)
}

/// Power of two choices between draws `a` and `b`: the eligible one with fewer requests in
/// flight (ties to `a`), or `None` when neither is eligible.
fn pair(
    hosts: &[Arc<Host>],
    a: usize,
    b: usize,
    eligible: impl Fn(usize) -> bool,
) -> Option<usize> {
    match (eligible(a), eligible(b)) {
        (true, true) => Some(if hosts[b].active() < hosts[a].active() {
            b
        } else {
            a
        }),
        (true, false) => Some(a),
        (false, true) => Some(b),
        (false, false) => None,
    }
}

/// A uniform index below `n` from 32 random bits (multiply-shift, no modulo bias to speak of).
fn draw(bits: u32, n: usize) -> usize {
    ((u64::from(bits) * n as u64) >> 32) as usize
}

/// The eligible endpoint with the fewest requests in flight.
fn least_loaded(hosts: &[Arc<Host>], eligible: impl Fn(usize) -> bool) -> Option<usize> {
    (0..hosts.len())
        .filter(|i| eligible(*i))
        .min_by_key(|i| hosts[*i].active())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    fn hosts(n: usize) -> Vec<Arc<Host>> {
        (0..n)
            .map(|i| Arc::new(Host::new(format!("10.0.0.{i}:80").parse().unwrap())))
            .collect()
    }

    #[test]
    fn draws_are_distinct_and_in_range() {
        let h = hosts(3);
        for r in [0u64, u64::MAX, 0x8000_0000_8000_0000, 12345678901234567] {
            assert!(choose(&h, 0, Tried::default(), r) < 3);
        }
        assert_eq!(choose(&h[..1], 0, Tried::default(), 99), 0);
    }

    #[test]
    fn fewer_in_flight_wins_over_many_draws() {
        let h = hosts(4);
        h[2].rq_active.store(50, Ordering::Relaxed);
        let mut picks = [0u32; 4];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..4000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            picks[choose(&h, 0, Tried::default(), x)] += 1;
        }
        // Host 2 only wins when both draws are host 2, which cannot happen (distinct draws).
        assert_eq!(picks[2], 0, "{picks:?}");
        assert!(
            picks.iter().enumerate().all(|(i, p)| i == 2 || *p > 800),
            "{picks:?}"
        );
    }

    #[test]
    fn ejected_and_tried_endpoints_are_avoided() {
        let h = hosts(3);
        h[0].ejected_until.store(1_000, Ordering::Relaxed);
        let mut tried = Tried::default();
        tried.add(1);
        for r in 0..200u64 {
            let r = r.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            assert_eq!(choose(&h, 10, tried, r), 2);
        }
        // Ejection over: host 0 is eligible again.
        assert!((0..200u64).any(|r| choose(
            &h,
            2_000,
            tried,
            r.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ) == 0));
        // Everything tried: a non-ejected endpoint; everything ejected: still an answer.
        tried.add(2);
        tried.add(0);
        let i = choose(&h, 10, tried, 7);
        assert_ne!(i, 0, "ejected endpoint chosen while others are up");
        for x in &h {
            x.ejected_until.store(1_000, Ordering::Relaxed);
        }
        assert!(choose(&h, 10, Tried::default(), 7) < 3);
    }
}
