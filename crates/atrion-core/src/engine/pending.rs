//! The samples an operational route has been reported since its last physics step
//! (docs/DESIGN.md §7.2, "Coalesced steps"): sums a report adds to without the route's lock,
//! which the step drains.
//!
//! A report touches one of these cache lines: the route's own sums while a single thread
//! reports on it, one lane of a striped set once several threads do. The lanes are
//! allocated once, by the step that first sees reports from more than one thread in a
//! window, and kept for as long as the route lives.

use std::sync::atomic::{AtomicPtr, AtomicU16, AtomicU32, Ordering::*};

use crate::physics::Window;

/// Reporting threads alternating on a route within one window, from which on the route's
/// reports go to lanes: two threads taking turns on every report make a window's worth of
/// switches within a few reports, one thread never does.
const CONTENDED: u16 = 16;

/// Sums of samples: the count, and per channel the sum of its values (`f32` bits: the
/// smoothers they are folded into keep `f32`, and a window's sum needs no more digits).
#[derive(Debug, Default)]
#[repr(C)]
pub(super) struct Sums {
    count: AtomicU32,
    /// The thread that last added here (its lane index plus one; 0: none yet), and how many
    /// times the adding thread changed since the last step: the test for contention.
    writer: AtomicU16,
    switches: AtomicU16,
    /// Samples stamped earlier than the route's last step (the clock-skew rule: counted,
    /// folded with the window, no time passes for them).
    skewed: AtomicU32,
    latency: AtomicU32,
    error: AtomicU32,
    saturation: AtomicU32,
}

/// Adds `x` to an `f32` held as bits (a compare-and-swap loop: one thread's samples are
/// summed in the order they came).
#[inline]
fn add_f(a: &AtomicU32, x: f64) {
    let mut cur = a.load(Relaxed);
    loop {
        let next = (f64::from(f32::from_bits(cur)) + x) as f32;
        let next = next.to_bits();
        match a.compare_exchange_weak(cur, next, Relaxed, Relaxed) {
            Ok(_) => return,
            Err(seen) => cur = seen,
        }
    }
}

impl Sums {
    /// Adds one sample. The count goes last (release, within `SeqCst`): a step that counts
    /// the sample sees its values.
    #[inline]
    fn add(&self, raw: [f64; 3], skewed: bool) {
        if skewed {
            self.skewed.fetch_add(1, Relaxed);
        }
        add_f(&self.latency, raw[0]);
        add_f(&self.error, raw[1]);
        add_f(&self.saturation, raw[2]);
        // SeqCst: this add and the reporter's read of the view's flag after it, against the
        // step's clearing of the flag before it takes the count (docs/DESIGN.md §7.2).
        self.count.fetch_add(1, SeqCst);
    }

    /// Takes everything out: the count first (acquire, within `SeqCst`), so that the values of every sample
    /// counted are in the sums taken. A sample being added meanwhile may leave its values
    /// here and its count for the next step, or the other way round; nothing is lost.
    fn take(&self) -> Taken {
        let n = self.count.swap(0, SeqCst);
        let sum = [&self.latency, &self.error, &self.saturation].map(|a| f64::from(f32::from_bits(a.swap(0, Relaxed))));
        Taken { window: Window { n, sum }, skewed: self.skewed.swap(0, Relaxed) }
    }

    /// Puts values without a count back (their samples' counts come in the next window).
    fn put_back(&self, sum: [f64; 3]) {
        add_f(&self.latency, sum[0]);
        add_f(&self.error, sum[1]);
        add_f(&self.saturation, sum[2]);
    }
}

/// What a step takes out of the sums: the window, and how many of its samples were stamped
/// earlier than the route's last step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Taken {
    pub(super) window: Window,
    pub(super) skewed: u32,
}

/// A lane of the striped sums: a cache line of its own, and the line beside it (128 bytes:
/// processors that fetch lines in pairs would otherwise make neighbouring lanes share).
#[derive(Debug, Default)]
#[repr(C, align(128))]
struct Lane(Sums);

/// The striped sums of a contended route: twice the machine's parallelism in lanes (a
/// power of two, from 4 to 64), so that threads handed lane indices in turn rarely share
/// one while they run; beyond 64 threads they share.
#[derive(Debug)]
struct Lanes(Box<[Lane]>);

/// What the route's reports have added since its last step.
#[derive(Debug, Default)]
pub(super) struct Pending {
    sums: Sums,
    /// The lanes, once the route is contended (null before).
    lanes: AtomicPtr<Lanes>,
}

