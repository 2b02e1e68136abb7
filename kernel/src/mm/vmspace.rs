//! Address spaces (a `vm::map::VmMap` over an `X86Pmap`) and the way from the
//! page-fault exception to `vm::fault`.
//!
//! The lower half of the address space belongs to the current address space
//! (none until one is activated); a page fault there is handed to the fault
//! state machine. Anything else, or a fault the VM cannot resolve, is a fatal
//! kernel fault with a full report (user processes, later, get a signal).

use alloc::sync::Arc;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use vm::counter::PerCpuCounter;
use vm::fault::{FaultError, fault};
use vm::map::{MapLock, VmMap};
use vm::pmap::{PmapError, Prot};

use crate::arch::pmap::{USER_END, X86Pmap};
use crate::arch::trapframe::TrapFrame;

/// An address space.
pub struct AddressSpace {
    pub map: MapLock,
    pub pmap: Arc<X86Pmap>,
}

/// Page faults resolved by the VM, counted per CPU. (A)
pub static FAULTS: PerCpuCounter = PerCpuCounter::new();
/// The faults resolved, by what they took, counted per CPU. (A)
pub struct FaultKinds {
    /// A new page of zeros.
    pub zero_fill: PerCpuCounter,
    /// A private copy of a page (or the page moved up the chain).
    pub copy_on_write: PerCpuCounter,
    /// The page read in by a pager.
    pub paged_in: PerCpuCounter,
    /// The page was resident: only the mapping was missing.
    pub soft: PerCpuCounter,
}

pub static FAULT_KINDS: FaultKinds = FaultKinds {
    zero_fill: PerCpuCounter::new(),
    copy_on_write: PerCpuCounter::new(),
    paged_in: PerCpuCounter::new(),
    soft: PerCpuCounter::new(),
};
/// The null-fault benchmark's pmap (null: none): a fault on one of its
/// hidden pages is resolved by setting the present bit again
/// ([`X86Pmap::unhide`]) and nothing else, for the floor under which no
/// page fault can go (`bench::faults`). (A)
pub static NULL_FAULT_PMAP: AtomicPtr<X86Pmap> = AtomicPtr::new(core::ptr::null_mut());
/// TSC cycles spent inside `vm::fault` for them, counted only while the
/// fault steps are timed (`vm::fault::set_step_clock`). (A)
pub static FAULT_TSC: AtomicU64 = AtomicU64::new(0);

/// The end of what a program may map (Linux's `TASK_SIZE` on x86_64): the
/// user half less its last page, so that no instruction can end at the
/// first non-canonical address (a `sysret` to it would fault in the kernel).
pub const TASK_SIZE: u64 = USER_END - vm::PAGE_SIZE as u64;
/// The lowest address a program may map: page 0 stays unmapped, so that a
/// null pointer faults (`/proc/sys/vm/mmap_min_addr`).
pub const USER_START: u64 = vm::PAGE_SIZE as u64;

impl AddressSpace {
    /// A new, empty address space.
    ///
    /// Like every address-space creation (spawn, exec, fork), it waits for
    /// the pageout daemon while memory is short; see [`new_pmap`].
    pub fn new() -> Result<Arc<AddressSpace>, PmapError> {
        let pmap = new_pmap()?;
        let map = VmMap::new(USER_START, TASK_SIZE, pmap.clone(), vm::kernel_env());
        Arc::try_new(AddressSpace { map: MapLock::new(map), pmap }).map_err(|_| PmapError::NoMemory)
    }

    /// Makes this the current thread's address space until the guard is
    /// dropped (threads the current one starts inherit it).
    ///
    /// The kernel may then touch the space's user pages directly (the tests
    /// and benchmarks do): with SMAP, RFLAGS.AC is set until the guard goes.
    pub fn activate(self: &Arc<Self>) -> Active {
        crate::kern::sched::set_address_space(Some(&self.pmap), Arc::as_ptr(self) as usize);
        crate::arch::cpu::stac();
        Active { space: self.clone() }
    }
}

/// How long creating an address space waits for memory before it gives up
/// (fork then fails with EAGAIN). The OOM killer acts well within it.
pub const CREATE_WAIT_SECS: u64 = 30;

