use ktest::ktest;

use super::*;

/// An IrqMutex turns interrupts off while held and restores them, and
/// restores "off" as off.
#[ktest]
fn irq_mutex_restores_the_interrupt_flag() {
    let m = IrqMutex::new(5u32);
    assert!(interrupts::are_enabled());
    {
        let mut g = m.lock();
        assert!(!interrupts::are_enabled(), "held with interrupts on");
        *g += 1;
        assert!(m.try_lock().is_none());
        assert!(m.holder().is_some_and(|l| l.file().ends_with("sync/tests.rs")));
    }
    assert!(interrupts::are_enabled(), "not restored");
    interrupts::without_interrupts(|| {
        drop(m.lock());
        assert!(!interrupts::are_enabled(), "turned on by an unlock inside a section with them off");
    });
    assert_eq!(*m.lock(), 6);
    assert!(m.holder().is_none());
}

/// Debug builds catch a lock taken against the lock order, naming both
/// locks and both sites (`vm::witness`).
#[ktest(should_panic = "lock order reversal: vm map (rank 100) taken at kernel/src/kern/sync/tests.rs")]
fn a_lock_order_reversal_is_caught() {
    static FREE: vm::sync::Mutex<()> = vm::sync::Mutex::ranked((), &vm::witness::order::FREE_LISTS);
    static MAP: vm::sync::Mutex<()> = vm::sync::Mutex::ranked((), &vm::witness::order::MAP);
    // The right way round passes.
    {
        let _m = MAP.lock();
        let _f = FREE.lock();
    }
    let _f = FREE.lock();
    let _m = MAP.lock();
}

/// The same, between the kernel's interrupt-safe kind and the VM's.
#[ktest(should_panic = "lock order reversal: page queues (rank 500) taken at kernel/src/kern/sync/tests.rs")]
fn a_reversal_across_lock_kinds_is_caught() {
    static DEV: IrqMutex<()> = IrqMutex::ranked((), &vm::witness::order::DEVICE);
    static QUEUES: vm::sync::Mutex<()> = vm::sync::Mutex::ranked((), &vm::witness::order::PAGE_QUEUES);
    let _q = QUEUES.lock();
    drop(DEV.lock());
    drop(_q);
    // An interrupt-safe lock held, then a plain one: the plain kind's
    // own rule would stop it with interrupts off; the order check
    // comes first here, so take it on the way in.
    let d = DEV.lock();
    vm::witness::will_take(Some(&vm::witness::order::PAGE_QUEUES), 1, core::panic::Location::caller());
    drop(d);
}

/// Debug builds catch a sleep with a spin lock held (its other takers
/// would spin until the sleeper wakes), naming the lock.
#[ktest(should_panic = "with vm object (a spin lock) held, taken at kernel/src/kern/sync/tests.rs")]
fn a_sleep_with_a_spin_lock_held_is_caught() {
    static OBJECT: vm::sync::Mutex<()> = vm::sync::Mutex::ranked((), &vm::witness::order::OBJECT);
    let chan = &OBJECT as *const _ as usize;
    // Without it, the sleep is fine.
    crate::kern::sched::sleep_until(chan, crate::kern::time::ticks() + 1, || true);
    let _g = OBJECT.lock();
    crate::kern::sched::sleep_until(chan, crate::kern::time::ticks() + 1, || true);
}

/// The scheduler's kind of lock refuses to be taken with interrupts on.
#[ktest(should_panic = "must be taken with them off")]
fn irq_off_mutex_taken_with_interrupts_on_panics() {
    let m = IrqOffMutex::new(());
    interrupts::without_interrupts(|| drop(m.lock()));
    drop(m.lock());
}

/// A plain lock taken with interrupts off is caught, with the place:
/// a holder preempted with it would hang this CPU.
#[ktest(should_panic = "taken with interrupts off at kernel/src/kern/sync/tests.rs")]
fn a_plain_lock_taken_with_interrupts_off_panics() {
    let m = vm::sync::Mutex::new(());
    drop(m.lock());
    interrupts::without_interrupts(|| drop(m.lock()));
}

/// A plain lock taken in an interrupt handler is caught, with the place.
#[ktest(should_panic = "taken with interrupts off at kernel/src/kern/sync/tests.rs")]
fn a_plain_lock_in_an_interrupt_handler_panics() {
    let m = vm::sync::Mutex::new(());
    drop(m.lock());
    interrupt_enter();
    drop(m.lock());
    interrupt_exit();
}