thread_local! {
    /// This thread's lane index, handed out in turn.
    static LANE: usize = NEXT_LANE.fetch_add(1, Relaxed);
}

static NEXT_LANE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Pending {
    /// Adds one sample: to the route's sums, or to this thread's lane once the route is
    /// contended. Never blocks; a compare-and-swap retries only against another thread on
    /// the same cache line.
    /// `skewed`: the sample is stamped earlier than the route's last step.
    #[inline]
    pub(super) fn add(&self, raw: [f64; 3], skewed: bool) {
        let lane = LANE.try_with(|l| *l).unwrap_or(0);
        let lanes = self.lanes.load(Acquire);
        if !lanes.is_null() {
            // SAFETY: once published, the lanes live as long as `self` (freed in `Drop`).
            let lanes = unsafe { &(*lanes).0 };
            lanes[lane & (lanes.len() - 1)].0.add(raw, skewed);
            return;
        }
        let me = (lane as u16).wrapping_add(1).max(1);
        if self.sums.writer.load(Relaxed) != me {
            self.sums.writer.store(me, Relaxed);
            self.sums.switches.fetch_add(1, Relaxed);
        }
        self.sums.add(raw, skewed);
    }

    /// Takes every sample added so far (under the route's lock: one taker at a time), and,
    /// if `may_stripe` (a report's step: decisions never allocate), sets up the lanes when
    /// the window showed contention. Values whose counts are not in yet go back for the next
    /// step.
    pub(super) fn take(&self, may_stripe: bool) -> Taken {
        let Taken { window: mut w, mut skewed } = self.sums.take();
        let lanes = self.lanes.load(Acquire);
        if lanes.is_null() {
            if self.sums.switches.load(Relaxed) >= CONTENDED && may_stripe {
                self.stripe();
            }
            self.sums.switches.store(0, Relaxed);
        } else {
            // SAFETY: as in `add`.
            for lane in unsafe { (*lanes).0.iter() } {
                let Taken { window: l, skewed: k } = lane.0.take();
                w.n = w.n.saturating_add(l.n);
                skewed = skewed.saturating_add(k);
                for (s, v) in w.sum.iter_mut().zip(l.sum) {
                    *s += v;
                }
            }
        }
        if w.n == 0 && w.sum != [0.0; 3] {
            self.sums.put_back(w.sum);
            w.sum = [0.0; 3];
        }
        Taken { window: w, skewed }
    }

    /// Allocates and publishes the lanes (once per route, by the step: under the lock).
    #[cold]
    fn stripe(&self) {
        let n = std::thread::available_parallelism().map_or(8, |n| 2 * n.get()).next_power_of_two().clamp(4, 64);
        let lanes = Box::new(Lanes((0..n).map(|_| Lane::default()).collect()));
        self.lanes.store(Box::into_raw(lanes), Release);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let lanes = *self.lanes.get_mut();
        if !lanes.is_null() {
            // SAFETY: allocated by `stripe` through `Box::into_raw`, freed only here.
            drop(unsafe { Box::from_raw(lanes) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_sums_what_was_added_and_empties() {
        let p = Pending::default();
        p.add([10.0, 0.0, 0.5], false);
        p.add([30.0, 1.0, 0.25], true);
        let t = p.take(true);
        assert_eq!(t.window.n, 2);
        assert_eq!(t.window.sum, [40.0, 1.0, 0.75]);
        assert_eq!(t.skewed, 1);
        assert_eq!(p.take(true), Taken { window: Window { n: 0, sum: [0.0; 3] }, skewed: 0 });
    }

    #[test]
    fn threads_taking_turns_stripe_the_route_and_lose_nothing() {
        let p = Pending::default();
        let per = 20_000;
        let mut total = Window { n: 0, sum: [0.0; 3] };
        std::thread::scope(|s| {
            for t in 0..4 {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..per {
                        p.add([1.0, f64::from(t % 2), 0.5], false);
                    }
                });
            }
            // Steps while the threads report, as the engine's would.
            for _ in 0..200 {
                let w = p.take(true).window;
                total.n += w.n;
                for (a, b) in total.sum.iter_mut().zip(w.sum) {
                    *a += b;
                }
                std::thread::yield_now();
            }
        });
        let w = p.take(true).window;
        total.n += w.n;
        for (a, b) in total.sum.iter_mut().zip(w.sum) {
            *a += b;
        }
        assert_eq!(total.n, 4 * per);
        assert_eq!(total.sum, [f64::from(4 * per), f64::from(2 * per), f64::from(2 * per)]);
    }
}
