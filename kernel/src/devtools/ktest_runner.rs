//! The in-kernel test runner.
//!
//! Booted with `mode=test`, the kernel runs the `#[ktest]` functions of every
//! crate linked into it (see the `ktest` crate), one after another, sorted by
//! name so that an index names the same test on every boot. Each test reports
//! on the serial console in lines the host runner (`tests/`) reads:
//!
//! ```text
//! ktest: start <index> <name> timeout=<seconds>
//! ktest: ok <index> <name> <microseconds>us
//! ktest: FAILED <index> <name> <microseconds>us <reason>
//! ktest: done
//! ```
//!
//! A test that panics or takes an exception cannot be resumed: the report is
//! printed, the result line is written, and QEMU is ended. The host then boots
//! the kernel again with `run=` listing the tests not yet reported, so one
//! broken test never hides the others. A test that hangs prints nothing more;
//! the host ends QEMU after the test's timeout and does the same. Tests that
//! *expect* a panic or an exception (`should_panic`, `expect_fault`) pass when
//! it happens, which ends that boot the same way.
//!
//! `mode=list` prints the tests as `ktest: test <index> <name> timeout=<s>`
//! lines after a `ktest: list <count>` line.

use alloc::vec::Vec;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use ktest::{Expect, Test};

use crate::dev::qemu::{self, ExitCode};
use crate::kern::{serial, time};
use crate::kprintln;

const NONE: usize = usize::MAX;

/// Index of the running test (NONE between tests). (A)
static CURRENT: AtomicUsize = AtomicUsize::new(NONE);
/// The running test's record, so the panic and fault paths need no heap. (A)
static CURRENT_TEST: AtomicPtr<Test> = AtomicPtr::new(core::ptr::null_mut());
/// TSC at the start of the running test. (A)
static STARTED_TSC: AtomicU64 = AtomicU64::new(0);
/// Fault address the running test expects in CR2 (u64::MAX: any). (A)
static EXPECTED_CR2: AtomicU64 = AtomicU64::new(u64::MAX);

/// The sorted test table.
fn tests() -> Vec<&'static Test> {
    let mut v: Vec<&'static Test> = ktest::TESTS.iter().collect();
    ktest::sorted(&mut v);
    v
}

struct Name<'a>(&'a Test);

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.write_full_name(f)
    }
}

/// Prints the test list (`mode=list`).
pub fn list() {
    let tests = tests();
    kprintln!("ktest: list {}", tests.len());
    for (i, t) in tests.iter().enumerate() {
        kprintln!("ktest: test {i} {} timeout={}", Name(t), t.timeout_secs);
    }
}

/// Runs the tests named by `selection` (all if `None`) and ends QEMU.
pub fn run(selection: Option<&[usize]>) -> ! {
    let tests = tests();
    let all: Vec<usize> = (0..tests.len()).collect();
    let selection = selection.unwrap_or(&all);
    log::info!("ktest: running {} of {} tests", selection.len(), tests.len());
    free_pages();
    let heap_before = crate::kern::heap::usage().0;
    let mut failed = 0;
    for &i in selection {
        let Some(&t) = tests.get(i) else {
            kprintln!("ktest: FAILED {i} ? 0us no test has this index");
            failed += 1;
            continue;
        };
        kprintln!("ktest: start {i} {} timeout={}", Name(t), t.timeout_secs);
        let threads_before = settled_threads(usize::MAX);
        let free_before = free_pages();
        EXPECTED_CR2.store(u64::MAX, Ordering::Relaxed);
        STARTED_TSC.store(time::rdtsc(), Ordering::Relaxed);
        CURRENT_TEST.store(t as *const Test as *mut Test, Ordering::SeqCst);
        CURRENT.store(i, Ordering::SeqCst);
        (t.func)();
        CURRENT.store(NONE, Ordering::SeqCst);
        let us = elapsed_us();
        match t.expect {
            Expect::Return => match after_test_check(free_before, threads_before) {
                Ok(()) => kprintln!("ktest: ok {i} {} {us}us", Name(t)),
                Err(why) => {
                    failed += 1;
                    kprintln!("ktest: FAILED {i} {} {us}us {why}", Name(t));
                }
            },
            Expect::Panic(msg) => {
                failed += 1;
                kprintln!("ktest: FAILED {i} {} {us}us returned, expected a panic with {msg:?}", Name(t));
            }
            Expect::Fault(v) => {
                failed += 1;
                kprintln!("ktest: FAILED {i} {} {us}us returned, expected exception {v}", Name(t));
            }
        }
    }
    free_pages();
    // Caches (the filesystem's blocks, the log's once-only table) make the
    // two differ; a test for leaks compares a second round with a first.
    kprintln!("ktest: heap {heap_before} bytes in use before the tests, {} after", crate::kern::heap::usage().0);
    kprintln!("ktest: done {} run, {failed} failed", selection.len());
    crate::fs::sync_all();
    qemu::exit(if failed == 0 { ExitCode::Success } else { ExitCode::Failure })
}

