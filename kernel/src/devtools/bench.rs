//! In-kernel benchmarks (`mode=bench`), printed as `bench: <name> <value> <unit>`.
//!
//! Figures that need a clock outside the guest (boot time, the real timer
//! rate) are measured by the host from the times at which these lines arrive;
//! the `ktick:` lines exist for that.

use crate::kern::time;
use crate::kprintln;

/// How long the tick-rate window lasts, in ticks.
const TICK_WINDOW: u64 = 2 * time::HZ;

pub fn run() {
    // Tick rate: the host times the two ktick lines with its own clock.
    let t0 = time::ticks();
    while time::ticks() == t0 {
        x86_64::instructions::hlt();
    }
    let start = time::ticks();
    let tsc0 = time::rdtsc();
    kprintln!("ktick: start {start} hz={}", time::HZ);
    while time::ticks() < start + TICK_WINDOW {
        x86_64::instructions::hlt();
    }
    let end = time::ticks();
    let tsc1 = time::rdtsc();
    kprintln!("ktick: end {end}");
    let us = time::tsc_to_us(tsc1 - tsc0).max(1);
    kprintln!("bench: timer.tick_rate_by_tsc {} Hz", (end - start) * 1_000_000 / us);
    kprintln!("bench: cpu.tsc_rate {} MHz", time::tsc_hz() / 1_000_000);
    kprintln!("bench: apic.timer_input_rate {} kHz", crate::arch::apic::timer_hz() / 1000);
    primitives();
    page_allocator();
    faults();
    zeroing();
    file_reads();
    heap();
}

/// The kernel heap: an allocation and free of a small object (a slab's
/// free list) and of a page run, ns each; a burst of 16,384 objects of
/// 256 bytes: the pages it takes and the pages `reclaim` gives back; and
/// the heap's figures at the end of the benchmarks.
fn heap() {
    use alloc::boxed::Box;
    use alloc::vec::Vec;
    const N: u64 = 100_000;
    let time = |f: &dyn Fn()| {
        let t0 = time::rdtsc();
        for _ in 0..N {
            f();
        }
        time::tsc_to_us(time::rdtsc() - t0) as f64 * 1000.0 / N as f64
    };
    let small = time(&|| drop(core::hint::black_box(Box::new([0u64; 8]))));
    kprintln!("bench: heap.alloc_free_64 {small:.1} ns");
    let run = time(&|| drop(core::hint::black_box(Vec::<u8>::with_capacity(16 << 10))));
    kprintln!("bench: heap.alloc_free_16k_run {run:.1} ns");
    let pm = vm::global();
    crate::kern::heap::reclaim();
    let free0 = pm.free_count();
    let mut burst: Vec<Box<[u64; 32]>> = Vec::with_capacity(16384);
    let t0 = time::rdtsc();
    for i in 0..16384u64 {
        burst.push(Box::new([i; 32]));
    }
    let us = time::tsc_to_us(time::rdtsc() - t0);
    let low = pm.free_count();
    drop(burst);
    crate::kern::heap::reclaim();
    kprintln!("bench: heap.burst_256x16384 {:.1} ns", us as f64 * 1000.0 / 16384.0);
    kprintln!("bench: heap.burst_pages_taken {} pages", free0.saturating_sub(low));
    kprintln!("bench: heap.burst_pages_given_back {} pages", pm.free_count().saturating_sub(low));
    let s = crate::kern::heap::stats();
    kprintln!("bench: heap.bytes_in_use {} bytes", s.bytes_in_use());
    kprintln!("bench: heap.pages_held {} pages", s.pages());
    kprintln!("bench: heap.boot_arena_used {} bytes", s.boot_used);
}

