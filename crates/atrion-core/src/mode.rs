//! The mode machine of a route.
//!
//! ```text
//!  Bootstrap --(bootstrap_updates)--> Operational --(R >= break)--> Open
//!                                        ^                          |
//!                                        |        (default model: after the open interval)
//!                                        |                          v
//!                                        +--(healthy probes, R < recovery)-- HalfOpen
//!                                                   (an unhealthy probe re-trips to Open)
//! ```
//! The reference model has no half-open: it leaves Open straight to Operational when
//! telemetry shows `(S < sigma and |P| < P_crit) or R < recovery`, and only when telemetry
//! arrives.

use serde::{Deserialize, Serialize};

/// Where a route is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Mode {
    /// Learning: too few updates to judge; cannot trip.
    Bootstrap = 0,
    /// Deciding by resistance.
    Operational = 1,
    /// Tripped: shedding everything (the reference's CIRCUIT_BREAKER).
    Open = 2,
    /// Letting a ramping quota of probes through to test recovery (default model).
    HalfOpen = 3,
}

impl Mode {
    /// The mode of a [`Mode`]'s `u8` value (`mode as u8`); values past the last are
    /// half-open.
    pub fn from_u8(v: u8) -> Mode {
        match v {
            0 => Mode::Bootstrap,
            1 => Mode::Operational,
            2 => Mode::Open,
            _ => Mode::HalfOpen,
        }
    }

    /// The name used in output (`bootstrap`, `operational`, `open`, `half_open`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Bootstrap => "bootstrap",
            Mode::Operational => "operational",
            Mode::Open => "open",
            Mode::HalfOpen => "half_open",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u8_roundtrip() {
        for m in [Mode::Bootstrap, Mode::Operational, Mode::Open, Mode::HalfOpen] {
            assert_eq!(Mode::from_u8(m as u8), m);
        }
    }
}