fn elapsed_us() -> u64 {
    time::tsc_to_us(time::rdtsc().wrapping_sub(STARTED_TSC.load(Ordering::Relaxed)))
}

/// Free pages with the allocator's cache drained (and files nobody uses
/// dropped from memory), so counts compare exactly. The pages the kernel
/// heap holds count as free: a test may leave an object in the heap that
/// keeps a slab (a cached file, a table that grew), which is the heap's
/// business, not a page leak; its empty slabs are given back first.
pub fn free_pages() -> u64 {
    crate::fs::drop_unused();
    vm::drain_caches();
    crate::kern::heap::reclaim();
    // Counted with the other CPUs parked: no page is halfway anywhere.
    crate::kern::sched::with_other_cpus_parked(|| {
        vm::try_global().map_or(0, |pm| pm.free_count() + crate::kern::heap::stats().pages() as u64)
    })
}

/// Waits for what ends after a test's last step (threads on their way
/// out on other CPUs, address spaces being torn down): calls `look` until
/// it says the state has settled, and returns the count it gives then.
/// `look` returns that count, a number that goes down as the teardown
/// makes progress, and whether it is done. The wait gives up after a
/// second without progress, or after [`SETTLE_MAX_SECS`] in all: ending
/// 250 processes at once on four virtual CPUs under `-cpu max` has taken
/// longer than a second while it was still going.
pub fn settle(mut look: impl FnMut() -> (usize, usize, bool)) -> usize {
    let start = time::ticks();
    let mut until = start + time::HZ;
    let mut least = usize::MAX;
    loop {
        let (count, left, done) = look();
        let now = time::ticks();
        if done || now > until || now > start + SETTLE_MAX_SECS * time::HZ {
            return count;
        }
        if left < least {
            least = left;
            until = now + time::HZ;
        }
        crate::kern::sched::yield_now();
    }
}

/// The longest [`settle`] waits while the teardown still makes progress.
pub const SETTLE_MAX_SECS: u64 = 30;

/// Lets the threads that have ended be reaped (their stacks are pages of
/// their own) until at most `target` exist ([`settle`]); returns how many
/// exist then. A process's thread ends and is reaped a little after
/// `wait` has returned its status: counting free pages before that would
/// count its stack as leaked.
pub fn settled_threads(target: usize) -> usize {
    settle(|| {
        crate::kern::sched::reap();
        let (count, dead) = crate::kern::sched::counts();
        (count, count + dead, count <= target && dead == 0)
    })
}

