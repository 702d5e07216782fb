//! Weighted target choice: map a uniform `u32` onto `[0, total)` by multiply-shift (no modulo
//! bias worth mentioning, no division) and binary-search the cumulative weights. A weight-0
//! target never owns an interval, so it is never picked.

use crate::table::{CompiledRoute, WeightedTarget};

pub(super) fn pick(route: &CompiledRoute, r: u32) -> &WeightedTarget {
    let total = route.total_weight();
    let x = ((u64::from(r) * u64::from(total)) >> 32) as u32;
    let i = route.cumulative.partition_point(|&c| c <= x);
    // `i < len` whenever total > 0 (compile guarantees it); fall back to the first target.
    route.targets.get(i).unwrap_or(&route.targets[0])
}
