//! Engine time from the store contract's [`Clock`]: the one bridge between the two.

use atrion_core::Timestamp;
use atrion_state::Clock;

/// Now as the engine's [`Timestamp`]: a [`Clock`]'s monotonic time since its epoch. Every
/// clock has it; `use` this trait to call `clock.now()`.
pub trait EngineClock: Clock {
    /// Now, in engine time.
    fn now(&self) -> Timestamp {
        Timestamp::ZERO + self.elapsed()
    }
}

impl<C: Clock + ?Sized> EngineClock for C {}
