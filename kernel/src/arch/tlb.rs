//! TLB shootdown: invalidating translations on every CPU that may cache
//! them.
//!
//! A CPU caches a translation of an address space only while the space is
//! loaded in its CR3: loading another CR3 drops every non-global entry (the
//! kernel uses no PCIDs and no global pages), so a CPU that has switched
//! away needs no interrupt. Each pmap therefore keeps the set of CPUs that
//! have it loaded (`X86Pmap::cpus`, kept by [`switch_space`]); the kernel's
//! own upper half is loaded everywhere, so its changes go to every CPU.
//!
//! **The protocol** (after FreeBSD's `smp_targeted_tlb_shootdown`). Each CPU
//! has one request slot in its block (`PerCpu::tlb_start`, `tlb_end`,
//! `tlb_gen`), used only by itself, one request at a time. To invalidate
//! `[start, end)` on a set of CPUs, the initiator, with preemption off (so
//! the slot stays its own) and interrupts on:
//!
//! 1. writes the range and a new generation into its slot;
//! 2. sets its bit in each target's `tlb_pending` and sends each one IPI
//!    ([`VEC_SHOOTDOWN`](super::trapframe::VEC_SHOOTDOWN));
//! 3. invalidates its own TLB meanwhile, if it is a target;
//! 4. waits until every target's `tlb_done[initiator]` has reached the
//!    generation.
//!
//! A target's handler takes its pending bits, and for each initiator reads
//! the slot, invalidates, and stores the generation it handled. One
//! handler serves every initiator whose bit it finds, so IPIs that pile up
//! cost nothing extra.
//!
//! **Why the wait cannot deadlock.** The initiator waits with interrupts on,
//! so it serves the requests of other initiators while it waits. A target
//! with interrupts off is either in an interrupt handler or holds an
//! interrupt-safe lock, and no such code starts a shootdown or waits for
//! anything that does ([`shootdown`] checks that interrupts are on); it
//! turns them back on in bounded time, and takes the IPI then.
//!
//! **The ordering against a CPU loading the space.** The initiator changes
//! the page-table entries, then reads the pmap's CPU set; a CPU that loads
//! the space sets its bit, then writes CR3 (serializing), and only then can
//! walk the tables. With a full fence between the initiator's stores and
//! its read (and the locked `fetch_or` on the other side), either the
//! initiator sees the bit, or the loading CPU's walks see the new entries.

use core::sync::atomic::{AtomicU64, Ordering, fence};

use super::percpu::{self, PerCpu};

/// How long a target may take to acknowledge before it is a bug: half
/// the VM locks' limit (`crate::SPIN_LIMIT_US`), so that when an initiator
/// holding a lock waits for a silent CPU, the report names that CPU (with
/// its backtrace) before another CPU's spin on the lock ends in a report
/// that names only the initiator.
pub const SPIN_LIMIT_US: u64 = crate::SPIN_LIMIT_US / 2;

/// Pages invalidated one by one; beyond this the whole TLB is flushed.
pub const INVLPG_MAX: u64 = 32;

/// The whole address range: `[0, ALL)` asks for a full flush.
pub const ALL: u64 = u64::MAX;

/// Shootdowns started, IPIs sent, and requests handled by targets, for
/// the benchmarks and tests. (A; counters.)
pub static SHOOTDOWNS: AtomicU64 = AtomicU64::new(0);
pub static IPIS: AtomicU64 = AtomicU64::new(0);
pub static HANDLED: AtomicU64 = AtomicU64::new(0);

/// Invalidates `[start, end)` in this CPU's TLB: `invlpg` for up to
/// [`INVLPG_MAX`] pages, else a reload of CR3.
pub fn flush_local(start: u64, end: u64) {
    if end.saturating_sub(start) / 4096 > INVLPG_MAX {
        use x86_64::registers::control::Cr3;
        let (frame, flags) = Cr3::read();
        // SAFETY: reloading the current CR3 only drops (non-global) TLB
        // entries; the kernel has no global pages.
        unsafe { Cr3::write(frame, flags) };
    } else {
        let mut va = start;
        while va < end {
            x86_64::instructions::tlb::flush(x86_64::VirtAddr::new(va));
            va += 4096;
        }
    }
}

/// The bit of CPU `n` in a CPU set.
pub fn bit(n: u32) -> u64 {
    1 << n
}

/// Every CPU running.
pub fn all_cpus() -> u64 {
    let n = percpu::online();
    if n >= 64 { u64::MAX } else { (1 << n) - 1 }
}

