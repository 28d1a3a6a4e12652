//! `PhysicsVector`: a portable snapshot of one route's physics, for the state layer.
//!
//! Two encodings: serde (JSON for dumps and the API) and a compact binary form for stores:
//! one version byte followed by the postcard encoding of the vector. Decoding rejects an
//! unknown version, truncated or trailing bytes, and values that break the physics'
//! invariants, each with its own [`DecodeError`].

use serde::{Deserialize, Serialize};

use crate::config::Model;
use crate::mode::Mode;
use crate::time::Timestamp;

/// The binary encoding's version. Bump it whenever the layout of [`PhysicsVector`] changes.
pub const VECTOR_VERSION: u8 = 2;

/// A route's physics at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhysicsVector {
    /// The model that produced it.
    pub model: Model,
    /// Mode.
    pub mode: Mode,
    /// Resistance (ohms).
    pub resistance: f64,
    /// Scar tissue (ohms, `>= 0`).
    pub scar: f64,
    /// Momentum.
    pub momentum: f64,
    /// Pressure per channel (latency, error, saturation), each in `[-1, 1]`.
    pub pressure: [f64; 3],
    /// Break point (ohms).
    pub break_point: f64,
    /// Recovery point (ohms).
    pub recovery: f64,
    /// Tuner: samples learned.
    pub tuner_samples: u32,
    /// Tuner: time-decayed sample weight (default model).
    pub tuner_weight: f64,
    /// Tuner: mean resistance.
    pub tuner_mean: f64,
    /// Tuner: variance of resistance.
    pub tuner_var: f64,
    /// Telemetry updates absorbed.
    pub updates: u64,
    /// Decayed count of recent trips (the re-trip backoff).
    pub trips: f64,
    /// When the open state ends (default model).
    pub open_until: Timestamp,
    /// When these values were computed.
    pub timestamp: Timestamp,
    /// Default model: samples behind the learned latency normal (0: none learned).
    #[serde(default)]
    pub normal_samples: u32,
    /// Default model: the learned latency normal, mean (ms).
    #[serde(default)]
    pub normal_mean: f64,
    /// Default model: the learned latency normal, variance (ms²).
    #[serde(default)]
    pub normal_var: f64,
}

/// Bytes that are not a valid encoded [`PhysicsVector`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// No bytes at all.
    #[error("physics vector: empty input")]
    Empty,
    /// Encoded by another version of the format.
    #[error("physics vector: version {found} is not supported (expected {expected})")]
    WrongVersion {
        /// The version byte found.
        found: u8,
        /// The version this build reads.
        expected: u8,
    },
    /// Too few bytes, or bytes left over after the vector.
    #[error("physics vector: wrong length ({len} bytes): {detail}")]
    WrongLength {
        /// Bytes given.
        len: usize,
        /// Truncated or trailing.
        detail: &'static str,
    },
    /// The bytes do not decode (an invalid tag, say).
    #[error("physics vector: malformed: {0}")]
    Malformed(String),
    /// A value breaks an invariant (not finite, negative scar, ...).
    #[error("physics vector: field `{field}` is invalid ({value})")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Its value.
        value: f64,
    },
}