/// A new pmap, waiting for the pageout daemon while memory is short, as
/// FreeBSD's `pmap_pinit` allocates its top table with `VM_ALLOC_WAITOK`.
/// Nothing is held across the wait. Fails if the thread's process is being
/// killed, or after [`CREATE_WAIT_SECS`] without memory. (`X86Pmap::new`
/// alone is the caller that asked not to wait.)
fn new_pmap() -> Result<Arc<X86Pmap>, PmapError> {
    let deadline = crate::kern::time::ticks() + CREATE_WAIT_SECS * crate::kern::time::HZ;
    loop {
        match X86Pmap::new() {
            Err(PmapError::NoMemory) if crate::kern::time::ticks() < deadline && vm::vm_wait() => {}
            r => return r,
        }
    }
}

impl AddressSpace {
    /// The child's address space for a fork: shared entries shared, copied
    /// entries copy-on-write in both.
    pub fn fork(&self) -> Result<Arc<AddressSpace>, PmapError> {
        let pmap = new_pmap()?;
        let map = self.map.lock().fork(pmap.clone()).map_err(|_| PmapError::NoMemory)?;
        Arc::try_new(AddressSpace { map: MapLock::new(map), pmap }).map_err(|_| PmapError::NoMemory)
    }
}

/// An address space loaded on the CPU for the current thread.
#[must_use = "the address space is unloaded when this is dropped"]
pub struct Active {
    space: Arc<AddressSpace>,
}

impl Drop for Active {
    fn drop(&mut self) {
        crate::arch::cpu::clac();
        crate::kern::sched::set_address_space(None, 0);
        let _ = &self.space;
    }
}

/// Handles a page fault if it is the VM's to handle. Returns `Err` with the
/// VM's verdict when it cannot be resolved (the caller reports it).
///
/// Never inlined: this is where a debugger stops a user fault (the README's
/// walk-through, `vm steps`), and a frame of its own gives `finish` and
/// `vm steps` a return to stop at. Whether the compiler would inline it
/// changes from build to build; the call costs about 15 ns of a fault's
/// 1.5 us.
#[inline(never)]
pub fn page_fault(tf: &TrapFrame, cr2: u64) -> Result<(), Option<FaultError>> {
    if cr2 >= USER_END {
        return Err(None);
    }
    let null = NULL_FAULT_PMAP.load(Ordering::Relaxed);
    // SAFETY: set only while the benchmark holds the pmap.
    if !null.is_null() && unsafe { &*null }.unhide(cr2) {
        return Ok(());
    }
    let space = crate::kern::sched::current_space() as *const AddressSpace;
    if space.is_null() {
        return Err(None);
    }
    // SAFETY: the thread's space is set only while an `Active` guard holds a reference
    // to the address space.
    let space = unsafe { &*space };
    let access = if tf.error & 2 != 0 {
        Prot::WRITE
    } else if tf.error & 16 != 0 {
        Prot::EXEC
    } else {
        Prot::READ
    };
    // The fault may take long (I/O, waits): let interrupts in if the faulting
    // context had them, as the handler runs on that context's own stack.
    let reenable = tf.rflags & 0x200 != 0;
    if reenable {
        x86_64::instructions::interrupts::enable();
    }
    // The time inside the VM is counted only while a benchmark times the
    // fault steps: reading the clock is not free under emulation.
    let clock = vm::fault::step_clock();
    let t0 = clock.map_or(0, |c| c());
    // (A fault below the stack grows it: `vm::map`'s stack growth.)
    let r = fault(&space.map, cr2, access, false);
    if let Some(c) = clock {
        FAULT_TSC.fetch_add(c() - t0, Ordering::Relaxed);
    }
    if reenable {
        x86_64::instructions::interrupts::disable();
    }
    match r {
        Ok(stats) => {
            FAULTS.inc();
            let kind = if stats.paged_in {
                &FAULT_KINDS.paged_in
            } else if stats.copied || stats.moved {
                &FAULT_KINDS.copy_on_write
            } else if stats.zero_filled {
                &FAULT_KINDS.zero_fill
            } else {
                &FAULT_KINDS.soft
            };
            kind.inc();
            Ok(())
        }
        Err(e) => Err(Some(e)),
    }
}

mod tests {
    use alloc::vec::Vec;

    use ktest::ktest;
    use vm::map::Inherit;
    use vm::object::{ObjectKind, VmObject};
    use vm::pmap::Pmap;

