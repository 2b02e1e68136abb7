//! Counters kept per CPU and summed when read (FreeBSD's `counter(9)`):
//! a statistic bumped on every fault or allocation would otherwise be one
//! cache line that every CPU writes, moving between them at each bump.
//!
//! Each CPU adds to its own slot, on a cache line of its own; a reader sums
//! the slots. The sum is a moment's approximation while others add: good
//! for statistics, not for decisions that must be exact.
//!
//! The CPU comes from the kernel's spin hooks ([`crate::sync::this_cpu`]);
//! on the host, and before the hooks are in, everything counts on slot 0.

use core::sync::atomic::{AtomicU64, Ordering};

/// The most CPUs the VM keeps per-CPU state for (the kernel's
/// `percpu::MAX_CPUS` is this constant). The models run on at most three
/// and build their allocators on a coroutine's small stack: four there.
#[cfg(not(loom))]
pub const MAX_CPUS: usize = 16;
#[cfg(loom)]
pub const MAX_CPUS: usize = 4;

/// One CPU's slot, alone on its cache line.
#[repr(align(64))]
struct Slot(AtomicU64);

/// A counter with a slot per CPU (see the module docs). (A)
pub struct PerCpuCounter {
    slots: [Slot; MAX_CPUS],
}

impl PerCpuCounter {
    pub const fn new() -> PerCpuCounter {
        PerCpuCounter { slots: [const { Slot(AtomicU64::new(0)) }; MAX_CPUS] }
    }

    /// Adds `n` on the running CPU's slot.
    #[inline(always)]
    pub fn add(&self, n: u64) {
        // Relaxed: a statistic; nothing is published with it. An atomic
        // add, not a load and a store, because the thread may move to
        // another CPU (or be preempted by one on this CPU) between the two.
        self.slots[crate::sync::this_cpu() as usize % MAX_CPUS].0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    #[inline(always)]
    pub fn inc(&self) {
        self.add(1)
    }

    /// The sum over all CPUs.
    pub fn get(&self) -> u64 {
        // Relaxed: see `add`; no ordering is promised between slots.
        self.slots.iter().fold(0u64, |s, c| s.wrapping_add(c.0.load(Ordering::Relaxed)))
    }
}

impl Default for PerCpuCounter {
    fn default() -> Self {
        PerCpuCounter::new()
    }
}

impl core::fmt::Debug for PerCpuCounter {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.get())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn adds_from_every_slot_are_summed() {
        let c = PerCpuCounter::new();
        c.inc();
        c.add(41);
        // Another CPU's slot, as if it had counted there.
        c.slots[3].0.fetch_add(8, Ordering::Relaxed);
        assert_eq!(c.get(), 50);
    }

    #[test]
    fn each_slot_has_its_own_cache_line() {
        let c = PerCpuCounter::new();
        let a = &c.slots[0] as *const Slot as usize;
        let b = &c.slots[1] as *const Slot as usize;
        assert_eq!(b - a, 64);
        assert_eq!(core::mem::align_of::<Slot>(), 64);
    }
}
