//! A sampling profiler for the benchmarks (`mode=bench profile=on`): while
//! it runs, each timer interrupt records the address it interrupted; the
//! report names the functions the samples fell in, most first.
//!
//! Under emulation instruction counts say little about time (a call's
//! return, an exception, a locked instruction each cost many times a plain
//! one), so where the time of a page fault goes is found by sampling it.
//! Code that runs with interrupts off is charged to the first instruction
//! after they are let in again: a `cli` section shows as its end.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::kprintln;

/// Samples kept per run.
const MAX_SAMPLES: usize = 16 * 1024;

/// Whether samples are being taken. (A)
static ON: AtomicBool = AtomicBool::new(false);
/// Whether `profile=on` was given. (A)
pub static WANTED: AtomicBool = AtomicBool::new(false);
/// Samples taken so far (may pass MAX_SAMPLES: those beyond are dropped). (A)
static TAKEN: AtomicUsize = AtomicUsize::new(0);
/// The interrupted addresses. (A)
static SAMPLES: [AtomicU64; MAX_SAMPLES] = [const { AtomicU64::new(0) }; MAX_SAMPLES];

/// Called by the timer interrupt with the interrupted RIP.
#[inline(always)]
pub fn sample(rip: u64) {
    if ON.load(Ordering::Relaxed) {
        let i = TAKEN.fetch_add(1, Ordering::Relaxed);
        if i < MAX_SAMPLES {
            SAMPLES[i].store(rip, Ordering::Relaxed);
        }
    }
}

/// Forgets the samples taken so far: a new run.
pub fn reset() {
    TAKEN.store(0, Ordering::Relaxed);
}

/// Takes samples (`true`) or stops taking them, keeping those taken.
pub fn set(on: bool) {
    ON.store(on, Ordering::SeqCst);
}

/// Stops taking samples and prints `profile: <run> <percent> <samples> <function>`
/// for the `top` functions with most samples.
pub fn report(run: &str, top: usize) {
    ON.store(false, Ordering::SeqCst);
    let n = TAKEN.load(Ordering::Relaxed).min(MAX_SAMPLES);
    let mut by_fn: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut unknown = 0u32;
    for s in &SAMPLES[..n] {
        match crate::kern::ksyms::lookup(s.load(Ordering::Relaxed)) {
            Some((name, _)) => *by_fn.entry(name).or_default() += 1,
            None => unknown += 1,
        }
    }
    let mut rows: Vec<(u32, &str)> = by_fn.into_iter().map(|(name, c)| (c, name)).collect();
    if unknown > 0 {
        rows.push((unknown, "(no symbol)"));
    }
    rows.sort_by_key(|r| core::cmp::Reverse(r.0));
    kprintln!("profile: {run} {n} samples");
    for (c, name) in rows.into_iter().take(top) {
        kprintln!("profile: {run} {:5.1}% {c:5} {name}", c as f64 * 100.0 / n.max(1) as f64);
    }
    // The addresses most sampled: a section run with interrupts off shows
    // as the instruction that lets them in.
    let mut by_addr: BTreeMap<u64, u32> = BTreeMap::new();
    for s in &SAMPLES[..n] {
        *by_addr.entry(s.load(Ordering::Relaxed)).or_default() += 1;
    }
    let mut rows: Vec<(u32, u64)> = by_addr.into_iter().map(|(a, c)| (c, a)).collect();
    rows.sort_by_key(|r| core::cmp::Reverse(r.0));
    for (c, addr) in rows.into_iter().take(top / 3) {
        let mut line = alloc::string::String::new();
        crate::kern::ksyms::write_symbol(&mut line, addr);
        kprintln!("profile: {run} {:5.1}% {c:5} {addr:#x}{line}", c as f64 * 100.0 / n.max(1) as f64);
    }
}