/// A cold sequential read of `/data/seq64` (64 MiB) through a mapping, one
/// byte per page: block requests with read-ahead and without, and MiB/s.
fn file_reads() {
    use core::sync::atomic::Ordering;

    use vm::map::Inherit;
    use vm::pmap::Prot;

    const PAGE: u64 = vm::PAGE_SIZE as u64;
    let Some(m) = crate::fs::root() else {
        kprintln!("skip: file.* (no root filesystem)");
        return;
    };
    let Ok((ino, size)) = ({
        let mut fs = m.fs.lock();
        fs.lookup(b"/data/seq64").and_then(|ino| Ok((ino, fs.stat(ino)?.size)))
    }) else {
        kprintln!("skip: file.* (no /data/seq64)");
        return;
    };
    let read = |ahead: bool| -> Option<(u64, u64)> {
        m.set_read_ahead(ahead);
        let v = m.vnode(ino, size).ok()?;
        let space = crate::mm::vmspace::AddressSpace::new().ok()?;
        v.object.reference();
        let a =
            space.map.lock().map(None, size, Prot::READ, Prot::READ, Inherit::Share, Some((v.object.clone(), 0)), false).ok()?;
        let r0 = m.stats.reads.load(Ordering::Relaxed);
        let t0 = time::rdtsc();
        {
            let _on = space.activate();
            for i in 0..size / PAGE {
                // SAFETY: mapped shared read-only in the active space.
                unsafe { ((a + i * PAGE) as *const u8).read_volatile() };
            }
        }
        let us = time::tsc_to_us(time::rdtsc() - t0).max(1);
        let requests = m.stats.reads.load(Ordering::Relaxed) - r0;
        drop(space);
        drop(v);
        m.drop_unused();
        Some((requests, us))
    };
    let with = read(true);
    let without = read(false);
    m.set_read_ahead(true);
    if let (Some((requests, us)), Some((single, single_us))) = (with, without) {
        kprintln!("bench: file.seq_read_requests {requests} requests");
        kprintln!("bench: file.seq_read_requests_no_readahead {single} requests");
        kprintln!("bench: file.seq_read_requests_ratio {:.1} x", single as f64 / requests.max(1) as f64);
        kprintln!("bench: file.seq_read {:.1} MiB/s", (size >> 20) as f64 * 1e6 / us as f64);
        kprintln!("bench: file.seq_read_no_readahead {:.1} MiB/s", (size >> 20) as f64 * 1e6 / single_us as f64);
    }
}

/// What single operations of the fault path cost here: each loop of `N` less
/// an empty one, in ns. Under QEMU's TCG with one CPU, locked atomics cost
/// no more than plain stores, while instructions that end a translation
/// block or call out of it (`popf`, `invlpg`) cost tens to hundreds of ns.
pub fn primitives() {
    use core::sync::atomic::{AtomicU64, Ordering};
    const N: u64 = 100_000;
    macro_rules! time_loop {
        ($body:expr) => {{
            let t0 = time::rdtsc();
            for i in 0..N {
                core::hint::black_box(i);
                $body;
            }
            time::rdtsc() - t0
        }};
    }
    let empty = time_loop!(core::hint::black_box(0u64));
    let report = |name: &str, tsc: u64| {
        kprintln!("bench: kernel.cost.{name} {:.1} ns", time::tsc_to_us(tsc.saturating_sub(empty)) as f64 * 1000.0 / N as f64)
    };
    let a = AtomicU64::new(0);
    report("store", time_loop!(a.store(core::hint::black_box(1), Ordering::Relaxed)));
    report("locked_add", time_loop!(a.fetch_add(1, Ordering::Relaxed)));
    report("cmpxchg", time_loop!(core::hint::black_box(a.compare_exchange(1, 1, Ordering::Acquire, Ordering::Relaxed).is_ok())));
    let m = spin::Mutex::new(0u64);
    report("spin_lock_unlock", time_loop!(*m.lock() += 1));
    let arc = alloc::sync::Arc::new(0u64);
    report("arc_clone_drop", time_loop!(drop(core::hint::black_box(arc.clone()))));
    report("rdtsc", time_loop!(time::rdtsc()));
    report("without_interrupts", time_loop!(x86_64::instructions::interrupts::without_interrupts(|| ())));
    report("read_cr2", time_loop!(x86_64::registers::control::Cr2::read_raw()));
    let va = x86_64::VirtAddr::new(&a as *const AtomicU64 as u64);
    report("invlpg", time_loop!(x86_64::instructions::tlb::flush(va)));
    // Under emulation a call and its return cost more than many plain
    // instructions: what the fault path's inlining is measured against.
    report("call_ret", time_loop!(core::hint::black_box(far_call(core::hint::black_box(3)))));
    report(
        "straight_x10",
        time_loop!({
            let mut x = core::hint::black_box(3u64);
            for k in 0..10 {
                x = x.wrapping_mul(7) ^ k;
            }
            core::hint::black_box(x)
        }),
    );
    x86_64::instructions::interrupts::disable();
    // SAFETY: interrupts go on for one instruction and off again.
    report("sti_cli", time_loop!(unsafe { core::arch::asm!("sti", "nop", "cli") }));
    x86_64::instructions::interrupts::enable();
}