/// Invalidates `[start, end)` on every CPU in `cpus` (this one included if
/// it is in the set), and returns once every one has. The caller has
/// changed the translations already; a full fence orders those stores
/// before the caller's read of `cpus` (see the module docs), so callers
/// pass a set read after [`fence_before_read`].
pub fn shootdown(cpus: u64, start: u64, end: u64) {
    // Preemption off: the request slot is this CPU's. (Turned back on
    // without a switch: a pending one waits for the next tick, or for the
    // caller's own unlock.)
    percpu::preempt_off();
    let me = percpu::this();
    let mine = bit(me.id);
    let others = cpus & !mine & all_cpus();
    if others != 0 {
        assert!(
            x86_64::instructions::interrupts::are_enabled(),
            "TLB shootdown with interrupts off: the targets' acknowledgements could never come"
        );
        SHOOTDOWNS.fetch_add(1, Ordering::Relaxed);
        let generation = me.tlb_gen.load(Ordering::Relaxed) + 1;
        me.tlb_start.store(start, Ordering::Relaxed);
        me.tlb_end.store(end, Ordering::Relaxed);
        // Release pairs with the Acquire in `handle_ipi`: a target that
        // sees the pending bit (set after this) sees the range.
        me.tlb_gen.store(generation, Ordering::Release);
        let mut set = others;
        while set != 0 {
            let n = set.trailing_zeros() as usize;
            set &= set - 1;
            if let Some(cpu) = percpu::cpu(n) {
                // AcqRel: the Release half publishes the slot to the
                // target's swap in `handle_ipi`.
                cpu.tlb_pending.fetch_or(mine, Ordering::AcqRel);
                super::apic::send_ipi(
                    cpu.apic_id.load(Ordering::Relaxed),
                    super::apic::Ipi::Fixed(super::trapframe::VEC_SHOOTDOWN),
                );
                IPIS.fetch_add(1, Ordering::Relaxed);
            }
        }
        if cpus & mine != 0 {
            flush_local(start, end);
        }
        // One clock for the whole wait, not one per target: the limit
        // bounds how long the caller (and whoever spins on its locks) waits.
        let mut since = 0;
        let mut set = others;
        while set != 0 {
            let n = set.trailing_zeros() as usize;
            set &= set - 1;
            if let Some(cpu) = percpu::cpu(n) {
                // Acquire pairs with the target's Release store of the
                // generation it handled: its invalidation is done.
                let mut turns = 0u32;
                while cpu.tlb_done[me.id as usize].load(Ordering::Acquire) < generation {
                    core::hint::spin_loop();
                    turns = turns.wrapping_add(1);
                    if turns.is_multiple_of(1 << 14) {
                        waited_too_long(n, generation, &mut since);
                    }
                }
            }
        }
    } else if cpus & mine != 0 {
        flush_local(start, end);
    }
    percpu::preempt_on();
}

/// A target that has not acknowledged for [`SPIN_LIMIT_US`] is a bug: says which,
/// with its backtrace, and panics.
#[cold]
fn waited_too_long(n: usize, generation: u64, since: &mut u64) {
    let now = crate::kern::time::rdtsc();
    if *since == 0 {
        *since = now;
        return;
    }
    if crate::kern::time::tsc_to_us(now - *since) < SPIN_LIMIT_US {
        return;
    }
    let me = percpu::this();
    let target = percpu::cpu(n).expect("a target CPU runs");
    let done = target.tlb_done[me.id as usize].load(Ordering::Relaxed);
    let pending = target.tlb_pending.load(Ordering::Relaxed);
    super::nmi::ask_for_dump(n as u32);
    panic!(
        "TLB shootdown: CPU {n} has not acknowledged request {generation} of CPU {} for {} ms \
         (it handled {done}; its pending initiators {pending:#x})",
        me.id,
        SPIN_LIMIT_US / 1000
    );
}

/// The fence between changing page-table entries and reading the CPU set
/// of the space they belong to (see the module docs).
#[inline(always)]
pub fn fence_before_read() {
    fence(Ordering::SeqCst);
}

/// Invalidates `[start, end)` of the kernel's upper half on every CPU.
pub fn shootdown_kernel(start: u64, end: u64) {
    fence_before_read();
    shootdown(all_cpus(), start, end);
}

/// The shootdown IPI's handler: every pending request, each initiator's
/// in turn.
pub fn handle_ipi() {
    let me = percpu::this();
    // Acquire pairs with the initiators' AcqRel `fetch_or`.
    let mut pending = me.tlb_pending.swap(0, Ordering::AcqRel);
    while pending != 0 {
        let n = pending.trailing_zeros() as usize;
        pending &= pending - 1;
        let Some(from) = percpu::cpu(n) else { continue };
        // Acquire pairs with the initiator's Release store of the
        // generation: the range read below is that request's.
        let generation = from.tlb_gen.load(Ordering::Acquire);
        flush_local(from.tlb_start.load(Ordering::Relaxed), from.tlb_end.load(Ordering::Relaxed));
        HANDLED.fetch_add(1, Ordering::Relaxed);
        // Release pairs with the initiator's Acquire wait.
        me.tlb_done[n].store(generation, Ordering::Release);
    }
}

/// Loads the address space whose PML4 is `cr3` and whose CPU set is
/// `cpus_new` (None: the kernel's, which is loaded everywhere), having left
/// `cpus_old`'s. Called at each switch with interrupts off.
pub fn switch_space(cpu: &PerCpu, cr3: u64, cpus_old: Option<&AtomicU64>, cpus_new: Option<&AtomicU64>) {
    use x86_64::registers::control::{Cr3, Cr3Flags};
    use x86_64::structures::paging::PhysFrame;
    let mine = bit(cpu.id);
    if let Some(set) = cpus_new {
        // The locked RMW orders the bit before the CR3 write below and so
        // before any walk of the new tables (pairs with the initiator's
        // `fence_before_read`).
        set.fetch_or(mine, Ordering::SeqCst);
    }
    if Cr3::read_raw().0.start_address().as_u64() != cr3 {
        // SAFETY: every address space maps the kernel half as the kernel's
        // own tables do, so the kernel keeps running across the switch.
        unsafe { Cr3::write(PhysFrame::containing_address(x86_64::PhysAddr::new(cr3)), Cr3Flags::empty()) };
    }
    if let Some(set) = cpus_old
        && !cpus_new.is_some_and(|n| core::ptr::eq(n, set))
    {
        // After the CR3 write: this CPU holds none of the old space's
        // translations from here on. Relaxed: a late clear only costs an
        // initiator an IPI it did not need.
        set.fetch_and(!mine, Ordering::Relaxed);
    }
}

mod tests;
