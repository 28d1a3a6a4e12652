//! How the facade reads now: its clock's own read when the clock is one of the known ones
//! (a direct, inlined call), the [`Clock`] trait's otherwise.
//!
//! The facade keeps its clock twice: as the `Arc<dyn Clock>` it shares (with the store, the
//! sync, the sidecar: [`crate::Atrion::clock`]) and as a [`Now`], a copy that reads the same
//! time without the virtual call. A decision is a few tens of nanoseconds (docs/DESIGN.md
//! §2); the system's clock behind a `dyn` call was as much again, the counter's read is a
//! few nanoseconds.

use std::any::Any;
use std::sync::Arc;

use atrion_core::Timestamp;
use atrion_state::{Clock, CounterClock, SystemClock};
use atrion_sync::EngineClock;

/// The facade's clock, read for engine time.
#[derive(Clone, Debug)]
pub(crate) enum Now {
    /// The default: the processor's counter, read inline.
    Counter(CounterClock),
    /// The standard library's monotonic time, read inline.
    System(SystemClock),
    /// Any other clock (tokio's paused time in tests, a binding's own), through its trait.
    Shared(Arc<dyn Clock>),
}

impl Now {
    /// The clock to share and its reader; `clock`'s own read when it is a known one.
    pub(crate) fn of<C: Clock>(clock: C) -> (Arc<dyn Clock>, Now) {
        let any: &dyn Any = &clock;
        let known = if let Some(c) = any.downcast_ref::<CounterClock>() {
            Some(Now::Counter(c.clone()))
        } else {
            any.downcast_ref::<SystemClock>().map(|c| Now::System(*c))
        };
        let shared: Arc<dyn Clock> = Arc::new(clock);
        let now = known.unwrap_or_else(|| Now::Shared(shared.clone()));
        (shared, now)
    }

    /// Now, in engine time: what `EngineClock::now` on the shared clock reads.
    #[inline]
    pub(crate) fn now(&self) -> Timestamp {
        match self {
            Now::Counter(c) => Timestamp::from_nanos(c.elapsed_nanos()),
            Now::System(c) => c.now(),
            Now::Shared(c) => c.now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use atrion_state::TokioClock;

    use super::*;

    #[test]
    fn known_clocks_are_read_directly_and_others_through_the_trait() {
        assert!(matches!(Now::of(CounterClock::new()).1, Now::Counter(_)));
        assert!(matches!(Now::of(SystemClock::new()).1, Now::System(_)));
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let (shared, now) = Now::of(TokioClock::new());
            assert!(matches!(now, Now::Shared(_)));
            tokio::time::advance(Duration::from_secs(3)).await;
            assert_eq!(now.now(), Timestamp::from_secs(3));
            assert_eq!(shared.now(), Timestamp::from_secs(3));
        });
    }

    #[test]
    fn the_direct_read_and_the_shared_clock_agree() {
        for (shared, now) in [Now::of(CounterClock::new()), Now::of(SystemClock::new())] {
            let (a, b, c) = (shared.now(), now.now(), shared.now());
            assert!(a <= b && b <= c, "{a} {b} {c}");
        }
    }
}
