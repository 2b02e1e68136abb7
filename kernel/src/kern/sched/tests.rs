use alloc::sync::Arc;
use alloc::vec::Vec;

/// A kernel thread that recurses without end runs into the guard page
/// below its stack: the fault is reported as a kernel stack overflow,
/// on the page fault's own stack, before anything below the stack is
/// touched. (With stacks in the heap, it wrote over the heap block
/// below and was seen, if at all, by the canary at the next switch.)
#[ktest(should_panic = "kernel stack overflow")]
fn a_thread_that_overflows_its_stack_hits_the_guard_page() {
    #[inline(never)]
    fn recurse(n: u64) -> u64 {
        let frame = core::hint::black_box([n; 64]);
        if n == 0 { 0 } else { recurse(n - 1).wrapping_add(frame[n as usize % 64]) }
    }
    let t = spawn("overflow", || {
        core::hint::black_box(recurse(1 << 20));
    })
    .unwrap();
    join(t);
}

/// A thread whose entry never returns (as a process's) leaves nothing
/// of it on the heap once it has exited and been reaped.
#[ktest]
fn entries_that_never_return_are_freed() {
    let spawn_all = || {
        let ids: alloc::vec::Vec<ThreadId> = (0..32)
            .map(|i| {
                let big = [i as u8; 2048];
                spawn("no-return", move || {
                    core::hint::black_box(&big);
                    exit()
                })
                .unwrap()
            })
            .collect();
        for id in ids {
            join(id);
        }
        // The dead are reaped at the next switch.
        yield_now();
    };
    // Once first, so that the scheduler's own tables have grown.
    spawn_all();
    let (before, _) = crate::kern::heap::usage();
    spawn_all();
    let (after, _) = crate::kern::heap::usage();
    assert!(after < before + 4096, "heap grew by {} bytes over 32 threads whose entries never return", after - before);
}

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ktest::ktest;

use super::*;

#[ktest]
fn threads_run_and_are_joined() {
    let counter = Arc::new(AtomicU64::new(0));
    let ids: Vec<ThreadId> = (0..4)
        .map(|i| {
            let c = counter.clone();
            spawn("adder", move || {
                for _ in 0..100 {
                    c.fetch_add(i + 1, Ordering::SeqCst);
                    yield_now();
                }
            })
            .unwrap()
        })
        .collect();
    for id in ids {
        join(id);
    }
    assert_eq!(counter.load(Ordering::SeqCst), 100 * (1 + 2 + 3 + 4));
}

/// A thread that never yields is preempted by the timer, so another runs.
#[ktest]
fn the_timer_preempts() {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let spinner = spawn("spinner", move || {
        while !s.load(Ordering::SeqCst) {
            core::hint::spin_loop();
        }
    })
    .unwrap();
    // Let the spinner run; the main thread only gets the CPU back if the
    // timer takes it away from the spinner.
    yield_now();
    stop.store(true, Ordering::SeqCst);
    join(spinner);
}

/// The thread list names a sleeping thread, its state, and where it
/// sleeps.
#[ktest]
fn threads_are_listed_with_backtraces() {
    static GO: AtomicBool = AtomicBool::new(false);
    GO.store(false, Ordering::SeqCst);
    let chan = &GO as *const _ as usize;
    let sleeper = spawn("sleeper", move || {
        while !GO.load(Ordering::SeqCst) {
            sleep_if(chan, || !GO.load(Ordering::SeqCst));
        }
    })
    .unwrap();
    // With several CPUs the sleeper starts on another one and may not be
    // asleep yet: list until it is (a second at most).
    let line = alloc::format!("thread {sleeper} \"sleeper\": Sleeping({chan})");
    let until = crate::kern::time::ticks() + crate::kern::time::HZ;
    let mut out = String::new();
    loop {
        yield_now();
        out.clear();
        write_threads(&mut out);
        if out.contains(&line) || crate::kern::time::ticks() > until {
            break;
        }
    }
    GO.store(true, Ordering::SeqCst);
    wakeup(chan);
    join(sleeper);
    assert!(out.contains(&line), "no {line:?} in:\n{out}");
    assert!(out.contains("kernel::kern::sched::schedule"), "no backtrace from the switch in:\n{out}");
}

/// The scheduler never allocates under its lock; debug builds make the
/// heap refuse it.
#[ktest(should_panic = "heap used with the scheduler lock held (taken at kernel/src/kern/sched/")]
fn the_heap_refuses_the_scheduler() {
    interrupts::without_interrupts(|| {
        let g = SCHED.lock();
        let b = Box::new(5u32);
        core::hint::black_box((&g, &b));
    });
}

/// Dead threads are unlinked and freed outside the switch, by the
/// threads that go on: after a join none is left.
#[ktest]
fn dead_threads_are_reaped_after_the_switch() {
    let ids: Vec<ThreadId> = (0..8).map(|_| spawn("short", || ()).unwrap()).collect();
    for id in ids {
        join(id);
    }
    let (_, dead) = counts();
    assert_eq!(dead, 0, "{dead} dead threads left after their joins");
}

/// Sleep and wakeup: a ping-pong of 50 rounds on one channel.
#[ktest]
fn sleep_and_wakeup_ping_pong() {
    static TURN: AtomicU64 = AtomicU64::new(0);
    TURN.store(0, Ordering::SeqCst);
    let chan = &TURN as *const _ as usize;
    let wait_for = move |v: u64| {
        while TURN.load(Ordering::SeqCst) != v {
            sleep_if(chan, || TURN.load(Ordering::SeqCst) != v);
        }
    };
    let other = spawn("pong", move || {
        for i in 0..50u64 {
            wait_for(2 * i + 1);
            TURN.store(2 * i + 2, Ordering::SeqCst);
            wakeup(chan);
        }
    })
    .unwrap();
    let before = SWITCHES.load(Ordering::Relaxed);
    for i in 0..50u64 {
        TURN.store(2 * i + 1, Ordering::SeqCst);
        wakeup(chan);
        wait_for(2 * i + 2);
    }
    join(other);
    assert_eq!(TURN.load(Ordering::SeqCst), 100);
    // On one CPU each round is two switches. With several, the two
    // threads run on two CPUs at once, and one that finds its turn come
    // before it sleeps goes on without a switch.
    if crate::arch::percpu::online() == 1 {
        assert!(SWITCHES.load(Ordering::Relaxed) - before >= 100, "each round is two switches");
    }
}
