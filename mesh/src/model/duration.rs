//! App Mesh `Duration`: `{"value": <long>, "unit": "ms" | "s"}`.

use serde::{Deserialize, Serialize};

/// Unit of an App Mesh duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DurationUnit {
    #[serde(rename = "ms")]
    Milliseconds,
    #[serde(rename = "s")]
    Seconds,
}

/// An App Mesh duration (`value` ≥ 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Duration {
    pub value: u64,
    pub unit: DurationUnit,
}

impl Duration {
    /// A duration in seconds.
    pub const fn seconds(value: u64) -> Self {
        Duration {
            value,
            unit: DurationUnit::Seconds,
        }
    }

    /// A duration in milliseconds.
    pub const fn millis(value: u64) -> Self {
        Duration {
            value,
            unit: DurationUnit::Milliseconds,
        }
    }

    /// As a `std::time::Duration` (saturating on absurd values).
    pub fn to_std(self) -> std::time::Duration {
        match self.unit {
            DurationUnit::Milliseconds => std::time::Duration::from_millis(self.value),
            DurationUnit::Seconds => std::time::Duration::from_secs(self.value),
        }
    }

    /// True when the value is 0 (App Mesh: "0 disables" for timeouts).
    pub fn is_zero(self) -> bool {
        self.value == 0
    }
}