/// Checks the kernel is still in a state the next test can run in: interrupts
/// on, no ranked lock still held (debug builds), every page the test
/// allocated given back, and the page invariants (`vm::invariants`) intact.
fn after_test_check(free_before: u64, threads_before: usize) -> Result<(), alloc::string::String> {
    use alloc::format;
    if !x86_64::instructions::interrupts::are_enabled() {
        return Err("left interrupts disabled".into());
    }
    if let Some(n) = vm::witness::held_count()
        && n != 0
    {
        return Err(format!("{n} ranked lock(s) still held after the test (or their release not seen)"));
    }
    settled_threads(threads_before);
    let mut free_after = free_pages();
    if free_after != free_before {
        // The last threads are reaped, but what they held may still be on
        // its way back (a bomb's hundreds of address spaces under `-cpu
        // max`): wait while the count moves towards where it was. A leak
        // stops moving, and fails after a second of that.
        free_after = settle(|| {
            let free = free_pages();
            (free as usize, free.abs_diff(free_before) as usize, free == free_before)
        }) as u64;
    }
    if free_after != free_before {
        return Err(format!("free pages {free_before} before the test, {free_after} after: pages leaked or freed twice"));
    }
    if let Some(pm) = vm::try_global() {
        let v = crate::kern::sched::with_other_cpus_parked(|| vm::invariants::check(pm));
        if !v.is_empty() {
            return Err(format!("page invariants broken after the test: {v:?}"));
        }
    }
    Ok(())
}

fn current() -> Option<(usize, &'static Test)> {
    let i = CURRENT.load(Ordering::SeqCst);
    if i == NONE {
        return None;
    }
    // SAFETY: CURRENT_TEST is set from a `&'static Test` before CURRENT.
    unsafe { CURRENT_TEST.load(Ordering::SeqCst).as_ref() }.map(|t| (i, t))
}

/// For an `expect_fault` test: the exception passes only if CR2 holds `addr`.
pub fn expect_fault_address(addr: u64) {
    EXPECTED_CR2.store(addr, Ordering::SeqCst);
}

/// Called by the trap code after reporting an unhandled exception. Never returns.
pub fn exception_taken(vector: u8, cr2: u64) -> ! {
    let Some((i, t)) = current() else { qemu::exit(ExitCode::Failure) };
    let us = elapsed_us();
    let mut w = serial::panic_writer();
    let want_cr2 = EXPECTED_CR2.load(Ordering::SeqCst);
    match t.expect {
        Expect::Fault(v) if v == vector && (want_cr2 == u64::MAX || want_cr2 == cr2) => {
            let _ = writeln!(w, "ktest: ok {i} {} {us}us", Name(t));
            drop(w);
            qemu::exit(ExitCode::Success)
        }
        Expect::Fault(v) if v == vector => {
            let _ = writeln!(w, "ktest: FAILED {i} {} {us}us exception {vector} at {cr2:#x}, expected at {want_cr2:#x}", Name(t));
        }
        _ => {
            let (mnemonic, name) = crate::arch::trapframe::exception_name(vector);
            let _ = writeln!(w, "ktest: FAILED {i} {} {us}us exception {vector} {mnemonic} {name}", Name(t));
        }
    }
    drop(w);
    qemu::exit(ExitCode::Failure)
}

/// Called by the panic handler after the panic report. Never returns.
pub fn panicked(message: &str) -> ! {
    let Some((i, t)) = current() else { qemu::exit(ExitCode::Failure) };
    let us = elapsed_us();
    let mut w = serial::panic_writer();
    match t.expect {
        Expect::Panic(want) if message.contains(want) => {
            let _ = writeln!(w, "ktest: ok {i} {} {us}us", Name(t));
            drop(w);
            qemu::exit(ExitCode::Success)
        }
        Expect::Panic(want) => {
            let _ = writeln!(w, "ktest: FAILED {i} {} {us}us panic message does not contain {want:?}", Name(t));
        }
        _ => {
            let _ = writeln!(w, "ktest: FAILED {i} {} {us}us panicked", Name(t));
        }
    }
    drop(w);
    qemu::exit(ExitCode::Failure)
}

/// The runner's own tests: a failure must be caught, by name.
mod tests {
    use ktest::ktest;

    #[ktest(should_panic = "deliberate panic")]
    fn panic_is_reported() {
        let n = core::hint::black_box(7);
        panic!("deliberate panic number {n}");
    }
}