    use super::*;

    const BASE: u64 = 0x1000_0000;
    const PAGE: u64 = vm::PAGE_SIZE as u64;

    fn anon(space: &AddressSpace, pages: u64, prot: Prot) -> u64 {
        space.map.lock().map(Some(BASE), pages * PAGE, prot, Prot::ALL, Inherit::Copy, None, false).unwrap()
    }

    /// Real page faults on a fresh anonymous mapping: zero-filled, and the
    /// data written is read back; unmapping frees every page and page table
    /// (the runner checks the free count afterwards).
    #[ktest]
    fn zero_fill_faults() {
        let space = AddressSpace::new().unwrap();
        let a = anon(&space, 64, Prot::RW);
        let faults = FAULTS.get();
        {
            let _on = space.activate();
            for i in 0..64 {
                let p = (a + i * PAGE) as *mut u64;
                // SAFETY: the range is mapped read-write in the active space;
                // the accesses fault the pages in.
                unsafe {
                    assert_eq!(p.read_volatile(), 0, "fresh memory reads zero");
                    p.write_volatile(i * 3 + 1);
                }
            }
            for i in 0..64 {
                // SAFETY: as above.
                assert_eq!(unsafe { ((a + i * PAGE) as *const u64).read_volatile() }, i * 3 + 1);
            }
        }
        assert!(FAULTS.get() >= faults + 64, "the hardware faulted each page in");
        space.map.lock().unmap(a, a + 64 * PAGE).unwrap();
        assert!(space.pmap.extract(a).is_none());
    }

    /// Zero-fill faults take pages zeroed at idle time from the zero pool
    /// and do not zero them again; the memory still reads zero.
    #[ktest]
    fn zero_fill_from_the_zero_pool() {
        let pm = vm::global();
        // Free pages with junk in them, for the pool to zero.
        let junk: Vec<_> = (0..64).filter_map(|_| pm.alloc(vm::phys::AllocFlags::NOBUSY)).collect();
        for &p in &junk {
            // SAFETY: our page, through the direct map.
            unsafe { core::ptr::write_bytes(pm.page_addr(p).unwrap(), 0xA5, PAGE as usize) };
        }
        for p in junk {
            pm.free(p);
        }
        pm.drain_cache();
        let space = AddressSpace::new().unwrap();
        let a = anon(&space, 64, Prot::RW);
        // The other CPUs' idle threads would refill the pool meanwhile.
        crate::kern::sched::with_other_cpus_parked(|| {
            while pm.zero_idle() && pm.zeroed_count() < 4096 {}
            let pooled = pm.zeroed_count();
            assert!(pooled >= 64, "idle zeroing filled the pool ({pooled} pages)");
            {
                let _on = space.activate();
                for i in 0..64 {
                    let p = (a + i * PAGE) as *const u64;
                    // SAFETY: mapped read-write in the active space.
                    let words = unsafe { core::slice::from_raw_parts(p, PAGE as usize / 8) };
                    assert!(words.iter().all(|&w| w == 0), "page {i} of a zero fill reads zero");
                }
            }
            assert!(pm.zeroed_count() <= pooled - 64, "the faults took their pages from the pool");
        });
        let v = crate::kern::sched::with_other_cpus_parked(|| vm::invariants::check(pm));
        assert!(v.is_empty(), "invariants broken: {v:?}");
    }

    /// Copy-on-write through the hardware: a private mapping of an object
    /// reads the object until it writes, then only its copy changes.
    #[ktest]
    fn copy_on_write_faults() {
        let space = AddressSpace::new().unwrap();
        let obj = VmObject::new(ObjectKind::Anonymous, 4, vm::kernel_env());
        obj.reference(); // the shared mapping's reference
        let shared =
            space.map.lock().map(None, 4 * PAGE, Prot::RW, Prot::ALL, Inherit::Share, Some((obj.clone(), 0)), false).unwrap();
        let private =
            space.map.lock().map(None, 4 * PAGE, Prot::RW, Prot::ALL, Inherit::Copy, Some((obj.clone(), 0)), true).unwrap();
        {
            let _on = space.activate();
            // SAFETY: both ranges are mapped read-write in the active space.
            unsafe {
                (shared as *mut u8).write_volatile(0x11);
                assert_eq!((private as *const u8).read_volatile(), 0x11, "the private mapping reads the object");
                (private as *mut u8).write_volatile(0x22);
                assert_eq!((private as *const u8).read_volatile(), 0x22);
                assert_eq!((shared as *const u8).read_volatile(), 0x11, "the object is untouched");
                (shared as *mut u8).write_volatile(0x33);
                assert_eq!((private as *const u8).read_volatile(), 0x22, "the copy is the private mapping's own");
            }
        }
        drop(obj);
        drop(space);
    }