impl PhysicsVector {
    /// The compact binary form: `[VECTOR_VERSION] ++ postcard(self)`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let out = vec![VECTOR_VERSION];
        // Serialising plain numbers and enums into a Vec cannot fail.
        postcard::to_extend(self, out).unwrap_or_else(|_| vec![VECTOR_VERSION])
    }

    /// Decodes and validates [`PhysicsVector::to_bytes`] output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if version != VECTOR_VERSION {
            return Err(DecodeError::WrongVersion { found: version, expected: VECTOR_VERSION });
        }
        let (v, rest): (PhysicsVector, _) = postcard::take_from_bytes(body).map_err(|e| match e {
            postcard::Error::DeserializeUnexpectedEnd => {
                DecodeError::WrongLength { len: bytes.len(), detail: "truncated" }
            }
            other => DecodeError::Malformed(other.to_string()),
        })?;
        if !rest.is_empty() {
            return Err(DecodeError::WrongLength { len: bytes.len(), detail: "trailing bytes" });
        }
        v.validate()?;
        Ok(v)
    }

    /// Checks the invariants a vector from elsewhere must keep.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let finite = [
            ("resistance", self.resistance),
            ("scar", self.scar),
            ("momentum", self.momentum),
            ("pressure.latency", self.pressure[0]),
            ("pressure.error", self.pressure[1]),
            ("pressure.saturation", self.pressure[2]),
            ("break_point", self.break_point),
            ("recovery", self.recovery),
            ("tuner_weight", self.tuner_weight),
            ("tuner_mean", self.tuner_mean),
            ("tuner_var", self.tuner_var),
            ("trips", self.trips),
            ("normal_mean", self.normal_mean),
            ("normal_var", self.normal_var),
        ];
        for (field, value) in finite {
            if !value.is_finite() {
                return Err(DecodeError::Invalid { field, value });
            }
        }
        let non_negative = [
            ("resistance", self.resistance),
            ("scar", self.scar),
            ("momentum", self.momentum),
            ("break_point", self.break_point),
            ("recovery", self.recovery),
            ("tuner_weight", self.tuner_weight),
            ("tuner_var", self.tuner_var),
            ("trips", self.trips),
            ("normal_mean", self.normal_mean),
            ("normal_var", self.normal_var),
        ];
        for (field, value) in non_negative {
            if value < 0.0 {
                return Err(DecodeError::Invalid { field, value });
            }
        }
        let max_latency = crate::Telemetry::MAX_LATENCY_MS;
        for (field, value, max) in
            [("normal_mean", self.normal_mean, max_latency), ("normal_var", self.normal_var, max_latency * max_latency)]
        {
            if value > max {
                return Err(DecodeError::Invalid { field, value });
            }
        }
        for (field, value) in [
            ("pressure.latency", self.pressure[0]),
            ("pressure.error", self.pressure[1]),
            ("pressure.saturation", self.pressure[2]),
        ] {
            if !(-1.0..=1.0).contains(&value) {
                return Err(DecodeError::Invalid { field, value });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> PhysicsVector {
        PhysicsVector {
            model: Model::Default,
            mode: Mode::HalfOpen,
            resistance: 42.5,
            scar: 17.25,
            momentum: 0.5,
            pressure: [0.9, 1.0, -0.2],
            break_point: 30.0,
            recovery: 15.0,
            tuner_samples: 120,
            tuner_weight: 33.0,
            tuner_mean: 10.4,
            tuner_var: 0.3,
            updates: 123_456,
            trips: 1.5,
            open_until: Timestamp::from_millis(9_000),
            timestamp: Timestamp::from_millis(8_000),
            normal_samples: 300,
            normal_mean: 41.5,
            normal_var: 25.0,
        }
    }

    #[test]
    fn binary_roundtrip() {
        let v = sample();
        let bytes = v.to_bytes();
        assert_eq!(bytes[0], VECTOR_VERSION);
        assert_eq!(PhysicsVector::from_bytes(&bytes).unwrap(), v);
    }

    #[test]
    fn json_roundtrip() {
        let v = sample();
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(serde_json::from_str::<PhysicsVector>(&json).unwrap(), v);
    }

    #[test]
    fn rejects_wrong_version_length_and_values() {
        let v = sample();
        let mut bytes = v.to_bytes();
        assert_eq!(PhysicsVector::from_bytes(&[]), Err(DecodeError::Empty));
        bytes[0] = 9;
        assert_eq!(
            PhysicsVector::from_bytes(&bytes),
            Err(DecodeError::WrongVersion { found: 9, expected: VECTOR_VERSION })
        );
        bytes[0] = VECTOR_VERSION;
        assert!(matches!(
            PhysicsVector::from_bytes(&bytes[..bytes.len() - 3]),
            Err(DecodeError::WrongLength { detail: "truncated", .. })
        ));
        bytes.push(0);
        assert!(matches!(
            PhysicsVector::from_bytes(&bytes),
            Err(DecodeError::WrongLength { detail: "trailing bytes", .. })
        ));
        let bad = PhysicsVector { scar: -1.0, ..sample() };
        assert_eq!(
            PhysicsVector::from_bytes(&bad.to_bytes()),
            Err(DecodeError::Invalid { field: "scar", value: -1.0 })
        );
        let bad = PhysicsVector { resistance: f64::NAN, ..sample() };
        assert!(matches!(
            PhysicsVector::from_bytes(&bad.to_bytes()),
            Err(DecodeError::Invalid { field: "resistance", .. })
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u32 = 12345;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = PhysicsVector::from_bytes(&bytes);
        }
    }
}
