//! What `./run-qemu.sh` shows: the kernel up and its basic services working,
//! then the VM at work: zero-fill faults, a fork and copy-on-write, with the
//! counters. (File mapping and paging to swap join it with the pagers.)

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::{heap, kprintln, memory, time};

pub fn run() {
    kprintln!();
    kprintln!("  a BSD-style virtual-memory kernel for x86_64");
    kprintln!();
    let s = memory::summary();
    kprintln!(
        "memory: {} MiB usable in {} regions (of {} in the map); highest usable address {:#x}",
        s.usable_bytes >> 20,
        s.usable_regions,
        s.regions,
        s.highest_usable
    );

    for r in memory::EARLY_FRAMES.lock().taken() {
        kprintln!("early frames: {:#x}..{:#x} taken at boot (heap, page array)", r.start, r.end);
    }
    let (used0, free0) = heap::usage();
    let v: Vec<u64> = (0..100_000).collect();
    let b = Box::new(v.iter().sum::<u64>());
    let (used1, _) = heap::usage();
    kprintln!(
        "heap: {} KiB free; a 100000-element Vec took {} KiB, sum {}",
        free0 / 1024,
        (used1 - used0) / 1024,
        b
    );
    drop(v);
    drop(b);

    let t0 = time::ticks();
    let tsc0 = time::rdtsc();
    while time::ticks() < t0 + time::HZ / 10 {
        x86_64::instructions::hlt();
    }
    let us = time::tsc_to_us(time::rdtsc() - tsc0);
    kprintln!(
        "timer: {} ticks in {} us ({} Hz nominal); uptime {} ms",
        time::ticks() - t0,
        us,
        time::HZ,
        time::uptime_us() / 1000
    );
    vm_demo();
    kprintln!("demo: done");
}

/// Zero-fill and copy-on-write through real page faults, with counters.
fn vm_demo() {
    use core::sync::atomic::Ordering;

    use vm::map::Inherit;
    use vm::pmap::Prot;

    use crate::vmspace::{AddressSpace, FAULTS};

    const PAGES: u64 = 256;
    const PAGE: u64 = 4096;
    let pm = vm::global();
    vm::drain_caches();
    let free0 = pm.free_count();
    let Ok(parent) = AddressSpace::new() else {
        kprintln!("vm: no memory for an address space");
        return;
    };
    let Ok(a) = parent.map.lock().map(None, PAGES * PAGE, Prot::RW, Prot::ALL, Inherit::Copy, None, false) else {
        return;
    };
    let f0 = FAULTS.load(Ordering::Relaxed);
    {
        let _on = parent.activate();
        for i in 0..PAGES {
            // SAFETY: mapped read-write in the active address space.
            unsafe { ((a + i * PAGE) as *mut u64).write_volatile(i) };
        }
    }
    let f1 = FAULTS.load(Ordering::Relaxed);
    kprintln!("vm: wrote {PAGES} pages of fresh memory: {} zero-fill faults, {} pages in use", f1 - f0, free0 - pm.free_count());
    let Ok(child) = parent.fork() else { return };
    {
        let _on = child.activate();
        let mut same = 0;
        for i in 0..PAGES {
            // SAFETY: mapped copy-on-write in the active address space.
            same += unsafe { ((a + i * PAGE) as *const u64).read_volatile() == i } as u64;
        }
        for i in 0..PAGES / 2 {
            // SAFETY: as above; the writes copy the pages.
            unsafe { ((a + i * PAGE) as *mut u64).write_volatile(1000 + i) };
        }
        kprintln!("vm: fork: the child read {same} of {PAGES} pages as the parent wrote them, then wrote half of them");
    }
    let f2 = FAULTS.load(Ordering::Relaxed);
    let mut kept = 0;
    {
        let _on = parent.activate();
        for i in 0..PAGES {
            // SAFETY: mapped in the active address space.
            kept += unsafe { ((a + i * PAGE) as *const u64).read_volatile() == i } as u64;
        }
    }
    kprintln!(
        "vm: {} faults in the child (copy-on-write and read-only maps); the parent still sees {kept} of {PAGES} pages unchanged",
        f2 - f1
    );
    drop(child);
    drop(parent);
    crate::pmap::drain();
    vm::drain_caches();
    kprintln!(
        "vm: address spaces gone: {} pages free, {} at the start; page invariants: {}",
        pm.free_count(),
        free0,
        if vm::invariants::check(pm).is_empty() { "hold" } else { "BROKEN" }
    );
}
