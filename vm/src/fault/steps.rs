//! Watching the fault's steps: the timing the kernel's benchmarks split a
//! fault's time with, and nothing at all on the production path.
//!
//! The fault runs generic over a [`Watch`]: [`fault`](super::fault) picks
//! [`Unwatched`] when no step clock is installed, whose methods are empty
//! and inline, so the steps compile to straight code with no clock reads and
//! no checks between them; with a clock it picks [`Timed`], a second copy
//! of the same steps that adds each one's time to [`STEP_TIMES`]. Host tests
//! watch with their own `Watch` to stop a fault between two steps.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The fault's steps, in order (see the diagram in [`super`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Lookup,
    FindPage,
    Cow,
    Enter,
    Finish,
}

/// What sees the fault go by: told when an attempt starts and after each
/// step, and handed the zeroing and copying of page contents to run.
pub(crate) trait Watch {
    /// An attempt starts (the first, or one after a restart).
    #[inline(always)]
    fn start(&mut self) {}
    /// `step` has ended, whatever its verdict.
    #[inline(always)]
    fn after(&mut self, _step: Step) {}
    /// Runs `f`, a zeroing or copying of page contents.
    #[inline(always)]
    fn fill(&mut self, f: impl FnOnce()) {
        f()
    }
}

/// The production path: nothing watched, nothing paid.
pub(crate) struct Unwatched;

impl Watch for Unwatched {}

/// Time spent in each step of faults while a clock is installed
/// ([`set_step_clock`]): for the kernel's benchmark split. (A)
pub struct StepTimes {
    pub lookup: AtomicU64,
    pub find_page: AtomicU64,
    pub cow: AtomicU64,
    pub enter: AtomicU64,
    pub finish: AtomicU64,
    /// Of `find_page` and `cow`: zeroing and copying page contents.
    pub fill: AtomicU64,
}

pub static STEP_TIMES: StepTimes = StepTimes {
    lookup: AtomicU64::new(0),
    find_page: AtomicU64::new(0),
    cow: AtomicU64::new(0),
    enter: AtomicU64::new(0),
    finish: AtomicU64::new(0),
    fill: AtomicU64::new(0),
};

/// The clock that times the steps, as a `fn() -> u64` address; 0 when step
/// timing is off, which it is unless a benchmark asks for it: reading a clock
/// between steps is not free (under emulation `rdtsc` is a helper call) and
/// would be paid by every fault. (A)
static STEP_CLOCK: AtomicUsize = AtomicUsize::new(0);

/// Starts timing the fault steps into [`STEP_TIMES`] with `clock` (e.g. the
/// TSC), or stops with `None`.
pub fn set_step_clock(clock: Option<fn() -> u64>) {
    STEP_CLOCK.store(clock.map_or(0, |c| c as usize), Ordering::Relaxed);
}

/// The step clock, if step timing is on.
#[inline(always)]
pub fn step_clock() -> Option<fn() -> u64> {
    match STEP_CLOCK.load(Ordering::Relaxed) {
        0 => None,
        // SAFETY: non-zero values are `fn() -> u64` pointers stored by
        // `set_step_clock`.
        c => Some(unsafe { core::mem::transmute::<usize, fn() -> u64>(c) }),
    }
}

/// Times each step into [`STEP_TIMES`] with a clock (an attempt that
/// restarts is counted up to the step that restarted).
pub(crate) struct Timed {
    clock: fn() -> u64,
    since: u64,
}

impl Timed {
    pub(crate) fn new(clock: fn() -> u64) -> Timed {
        Timed { clock, since: 0 }
    }
}

impl Watch for Timed {
    fn start(&mut self) {
        self.since = (self.clock)();
    }

    fn after(&mut self, step: Step) {
        let t = &STEP_TIMES;
        let acc = match step {
            Step::Lookup => &t.lookup,
            Step::FindPage => &t.find_page,
            Step::Cow => &t.cow,
            Step::Enter => &t.enter,
            Step::Finish => &t.finish,
        };
        let now = (self.clock)();
        acc.fetch_add(now.wrapping_sub(self.since), Ordering::Relaxed);
        self.since = now;
    }

    fn fill(&mut self, f: impl FnOnce()) {
        let t0 = (self.clock)();
        f();
        STEP_TIMES.fill.fetch_add((self.clock)().wrapping_sub(t0), Ordering::Relaxed);
    }
}
