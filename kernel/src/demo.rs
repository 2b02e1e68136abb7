//! What `./run-qemu.sh` shows: the kernel up and its basic services working.
//! Later work adds the VM demo (file mapping, copy-on-write, paging to swap).

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
    kprintln!("demo: done");
}
