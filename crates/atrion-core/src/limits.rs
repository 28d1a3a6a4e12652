//! The limits on route ids, in one table: each is defined here once, and every layer that
//! checks a route id or a route pattern (the engine, [`crate::RoutePattern`], the sidecar's
//! API, the policy layer, the CLI) checks it through this module.
//!
//! | limit | value | why | checked by |
//! |---|---|---|---|
//! | [`MAX_ROUTE_ID`] | 1,024 bytes | a route id is a name (a method and a path template), not data; the bound keeps the route table's memory and a decision's hashing bounded | [`check_route_id`]: every `Engine` call naming a route, `RoutePattern::parse`, the sidecar's route fields and its `after` cursor, `atrion demo-traffic --routes` |
//! | [`MAX_POLICY_PATTERN`] | 256 bytes ([`MAX_ROUTE_ID`] / 4) | a policy's pattern is checked for overlap with every other (a search over pairs of positions, `len_a × len_b`); a quarter of a route id keeps one check near 66,000 steps | the default of the policy layer's `Limits::max_pattern_len` |
//!
//! Limits of other inputs are defined with what they bound, each once:
//! [`crate::Telemetry::MAX_LATENCY_MS`] and [`crate::Telemetry::MAX_SCORE`] (telemetry),
//! [`crate::PhysicsConfig::MAX_DURATION`] and [`crate::PhysicsConfig::MIN_SCAR_HALF_LIFE`]
//! (configurations), [`crate::EngineLimits`] (the route table). The state layer bounds its
//! keys itself (`MAX_KEY_LEN` in `atrion-state`); a route shared across a cluster must fit
//! in a key as well, so it may be shorter than [`MAX_ROUTE_ID`] there.

/// The longest route id, in bytes (a route id is 1 to this many bytes).
pub const MAX_ROUTE_ID: usize = 1024;

/// The longest pattern a policy may name, in bytes, by default: a quarter of
/// [`MAX_ROUTE_ID`], because the policy layer checks every pattern for overlap with every
/// other, at a cost of the product of their lengths.
pub const MAX_POLICY_PATTERN: usize = MAX_ROUTE_ID / 4;

/// A route id (or pattern) whose length is outside 1 to [`MAX_ROUTE_ID`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a route is 1 to {MAX_ROUTE_ID} bytes, got {len}")]
pub struct RouteIdLength {
    /// Its length, in bytes.
    pub len: usize,
}

/// Whether `route` is 1 to [`MAX_ROUTE_ID`] bytes long: the one check of a route id's
/// length.
#[inline]
pub const fn check_route_id(route: &str) -> Result<(), RouteIdLength> {
    let len = route.len();
    if len == 0 || len > MAX_ROUTE_ID { Err(RouteIdLength { len }) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_id_is_1_to_max_bytes() {
        assert_eq!(check_route_id(""), Err(RouteIdLength { len: 0 }));
        assert_eq!(check_route_id("r"), Ok(()));
        assert_eq!(check_route_id(&"r".repeat(MAX_ROUTE_ID)), Ok(()));
        let long = "r".repeat(MAX_ROUTE_ID + 1);
        assert_eq!(check_route_id(&long), Err(RouteIdLength { len: MAX_ROUTE_ID + 1 }));
        assert_eq!(check_route_id(&long).unwrap_err().to_string(), "a route is 1 to 1024 bytes, got 1025");
        assert_eq!(MAX_POLICY_PATTERN, 256);
    }
}