    /// The pmap's leaf-table hint does not outlive the table: mapping,
    /// unmapping (which frees the page tables) and mapping again in the
    /// same 2 MiB, over and over, maps the right pages and leaks no table
    /// (the runner checks the free count).
    #[ktest]
    fn remapping_after_tables_are_freed() {
        let space = AddressSpace::new().unwrap();
        for round in 0..8u64 {
            let a = anon(&space, 4, Prot::RW);
            for i in 0..4 {
                fault(&space.map, a + i * PAGE, Prot::WRITE, false).unwrap();
            }
            let pages: Vec<_> = (0..4).map(|i| space.pmap.extract(a + i * PAGE).expect("mapped").0).collect();
            for (i, &pa) in pages.iter().enumerate() {
                let page = vm::global().page_of(pa).unwrap();
                assert_eq!(page.pindex(), i as u64, "round {round}: page {i} maps its own index");
            }
            space.map.lock().unmap(a, a + 4 * PAGE).unwrap();
            assert!((0..4).all(|i| space.pmap.extract(a + i * PAGE).is_none()), "round {round}: unmapped");
        }
    }

    /// A write to a read-only mapping is refused with a protection error;
    /// after `protect` to read-write it succeeds.
    #[ktest]
    fn protection_faults() {
        let space = AddressSpace::new().unwrap();
        let a = anon(&space, 1, Prot::READ);
        assert_eq!(fault(&space.map, a, Prot::WRITE, false), Err(FaultError::Protection));
        space.map.lock().protect(a, a + PAGE, Prot::RW).unwrap();
        let _on = space.activate();
        // SAFETY: the page is mapped read-write now.
        unsafe {
            (a as *mut u32).write_volatile(7);
            assert_eq!((a as *const u32).read_volatile(), 7);
        }
    }

    /// Wired pages are resident and wired; unmapping the wired range unwires
    /// and frees them.
    #[ktest]
    fn wiring_in_kernel() {
        let space = AddressSpace::new().unwrap();
        let a = anon(&space, 16, Prot::RW);
        vm::fault::wire(&space.map, a, a + 16 * PAGE).unwrap();
        assert_eq!(space.pmap.wired_count(), 16);
        let pm = vm::global();
        let pages: Vec<_> = (0..16).map(|i| pm.page_of(space.pmap.extract(a + i * PAGE).unwrap().0).unwrap()).collect();
        assert!(pages.iter().all(|p| p.wire_count() == 1));
        space.map.lock().unmap(a, a + 16 * PAGE).unwrap();
        assert!(pages.iter().all(|p| p.flags().contains(vm::page::PageFlags::FREE)), "unmapped wired pages are freed");
    }

    /// A fault at an address with no mapping is the VM's `NoEntry`.
    #[ktest]
    fn unmapped_address_is_no_entry() {
        let space = AddressSpace::new().unwrap();
        assert_eq!(fault(&space.map, 0x5000_0000, Prot::READ, false), Err(FaultError::NoEntry));
    }

    /// A pager whose reads block until the test lets them go.
    struct BlockingPager {
        released: core::sync::atomic::AtomicBool,
        reads: core::sync::atomic::AtomicU32,
    }

    impl BlockingPager {
        fn chan(&self) -> usize {
            self as *const Self as usize
        }
    }

    impl vm::object::Pager for BlockingPager {
        fn has_page(&self, _: u64) -> Option<(u64, u64)> {
            Some((0, 0))
        }
        fn get_page(&self, _: &VmObject, page: &'static vm::page::Page) -> vm::object::PagerResult {
            self.reads.fetch_add(1, Ordering::SeqCst);
            while !self.released.load(Ordering::SeqCst) {
                crate::kern::sched::sleep_if(self.chan(), || !self.released.load(Ordering::SeqCst));
            }
            let pm = vm::global();
            // SAFETY: the page is exclusively busy for this read; direct map.
            unsafe { core::ptr::write_bytes(pm.page_addr(page).unwrap(), 0xC4, PAGE as usize) };
            page.set_all_valid();
            vm::object::PagerResult::Ok
        }
    }

