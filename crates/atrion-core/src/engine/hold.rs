//! Operators' holds (docs/DESIGN.md §5): a route held open, closed or in shadow, whatever
//! its physics says; the hook told after each; a held route's shadowed count.

use std::sync::PoisonError;
use std::sync::atomic::Ordering::{Relaxed, Release};

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::EngineLimits;
use super::{Engine, EngineError, HoldHook, Route, Slot, check_id, unknown};
#[cfg(doc)]
use crate::decision::Reason;
use crate::observer::PhysicsObserver;
use crate::time::Timestamp;

impl<O: PhysicsObserver> Engine<O> {
    /// Holds `route` open (every request shed with [`Reason::Held`]), closed (every request
    /// admitted), or releases it to its physics. The route is created if unknown; telemetry
    /// goes on being learned while it is held, and a held route is never evicted.
    ///
    /// A hold always finds room: on a full table, idle routes are evicted at once, then the
    /// route takes a place of the reserve ([`EngineLimits::held_reserve`]), and when that is
    /// used up too, the least valuable route that no operator holds is evicted for it.
    /// [`EngineError::TableFull`] only when every route is held.
    pub fn hold(&self, route: &str, hold: Hold, now: Timestamp) -> Result<(), EngineError> {
        check_id(route)?;
        let found = match self.find(route, Route::clone) {
            Some(r) => r,
            None => match self.route_or_create(route, now, || true) {
                Slot::Tracked(r) => r,
                // Nothing to release on a route that is not tracked: no room is made for it.
                Slot::Untracked | Slot::Refused if hold == Hold::Released => return Ok(()),
                Slot::Untracked | Slot::Refused => self.room_for_hold(route, now)?,
            },
        };
        let view = &found.cell().view;
        view.held.store(hold as u8, Relaxed);
        // Collected by the next pulse, which the hook may call at once: a hold is rare and
        // must outlive a crash.
        view.dirty.store(true, Release);
        let hook = self.hold_hook.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(hook) = hook {
            hook();
        }
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) the hook told after every [`Engine::hold`], once the
    /// hold is in place and the route marked for [`Engine::take_dirty`]. It must not block.
    pub fn on_hold(&self, hook: Option<HoldHook>) {
        *self.hold_hook.lock().unwrap_or_else(PoisonError::into_inner) = hook;
    }

    /// The operator's hold on a tracked route.
    pub fn held(&self, route: &str) -> Result<Hold, EngineError> {
        self.find(route, |r| Hold::from_u8(r.cell().view.held.load(Relaxed))).ok_or_else(|| unknown(route))
    }

    /// How many of a tracked route's decisions a shadow hold turned from shed into admit.
    pub fn shadowed(&self, route: &str) -> Result<u32, EngineError> {
        self.find(route, |r| r.cell().view.shadowed.load(Relaxed)).ok_or_else(|| unknown(route))
    }
}

/// An operator's hold on a route ([`Engine::hold`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Hold {
    /// No hold: the physics decides.
    #[default]
    Released = 0,
    /// Every request is shed.
    Open = 1,
    /// Every request is admitted.
    Closed = 2,
    /// Shadow: the physics decides and its decision is recorded, but nothing is shed (a
    /// shed becomes an admit with [`Reason::Shadow`], counted by [`Engine::shadowed`]): the
    /// safe way to roll Atrion out on a route.
    Shadow = 3,
}

impl Hold {
    pub(super) fn from_u8(v: u8) -> Hold {
        match v {
            1 => Hold::Open,
            2 => Hold::Closed,
            3 => Hold::Shadow,
            _ => Hold::Released,
        }
    }
}