/// The count of handlers is read from the running CPU's block in one load
/// (`percpu::own_in_interrupt`), and it is that block's count.
#[ktest]
fn in_interrupt_reads_the_running_cpus_count() {
    interrupts::without_interrupts(|| {
        let cpu = crate::arch::percpu::this();
        assert!(!in_interrupt());
        interrupt_enter();
        assert!(in_interrupt());
        assert_eq!(crate::arch::percpu::own_in_interrupt(), cpu.in_interrupt.load(core::sync::atomic::Ordering::Relaxed));
        interrupt_enter();
        assert_eq!(crate::arch::percpu::own_in_interrupt(), 2);
        interrupt_exit();
        interrupt_exit();
        assert!(!in_interrupt());
    });
}

/// The VM's sleeping lock over the scheduler's sleep and wakeup: threads
/// that wait for it sleep, each gets it in turn, one at a time, and
/// `try_lock` fails while it is held. A holder may sleep (it yields here
/// with the lock held).
#[ktest]
fn sleeping_lock_waiters_take_turns() {
    use alloc::sync::Arc;
    use core::sync::atomic::{AtomicU64, Ordering};

    use vm::sync::SleepLock;

    let lock = Arc::new(SleepLock::ranked(0u64, &vm::witness::order::VNODE));
    let inside = Arc::new(AtomicU64::new(0));
    let g = lock.lock();
    assert!(lock.try_lock().is_none());
    let ids: alloc::vec::Vec<_> = (0..3)
        .map(|_| {
            let (l, inside) = (lock.clone(), inside.clone());
            crate::kern::sched::spawn("locker", move || {
                for _ in 0..20 {
                    let mut g = l.lock();
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders at once");
                    *g += 1;
                    crate::kern::sched::yield_now();
                    inside.fetch_sub(1, Ordering::SeqCst);
                }
            })
            .unwrap()
        })
        .collect();
    crate::kern::sched::yield_now();
    drop(g);
    for id in ids {
        crate::kern::sched::join(id);
    }
    assert_eq!(*lock.lock(), 60);
}

/// A lock knows which CPU holds it: the heap's refusal to run under the
/// scheduler lock asks whether this CPU holds it, not whether anyone does.
#[ktest]
fn a_lock_knows_its_holders_cpu() {
    let m = IrqOffMutex::new(());
    x86_64::instructions::interrupts::without_interrupts(|| {
        assert!(m.held_here().is_none());
        let g = m.lock();
        assert!(m.held_here().is_some());
        assert_eq!(m.raw.holder_cpu.load(Ordering::Relaxed), crate::arch::percpu::this().id);
        drop(g);
        assert!(m.held_here().is_none() && m.holder().is_none());
        assert_eq!(m.raw.holder_cpu.load(Ordering::Relaxed), NO_CPU);
    });
}

/// A CPU that spins over a second for one of the VM's locks (taken with
/// interrupts on, so the watchdog's timer check cannot see it) panics,
/// naming the lock and its holder's CPU. With one CPU no such spin can
/// happen (a holder has preemption off, so nobody else runs until it lets
/// go), and the test drives the hook the spin calls, as the spin would.
#[ktest(should_panic = "spin lock vm map at", timeout = 20)]
fn a_spin_for_a_vm_lock_over_a_second_panics_naming_the_holder() {
    use alloc::sync::Arc;
    use core::sync::atomic::{AtomicBool, Ordering};

    let lock = Arc::new(vm::sync::Mutex::ranked(0u32, &vm::witness::order::MAP));
    if crate::arch::smp::online() < 2 {
        let hooks = crate::vm_spin_hooks();
        let mut since = crate::kern::time::rdtsc() - 2 * crate::kern::time::tsc_hz();
        let addr = &*lock as *const _ as usize;
        (hooks.spinning)(addr, Some(&vm::witness::order::MAP), 0, &mut since);
        return;
    }
    let held = Arc::new(AtomicBool::new(false));
    let (l, h) = (lock.clone(), held.clone());
    let holder = crate::kern::sched::prepare_detached("holder", move || {
        let _g = l.lock();
        h.store(true, Ordering::SeqCst);
        // Held for longer than the limit, preemption off.
        let start = crate::kern::time::rdtsc();
        while crate::kern::time::rdtsc() - start < 5 * crate::kern::time::tsc_hz() {
            core::hint::spin_loop();
        }
    })
    .unwrap()
    .pinned(1);
    crate::kern::sched::pin_to(Some(0));
    holder.start().ok().unwrap();
    while !held.load(Ordering::SeqCst) {
        crate::kern::sched::yield_now();
    }
    let _g = lock.lock();
    unreachable!("the spin ended");
}