    /// Two threads fault on the same page at once: the first reads it in
    /// (its pager blocks), the second sleeps on the busy page and wakes to
    /// find it valid. The pager is asked once.
    #[ktest]
    fn two_threads_fault_on_one_page() {
        use alloc::sync::Arc;
        use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};

        let space = AddressSpace::new().unwrap();
        let pager = Arc::new(BlockingPager { released: AtomicBool::new(false), reads: AtomicU32::new(0) });
        let file = VmObject::new(ObjectKind::Vnode, 1, vm::kernel_env());
        file.lock().set_pager(pager.clone());
        let a = space.map.lock().map(None, PAGE, Prot::READ, Prot::READ, Inherit::Share, Some((file, 0)), false).unwrap();
        let _on = space.activate();
        let seen = Arc::new(AtomicU64::new(0));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let seen = seen.clone();
                crate::kern::sched::spawn("reader", move || {
                    // SAFETY: the page is mapped read-only in the active space.
                    let v = unsafe { (a as *const u8).read_volatile() };
                    seen.fetch_add(v as u64, Ordering::SeqCst);
                })
                .unwrap()
            })
            .collect();
        // Let both threads reach their faults: one in the pager, one asleep
        // on the busy page. (On several CPUs they run beside this one, and
        // may take longer to get there than a few turns of ours.)
        let until = crate::kern::time::ticks() + crate::kern::time::HZ;
        while pager.reads.load(Ordering::SeqCst) == 0 && crate::kern::time::ticks() < until {
            crate::kern::sched::yield_now();
        }
        for _ in 0..20 {
            crate::kern::sched::yield_now();
        }
        assert_eq!(pager.reads.load(Ordering::SeqCst), 1, "the first fault is reading");
        assert_eq!(seen.load(Ordering::SeqCst), 0, "nobody got the page before the read finished");
        pager.released.store(true, Ordering::SeqCst);
        crate::kern::sched::wakeup(pager.chan());
        for r in readers {
            crate::kern::sched::join(r);
        }
        assert_eq!(seen.load(Ordering::SeqCst), 2 * 0xC4, "both threads read the page's data");
        assert_eq!(pager.reads.load(Ordering::SeqCst), 1, "the second fault found the page, not the pager");
    }

    /// With trie-node and page allocation failing at random, every fault
    /// succeeds or returns NoMemory; nothing leaks or is freed twice (the
    /// runner checks the free count and the invariants afterwards).
    #[ktest(timeout = 120)]
    fn faults_under_random_allocation_failure() {
        use vm::failpoint::{Action, PAGE_ALLOC, RADIX_NODE_ALLOC};

        let space = AddressSpace::new().unwrap();
        let a = space.map.lock().map(None, 256 * PAGE, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
        for i in 0..256 {
            fault(&space.map, a + i * PAGE, Prot::WRITE, false).unwrap();
        }
        let child = space.fork().unwrap();
        RADIX_NODE_ALLOC.set(Action::Probability { ppm: 200_000, seed: 11 });
        PAGE_ALLOC.set(Action::Probability { ppm: 200_000, seed: 12 });
        let (mut ok, mut short) = (0, 0);
        for round in 0..3u64 {
            for i in 0..256u64 {
                let s = if (i + round) % 2 == 0 { &space } else { &child };
                match fault(&s.map, a + i * PAGE, Prot::WRITE, false) {
                    Ok(_) => ok += 1,
                    Err(FaultError::NoMemory) => short += 1,
                    Err(e) => panic!("unexpected fault error {e:?}"),
                }
            }
            let v = crate::kern::sched::with_other_cpus_parked(|| vm::invariants::check(vm::global()));
            assert!(v.is_empty(), "invariants broken: {v:?}");
        }
        RADIX_NODE_ALLOC.set(Action::Off);
        PAGE_ALLOC.set(Action::Off);
        assert!(ok > 0);
        log::info!("random allocation failure: {ok} faults succeeded, {short} ran out of memory");
        drop(child);
        drop(space);
    }
}
