//! In-kernel benchmarks (`mode=bench`), printed as `bench: <name> <value> <unit>`.
//!
//! Figures that need a clock outside the guest (boot time, the real timer
//! rate) are measured by the host from the times at which these lines arrive;
//! the `ktick:` lines exist for that.

use crate::{kprintln, time};

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
    page_allocator();
    faults();
    zeroing();
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
        if live.len() < 1024 && (live.is_empty() || r % 3 != 0) {
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
/// mapping), in ns per fault; then the parts a fault is made of, measured
/// alone: trap entry and exit, page allocation, zeroing, mapping.
pub fn faults() {
    use core::sync::atomic::Ordering;
    use vm::map::Inherit;
    use vm::pmap::{Pmap, Prot};

    use crate::vmspace::{AddressSpace, FAULT_TSC, FAULTS};

    const SIZE: u64 = 64 << 20;
    const PAGE: u64 = 4096;
    let per_fault = |tsc: u64, faults: u64| time::tsc_to_us(tsc) as f64 * 1000.0 / faults.max(1) as f64;

    vm::fault::set_step_clock(time::rdtsc);
    let steps = || {
        let t = &vm::fault::STEP_TIMES;
        [&t.lookup, &t.find_page, &t.cow, &t.enter, &t.finish].map(|a| a.load(Ordering::Relaxed))
    };
    let print_steps = |name: &str, before: [u64; 5], n: u64| {
        let after = steps();
        for (i, step) in ["lookup", "find_page", "cow", "enter", "finish"].iter().enumerate() {
            kprintln!("bench: kernel.{name}.step.{step} {:.0} ns/fault", per_fault(after[i] - before[i], n));
        }
    };

    let Ok(parent) = AddressSpace::new() else { return };
    let a = parent.map.lock().map(None, SIZE, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
    // Writes one byte to every page of the range in `space` and reports the
    // faults that took.
    let write_all = |name: &str, space: &alloc::sync::Arc<AddressSpace>, v: u8| {
        let _on = space.activate();
        let f0 = FAULTS.load(Ordering::Relaxed);
        let v0 = FAULT_TSC.load(Ordering::Relaxed);
        let s0 = steps();
        let t0 = time::rdtsc();
        for i in 0..SIZE / PAGE {
            // SAFETY: the range is mapped read-write (perhaps copy-on-write)
            // in the active space.
            unsafe { ((a + i * PAGE) as *mut u8).write_volatile(v ^ i as u8) };
        }
        let n = FAULTS.load(Ordering::Relaxed) - f0;
        kprintln!("bench: kernel.{name} {:.0} ns/fault", per_fault(time::rdtsc() - t0, n));
        kprintln!("bench: kernel.{name}.in_vm_fault {:.0} ns/fault", per_fault(FAULT_TSC.load(Ordering::Relaxed) - v0, n));
        print_steps(name, s0, n);
    };
    write_all("zero_fill", &parent, 0);

    let Ok(child) = parent.fork() else { return };
    write_all("cow", &child, 0xFF);
    drop(child);

    let obj = parent.map.lock().entry(a).and_then(|e| e.object.clone());
    if let (Some(obj), Ok(third)) = (obj, AddressSpace::new()) {
        obj.reference();
        let b = third.map.lock().map(None, SIZE, Prot::READ, Prot::READ, Inherit::Share, Some((obj, 0)), false).unwrap();
        let _on = third.activate();
        let f0 = FAULTS.load(Ordering::Relaxed);
        let t0 = time::rdtsc();
        let mut sum = 0u64;
        for i in 0..SIZE / PAGE {
            // SAFETY: mapped read-only in the active space; pages resident.
            sum += unsafe { ((b + i * PAGE) as *const u8).read_volatile() } as u64;
        }
        let n = FAULTS.load(Ordering::Relaxed) - f0;
        core::hint::black_box(sum);
        kprintln!("bench: kernel.soft_fault {:.0} ns/fault", per_fault(time::rdtsc() - t0, n));
        kprintln!("bench: kernel.soft_fault_pages_per_fault {:.1} pages", (SIZE / PAGE) as f64 / n.max(1) as f64);
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
    let pm = vm::global();
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
            unsafe { zero_stosq(va) };
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
    drop(parent);
}

/// # Safety
/// `p` is a writable page.
unsafe fn zero_stosq(p: *mut u8) {
    // SAFETY: writes 512 qwords at `p` (caller's page).
    unsafe { core::arch::asm!("rep stosq", inout("rcx") 512usize => _, inout("rdi") p => _, in("rax") 0u64, options(nostack)) };
}

/// Zeroing a page three ways (under TCG the choice matters several times over).
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
        unsafe { core::arch::asm!("rep stosb", inout("rcx") 4096usize => _, inout("rdi") va => _, in("al") 0u8, options(nostack)) };
    }
    kprintln!("bench: kernel.zero.rep_stosb {:.0} ns/page", ns(time::rdtsc() - t0));
    let t0 = time::rdtsc();
    for _ in 0..N {
        let q = va as *mut u64;
        for i in 0..512 {
            // SAFETY: within our page.
            unsafe { q.add(i).write_volatile(0) };
        }
    }
    kprintln!("bench: kernel.zero.u64_stores {:.0} ns/page", ns(time::rdtsc() - t0));
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
    for p in pages {
        pm.free(p);
    }
}