/// A call that is not inlined, for `kernel.cost.call_ret`.
#[inline(never)]
fn far_call(x: u64) -> u64 {
    x.wrapping_mul(7) ^ 1
}

/// Page-allocator micro-benchmarks over the real page array: the same
/// workloads as the host benchmark (`vm/benches/phys.rs`), timed by the TSC.
pub fn page_allocator() {
    use vm::phys::AllocFlags;
    let pm = vm::global();
    let ns_per = |iters: u64, tsc: u64| time::tsc_to_us(tsc) as f64 * 1000.0 / iters as f64;

    const PAIRS: u64 = 200_000;
    let t0 = time::rdtsc();
    for _ in 0..PAIRS {
        let Some(p) = pm.alloc(AllocFlags::NOBUSY) else { break };
        pm.free(core::hint::black_box(p));
    }
    kprintln!("bench: kernel.phys.order0_pair {:.1} ns/pair", ns_per(PAIRS, time::rdtsc() - t0));

    const BIG: u64 = 5_000;
    let t0 = time::rdtsc();
    for _ in 0..BIG {
        let Some(p) = pm.alloc_order(9, AllocFlags::UNMANAGED) else { break };
        pm.free_contig(core::hint::black_box(p), 512);
    }
    kprintln!("bench: kernel.phys.order9_pair {:.1} ns/pair", ns_per(BIG, time::rdtsc() - t0));

    const MIXED: u64 = 200_000;
    let mut rng = 42u64;
    let mut live: alloc::vec::Vec<(&'static vm::page::Page, usize)> = alloc::vec::Vec::with_capacity(1024);
    let t0 = time::rdtsc();
    for _ in 0..MIXED {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let r = rng >> 33;
        if live.len() < 1024 && (live.is_empty() || !r.is_multiple_of(3)) {
            let order = (r / 3 % 5) as u8;
            if let Some(p) = pm.alloc_order(order, AllocFlags::UNMANAGED) {
                live.push((p, 1 << order));
            }
        } else {
            let (p, pages) = live.swap_remove(r as usize % live.len());
            if pages == 1 { pm.free(p) } else { pm.free_contig(p, pages) }
        }
    }
    for (p, pages) in live {
        if pages == 1 { pm.free(p) } else { pm.free_contig(p, pages) }
    }
    kprintln!("bench: kernel.phys.mixed_op {:.1} ns/op", ns_per(MIXED, time::rdtsc() - t0));
}

/// Page-fault costs through the hardware, over 64 MiB: zero-fill faults,
/// copy-on-write faults (after a fork) and soft faults (resident page, no
/// mapping), in ns per fault; then the same zero-fill and copy-on-write runs
/// again with the fault steps timed, for the per-step split (the timing
/// itself costs a few clock reads per fault, so the headline figures come
/// from the untimed runs); a zero-fill run over pages the host has in its
/// caches; then the parts a fault is made of, measured alone: the null
/// fault (the floor), trap entry and exit, page allocation, zeroing, mapping.
///
/// Zero fill, steady state: `kernel.zero_fill` (and its timed split) comes
/// after idle time in which the idle loop has zeroed free pages ahead of
/// need (`PhysMem::zero_idle`, FreeBSD's idle zeroing): the benchmark sleeps
/// until the zero pool holds a page for every fault, so these faults find
/// their pages zeroed and do not zero them. `kernel.zero_fill_cold` is the
/// same run with the pool emptied and its pages no longer known zero (a
/// system that has had no idle time): every fault zeroes its page.
pub fn faults() {
    use core::sync::atomic::Ordering;
    use vm::map::Inherit;
    use vm::pmap::{Pmap, Prot};

    use crate::mm::vmspace::{AddressSpace, FAULT_TSC, FAULTS};

    const SIZE: u64 = 64 << 20;
    const PAGE: u64 = vm::PAGE_SIZE as u64;
    let per_fault = |tsc: u64, faults: u64| time::tsc_to_us(tsc) as f64 * 1000.0 / faults.max(1) as f64;

    let steps = || {
        let t = &vm::fault::STEP_TIMES;
        [&t.lookup, &t.find_page, &t.cow, &t.enter, &t.finish, &t.fill].map(|a| a.load(Ordering::Relaxed))
    };
    // Writes one byte to every page of `[a, a + size)` in `space` and
    // returns the time per fault; with `timed`, also reports the time inside
    // `vm::fault` and each step's share.
    let write_all = |name: &str, space: &alloc::sync::Arc<AddressSpace>, a: u64, size: u64, v: u8, timed: bool| -> f64 {
        let _on = space.activate();
        if timed {
            vm::fault::set_step_clock(Some(time::rdtsc));
        }
        let f0 = FAULTS.get();
        let v0 = FAULT_TSC.load(Ordering::Relaxed);
        let s0 = steps();
        let t0 = time::rdtsc();
        for i in 0..size / PAGE {
            // SAFETY: the range is mapped read-write (perhaps copy-on-write)
            // in the active space.
            unsafe { ((a + i * PAGE) as *mut u8).write_volatile(v ^ i as u8) };
        }
        let t1 = time::rdtsc();
        vm::fault::set_step_clock(None);
        let n = FAULTS.get() - f0;
        if !timed {
            return per_fault(t1 - t0, n);
        }
        kprintln!("bench: kernel.{name}.timed {:.0} ns/fault", per_fault(t1 - t0, n));
        kprintln!("bench: kernel.{name}.in_vm_fault {:.0} ns/fault", per_fault(FAULT_TSC.load(Ordering::Relaxed) - v0, n));
        let after = steps();
        for (i, step) in ["lookup", "find_page", "cow", "enter", "finish", "fill"].iter().enumerate() {
            kprintln!("bench: kernel.{name}.step.{step} {:.0} ns/fault", per_fault(after[i] - s0[i], n));
        }
        per_fault(t1 - t0, n)
    };
    // A space with `SIZE` of anonymous memory at the returned address.
    let anon_space = |size: u64| {
        let space = AddressSpace::new().ok()?;
        let a = space.map.lock().map(None, size, Prot::RW, Prot::ALL, Inherit::Copy, None, false).ok()?;
        Some((space, a))
    };

    let pm = vm::global();
    // Sleeps (idle time: the idle loop zeroes free pages) until the zero
    // pool holds a page for every fault of a run and its page tables, or
    // stops growing.
    let idle_zeroing = || {
        let want = SIZE / PAGE + SIZE / PAGE / 512 + 8;
        let mut last = u64::MAX;
        for _ in 0..500 {
            let n = pm.zeroed_count();
            if n >= want || n == last {
                break;
            }
            last = n;
            crate::kern::sched::sleep_until(&last as *const u64 as usize, time::ticks() + 10, || true);
        }
    };

    // Untimed: the headline figures, each the median of `MEDIAN_OF` rounds
    // (a round: 16384 faults of each kind, some 30-60 ms). One round alone
    // is at the mercy of the host: a round in which the scheduler switched
    // threads a few times ran ~60% slower, and the first round after boot
    // runs ~20% slower than the ones after it, every step of the fault
    // alike (not the host's caches, QEMU's TLB size or other threads, which
    // were each ruled out). The first round's own figures are printed too.
    const MEDIAN_OF: usize = 3;
    let median = |mut v: alloc::vec::Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mut zero, mut cow, mut soft) = (alloc::vec::Vec::new(), alloc::vec::Vec::new(), alloc::vec::Vec::new());
    let mut soft_pages = 0.0;
    for round in 0..MEDIAN_OF {
        let Some((parent, a)) = anon_space(SIZE) else { return };
        idle_zeroing();
        if round == 0 {
            kprintln!("bench: kernel.zero_pool_pages {} pages", pm.zeroed_count());
        }
        zero.push(write_all("zero_fill", &parent, a, SIZE, 0, false));
        let Ok(child) = parent.fork() else { return };
        cow.push(write_all("cow", &child, a, SIZE, 0xFF, false));
        drop(child);

        // Soft faults: the parent's resident pages mapped shared, read-only,
        // in a third space.
        let obj = parent.map.lock().entry(a).and_then(|e| e.object.clone());
        if let (Some(obj), Ok(third)) = (obj, AddressSpace::new()) {
            obj.reference();
            let b = third.map.lock().map(None, SIZE, Prot::READ, Prot::READ, Inherit::Share, Some((obj, 0)), false).unwrap();
            let _on = third.activate();
            let f0 = FAULTS.get();
            let t0 = time::rdtsc();
            let mut sum = 0u64;
            for i in 0..SIZE / PAGE {
                // SAFETY: mapped read-only in the active space; pages resident.
                sum += unsafe { ((b + i * PAGE) as *const u8).read_volatile() } as u64;
            }
            let n = FAULTS.get() - f0;
            core::hint::black_box(sum);
            soft.push(per_fault(time::rdtsc() - t0, n));
            soft_pages = (SIZE / PAGE) as f64 / n.max(1) as f64;
        }
        drop(parent);
    }
    kprintln!("bench: kernel.zero_fill.first_round {:.0} ns/fault", zero[0]);
    kprintln!("bench: kernel.cow.first_round {:.0} ns/fault", cow[0]);
    kprintln!("bench: kernel.zero_fill {:.0} ns/fault", median(zero));
    kprintln!("bench: kernel.cow {:.0} ns/fault", median(cow));
    if !soft.is_empty() {
        kprintln!("bench: kernel.soft_fault {:.0} ns/fault", median(soft));
        kprintln!("bench: kernel.soft_fault_pages_per_fault {soft_pages:.1} pages");
    }

    if crate::devtools::profile::WANTED.load(Ordering::Relaxed) {
        profile_faults(&anon_space, &idle_zeroing);
    }

    // Zero fill with no page zeroed ahead.
    if let Some((space, a)) = anon_space(SIZE) {
        pm.forget_zeroed();
        let ns = write_all("zero_fill_cold", &space, a, SIZE, 0, false);
        kprintln!("bench: kernel.zero_fill_cold {ns:.0} ns/fault");
    }

    // Timed: the split.
    let Some((parent, a)) = anon_space(SIZE) else { return };
    idle_zeroing();
    write_all("zero_fill", &parent, a, SIZE, 0, true);
    let Ok(child) = parent.fork() else { return };
    write_all("cow", &child, a, SIZE, 0xFF, true);
    drop(child);
    drop(parent);

    // Zero fill over pages freed just before (LIFO reuse keeps them in the
    // host's caches): the fault path's own cost, with less of the host's
    // memory system in it.
    const HOT: u64 = 2 << 20;
    const ROUNDS: u64 = 16;
    if let Some((space, a)) = anon_space(HOT) {
        // Not from the zero pool, which would hand out other pages.
        pm.forget_zeroed();
        let mut tsc = 0;
        let mut n = 0;
        for round in 0..ROUNDS {
            let _on = space.activate();
            let f0 = FAULTS.get();
            let t0 = time::rdtsc();
            for i in 0..HOT / PAGE {
                // SAFETY: mapped read-write in the active space.
                unsafe { ((a + i * PAGE) as *mut u8).write_volatile(round as u8) };
            }
            tsc += time::rdtsc() - t0;
            n += FAULTS.get() - f0;
            // Unmapping frees the pages; mapping again gives a fresh object.
            let mut map = space.map.lock();
            map.unmap(a, a + HOT).unwrap();
            map.map(Some(a), HOT, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
        }
        kprintln!("bench: kernel.zero_fill_hot {:.0} ns/fault", per_fault(tsc, n));
    }

    // The floor: the same walk over pages whose entries are there but not
    // present, the handler only setting the present bit (trap entry and
    // exit, QEMU's failed and repeated page walk); then the walk again over
    // the present pages (a TLB miss each).
    if let (Some(p), Some((space, a))) = (pm.alloc(vm::phys::AllocFlags::NOBUSY), anon_space(SIZE)) {
        p.xbusy();
        p.set_all_valid();
        p.set_all_dirty();
        p.xunbusy();
        let mut entered = true;
        for i in 0..SIZE / PAGE {
            // Entered accessed and modified, as the fault path enters them.
            match space.pmap.enter_accessed(a + i * PAGE, p, Prot::RW, Prot::RW, false) {
                Ok(f) => f.skip_not_loaded(),
                Err(_) => entered = false,
            }
        }
        if entered {
            space.pmap.hide(a, a + SIZE);
            crate::mm::vmspace::NULL_FAULT_PMAP.store(alloc::sync::Arc::as_ptr(&space.pmap) as *mut _, Ordering::SeqCst);
            let touch = || {
                let _on = space.activate();
                let t0 = time::rdtsc();
                for i in 0..SIZE / PAGE {
                    // SAFETY: mapped read-write (hidden or not) in the active space.
                    unsafe { ((a + i * PAGE) as *mut u8).write_volatile(i as u8) };
                }
                time::rdtsc() - t0
            };
            let null = touch();
            crate::mm::vmspace::NULL_FAULT_PMAP.store(core::ptr::null_mut(), Ordering::SeqCst);
            kprintln!("bench: kernel.fault_part.null_fault {:.0} ns/fault", per_fault(null, SIZE / PAGE));
            let mapped = touch();
            kprintln!("bench: kernel.fault_part.touch_mapped {:.0} ns/page", per_fault(mapped, SIZE / PAGE));
            for i in 0..SIZE / PAGE {
                space.pmap.unhide(a + i * PAGE);
            }
        }
        space.pmap.remove(a, a + SIZE).skip_not_loaded();
        drop(space);
        p.xbusy();
        p.invalidate();
        p.xunbusy();
        pm.free(p);
    }

    // The parts, alone.
    const N: u64 = 20_000;
    {
        let obj = vm::object::VmObject::new(vm::object::ObjectKind::Anonymous, N, vm::kernel_env());
        let t0 = time::rdtsc();
        for i in 0..N {
            let mut l = obj.lock();
            if let Ok(p) = l.alloc_page(i, vm::phys::AllocFlags::empty()) {
                p.set_all_valid();
                drop(l);
                vm::global().activate(p);
                p.xunbusy();
            }
        }
        kprintln!("bench: kernel.fault_part.object_alloc_page {:.0} ns", per_fault(time::rdtsc() - t0, N));
        let t0 = time::rdtsc();
        for i in 0..N {
            core::hint::black_box(obj.lock().lookup(i));
        }
        kprintln!("bench: kernel.fault_part.object_lookup {:.0} ns", per_fault(time::rdtsc() - t0, N));
        obj.deallocate();
    }
    let t0 = time::rdtsc();
    for _ in 0..N {
        // SAFETY: the breakpoint handler returns to the next instruction.
        unsafe { core::arch::asm!("int3") };
    }
    kprintln!("bench: kernel.fault_part.trap_entry_exit {:.0} ns", per_fault(time::rdtsc() - t0, N));
    let t0 = time::rdtsc();
    for _ in 0..N {
        if let Some(p) = pm.alloc(vm::phys::AllocFlags::empty()) {
            pm.free(p);
        }
    }
    kprintln!("bench: kernel.fault_part.page_alloc_free {:.0} ns", per_fault(time::rdtsc() - t0, N));
    if let Some(p) = pm.alloc(vm::phys::AllocFlags::NOBUSY) {
        let va = pm.page_addr(p).unwrap();
        let t0 = time::rdtsc();
        for _ in 0..N {
            // SAFETY: `va` is a page we own, through the direct map.
            unsafe { zero_u64(va) };
        }
        kprintln!("bench: kernel.fault_part.zero_page {:.0} ns", per_fault(time::rdtsc() - t0, N));
        p.xbusy();
        p.set_all_valid();
        p.xunbusy();
        if let Ok(space) = AddressSpace::new() {
            let t0 = time::rdtsc();
            for i in 0..N {
                let va = 0x1000_0000 + (i % 512) * PAGE;
                space.pmap.enter(va, p, Prot::RW, false).unwrap().skip_not_loaded();
                space.pmap.remove(va, va + PAGE).skip_not_loaded();
            }
            kprintln!("bench: kernel.fault_part.pmap_enter_remove {:.0} ns", per_fault(time::rdtsc() - t0, N));
        }
        p.xbusy();
        p.invalidate();
        p.xunbusy();
        pm.free(p);
    }
}

/// Where zero-fill and copy-on-write faults spend their time: each workload
/// of [`faults`] run [`PROFILE_ROUNDS`] times over under the sampling
/// profiler (only the faulting loops are sampled).
fn profile_faults(
    anon_space: &dyn Fn(u64) -> Option<(alloc::sync::Arc<crate::mm::vmspace::AddressSpace>, u64)>,
    idle_zeroing: &dyn Fn(),
) {
    use crate::devtools::profile;
    const SIZE: u64 = 64 << 20;
    const PAGE: u64 = vm::PAGE_SIZE as u64;
    const PROFILE_ROUNDS: u64 = 16;
    let touch = |space: &alloc::sync::Arc<crate::mm::vmspace::AddressSpace>, a: u64, sampled: bool| {
        let _on = space.activate();
        profile::set(sampled);
        for i in 0..SIZE / PAGE {
            // SAFETY: mapped read-write (perhaps copy-on-write) in the active space.
            unsafe { ((a + i * PAGE) as *mut u8).write_volatile(i as u8) };
        }
        profile::set(false);
    };
    profile::reset();
    for _ in 0..PROFILE_ROUNDS {
        let Some((space, a)) = anon_space(SIZE) else { return };
        idle_zeroing();
        touch(&space, a, true);
    }
    profile::report("zero_fill", 30);
    profile::reset();
    for _ in 0..PROFILE_ROUNDS {
        let Some((parent, a)) = anon_space(SIZE) else { return };
        touch(&parent, a, false);
        let Ok(child) = parent.fork() else { return };
        touch(&child, a, true);
    }
    profile::report("cow", 30);
}

/// # Safety
/// `p` is a writable page.
unsafe fn zero_stosq(p: *mut u8) {
    // SAFETY: writes 512 qwords at `p` (caller's page).
    unsafe { core::arch::asm!("rep stosq", inout("rcx") 512usize => _, inout("rdi") p => _, in("rax") 0u64, options(nostack)) };
}

/// 8-byte stores, as the fault path zeroes.
///
/// # Safety
/// `p` is a writable page.
unsafe fn zero_u64(p: *mut u8) {
    for i in 0..512 {
        // SAFETY: within the caller's page.
        unsafe { (p as *mut u64).add(i).write_volatile(0) };
    }
}

/// 16-byte SSE stores. The kernel is built without SSE; the boot thread
/// that runs the benchmarks keeps nothing in xmm0, which is saved and
/// restored anyway.
///
/// # Safety
/// `p` is a writable, 16-aligned page.
unsafe fn zero_sse(p: *mut u8) {
    let mut save = [0u64; 2];
    // SAFETY: writes the caller's page; xmm0 restored; no stack use.
    unsafe {
        core::arch::asm!(
            "movdqu [{save}], xmm0",
            "pxor xmm0, xmm0",
            "2:",
            "movdqa [{p}], xmm0",
            "movdqa [{p} + 16], xmm0",
            "movdqa [{p} + 32], xmm0",
            "movdqa [{p} + 48], xmm0",
            "add {p}, 64",
            "dec {n:e}",
            "jnz 2b",
            "movdqu xmm0, [{save}]",
            save = in(reg) save.as_mut_ptr(),
            p = inout(reg) p => _,
            n = inout(reg) 64u32 => _,
            options(nostack),
        )
    }
}

/// 16-byte SSE loads and stores, as [`zero_sse`].
///
/// # Safety
/// `s` and `d` are distinct 16-aligned pages; `d` writable.
unsafe fn copy_sse(s: *const u8, d: *mut u8) {
    let mut save = [0u64; 4];
    // SAFETY: reads and writes the caller's pages; xmm0-1 restored; no stack use.
    unsafe {
        core::arch::asm!(
            "movdqu [{save}], xmm0",
            "movdqu [{save} + 16], xmm1",
            "2:",
            "movdqa xmm0, [{s}]",
            "movdqa xmm1, [{s} + 16]",
            "movdqa [{d}], xmm0",
            "movdqa [{d} + 16], xmm1",
            "add {s}, 32",
            "add {d}, 32",
            "dec {n:e}",
            "jnz 2b",
            "movdqu xmm0, [{save}]",
            "movdqu xmm1, [{save} + 16]",
            save = in(reg) save.as_mut_ptr(),
            s = inout(reg) s => _,
            d = inout(reg) d => _,
            n = inout(reg) 128u32 => _,
            options(nostack),
        )
    }
}

/// Zeroing a page several ways, and copying one three ways (under TCG the
/// choice matters several times over for a hot page; in a fault, where the
/// page is cold, the host's memory system takes most of the time:
/// `kernel.*.step.fill`).
pub fn zeroing() {
    let pm = vm::global();
    let Some(p) = pm.alloc(vm::phys::AllocFlags::NOBUSY) else { return };
    let va = pm.page_addr(p).unwrap();
    const N: u64 = 20_000;
    let ns = |tsc: u64| time::tsc_to_us(tsc) as f64 * 1000.0 / N as f64;
    let t0 = time::rdtsc();
    for _ in 0..N {
        // SAFETY: our page.
        unsafe { zero_stosq(va) };
    }
    kprintln!("bench: kernel.zero.rep_stosq {:.0} ns/page", ns(time::rdtsc() - t0));
    let t0 = time::rdtsc();
    for _ in 0..N {
        // SAFETY: writes 4096 bytes at `va` (our page).
        unsafe {
            core::arch::asm!("rep stosb", inout("rcx") 4096usize => _, inout("rdi") va => _, in("al") 0u8, options(nostack))
        };
    }
    kprintln!("bench: kernel.zero.rep_stosb {:.0} ns/page", ns(time::rdtsc() - t0));
    let t0 = time::rdtsc();
    for _ in 0..N {
        // SAFETY: our page.
        unsafe { zero_u64(va) };
    }
    kprintln!("bench: kernel.zero.u64_stores {:.0} ns/page", ns(time::rdtsc() - t0));
    let t0 = time::rdtsc();
    for _ in 0..N {
        // SAFETY: our page.
        unsafe { zero_sse(va) };
    }
    kprintln!("bench: kernel.zero.sse_stores {:.0} ns/page", ns(time::rdtsc() - t0));
    if let Some(q) = pm.alloc(vm::phys::AllocFlags::NOBUSY) {
        let vb = pm.page_addr(q).unwrap();
        let t0 = time::rdtsc();
        for _ in 0..N {
            // SAFETY: our two distinct pages.
            unsafe {
                for i in 0..512 {
                    (vb as *mut u64).add(i).write_volatile((va as *const u64).add(i).read_volatile());
                }
            }
        }
        kprintln!("bench: kernel.copy.u64 {:.0} ns/page", ns(time::rdtsc() - t0));
        let t0 = time::rdtsc();
        for _ in 0..N {
            // SAFETY: our two distinct pages.
            unsafe { copy_sse(va, vb) };
        }
        kprintln!("bench: kernel.copy.sse {:.0} ns/page", ns(time::rdtsc() - t0));
        let t0 = time::rdtsc();
        for _ in 0..N {
            // SAFETY: our two distinct pages.
            unsafe { vm::fault::copy_page(va, vb) };
        }
        kprintln!("bench: kernel.copy.fault_path {:.0} ns/page", ns(time::rdtsc() - t0));
        let t0 = time::rdtsc();
        for _ in 0..N {
            // SAFETY: our page.
            unsafe { vm::fault::zero_page(vb) };
        }
        kprintln!("bench: kernel.zero.fault_path {:.0} ns/page", ns(time::rdtsc() - t0));
        pm.free(q);
    }
    pm.free(p);
    // The same on pages not touched for a while (cold: as in a fault).
    let mut pages = alloc::vec::Vec::new();
    while pages.len() < 4096 {
        match pm.alloc(vm::phys::AllocFlags::NOBUSY) {
            Some(p) => pages.push(p),
            None => break,
        }
    }
    let t0 = time::rdtsc();
    for &p in &pages {
        // SAFETY: our page.
        unsafe { zero_stosq(pm.page_addr(p).unwrap()) };
    }
    let n = pages.len().max(1) as u64;
    kprintln!("bench: kernel.zero.rep_stosq_cold {:.0} ns/page", time::tsc_to_us(time::rdtsc() - t0) as f64 * 1000.0 / n as f64);
    // Copying cold pages, as a copy-on-write fault does (the floor under
    // its `step.fill`): each of 2048 other pages into one more.
    let mut more = alloc::vec::Vec::new();
    while more.len() < 4096 {
        match pm.alloc(vm::phys::AllocFlags::NOBUSY) {
            Some(p) => more.push(p),
            None => break,
        }
    }
    let half = more.len() / 2;
    let t0 = time::rdtsc();
    for i in 0..half {
        // SAFETY: two distinct pages of ours.
        unsafe { vm::fault::copy_page(pm.page_addr(more[i]).unwrap(), pm.page_addr(more[half + i]).unwrap()) };
    }
    kprintln!(
        "bench: kernel.copy.fault_path_cold {:.0} ns/page",
        time::tsc_to_us(time::rdtsc() - t0) as f64 * 1000.0 / half.max(1) as f64
    );
    for p in pages.into_iter().chain(more) {
        pm.free(p);
    }
}
