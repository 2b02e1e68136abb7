//! What `./run-qemu.sh` shows: the kernel up and its basic services working,
//! then init running the demo program (`user/demo.c`: memory touched, a fork
//! with copy-on-write keeping parent and child apart, a child killed by
//! SIGSEGV while the parent goes on), and the VM counters at the end. (File
//! mapping and paging to swap join it with the pagers.)
//!
//! `mode=run` is `./run-qemu.sh run <program> [args]`: init runs the program
//! handed in through fw_cfg and the kernel reports its exit status to the
//! host on the second serial port.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::kern::{heap, memory, time};
use crate::kprintln;

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
    kprintln!("heap: {} KiB free; a 100000-element Vec took {} KiB, sum {}", free0 / 1024, (used1 - used0) / 1024, b);
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
    kprintln!();
    let before = Before::now();
    kprintln!("init: starting /bin/init /bin/demo");
    match crate::proc::start_init(&["init", "/bin/demo"]) {
        Ok(init) => {
            let status = init.wait();
            kprintln!("init: {}", crate::syscall::proc::status_line(status));
        }
        Err(e) => kprintln!("init: cannot start: {e:?}"),
    }
    kprintln!("{}", before.every_process_gone());
    print_counters();
    crate::kern::heap::print_stats();
    kprintln!("demo: done");
}

/// Free pages and heap use before init starts, for the line that compares
/// them with what is left when every process is gone.
struct Before {
    free: u64,
    heap: usize,
}

impl Before {
    fn now() -> Before {
        vm::drain_caches();
        heap::reclaim();
        Before { free: vm::global().free_count(), heap: heap::usage().0 }
    }

    /// "vm: every process gone: ...; page invariants: hold" (or BROKEN):
    /// what the host's checks read once init has ended. Files read stay
    /// cached in their vnodes' objects, so the counts need not be back.
    fn every_process_gone(&self) -> alloc::string::String {
        let pm = vm::global();
        vm::drain_caches();
        heap::reclaim();
        alloc::format!(
            "vm: every process gone: {} pages free, {} before init; heap {} bytes in use, {} before; page invariants: {}",
            pm.free_count(),
            self.free,
            heap::usage().0,
            self.heap,
            if crate::kern::sched::with_other_cpus_parked(|| vm::invariants::check(pm)).is_empty() { "hold" } else { "BROKEN" }
        )
    }
}

/// The VM counters: faults by kind, pages by state.
pub fn print_counters() {
    use vm::page::Queue;

    let k = &crate::mm::vmspace::FAULT_KINDS;
    kprintln!(
        "vm counters: faults: {} zero-fill, {} copy-on-write, {} paged in, {} soft",
        k.zero_fill.get(),
        k.copy_on_write.get(),
        k.paged_in.get(),
        k.soft.get()
    );
    let pm = vm::global();
    let wired = pm.pages().iter().filter(|p| p.wired()).count();
    kprintln!(
        "vm counters: pages: {} free, {} active, {} inactive, {} laundry, {} wired",
        pm.free_count(),
        pm.queue_count(Queue::Active),
        pm.queue_count(Queue::Inactive),
        pm.queue_count(Queue::Laundry),
        wired
    );
}

/// `run.report=on`: `mode=run` ends with the line of [`Before::every_process_gone`]
/// (set before the program starts) and the lock classes waited for meanwhile
/// (`vm::witness::write_contention`). (A)
pub static RUN_REPORT: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// `mode=run`: runs the program handed in by the host under init, and
/// reports its exit status (the shell's way: 128 + signal when killed).
pub fn run_program() {
    use alloc::string::{String, ToString};

    // As large as memory allows: the program is read into pages of kernel
    // virtual memory, not the heap.
    let program = match crate::dev::fw_cfg::read_file("opt/run/program", 1 << 30) {
        Ok(p) => p.leak(),
        Err(e) => {
            kprintln!("run: no program handed in ({e:?})");
            crate::dev::qemu::report_status(127);
            return;
        }
    };
    // The arguments: NUL-separated, argv[0] first.
    let args = crate::dev::fw_cfg::read_file("opt/run/args", 1 << 20).map(|a| a.as_slice().to_vec()).unwrap_or_default();
    let mut argv: Vec<String> = args.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    // Each argument ends with a NUL: the piece after the last one is empty.
    argv.pop();
    if argv.is_empty() {
        argv.push("program".into());
    }
    let name = argv[0].rsplit('/').next().unwrap_or("program").to_string();
    if let Ok(input) = crate::dev::fw_cfg::read_file("opt/run/stdin", 64 << 20) {
        crate::fs::console::set_input(input.leak());
    }
    let path = alloc::format!("/run/{name}");
    crate::proc::programs::add(path.clone(), program);
    let mut init_argv: Vec<&str> = alloc::vec!["init", &path];
    init_argv.extend(argv.iter().skip(1).map(|s| s.as_str()));
    let before = Before::now();
    vm::witness::reset_contention();
    // `profile=on`: where every CPU's time went while the program ran
    // (user time shows as "(no symbol)", idle time as the idle loop).
    let profiling = super::profile::WANTED.load(core::sync::atomic::Ordering::Relaxed);
    if profiling {
        super::profile::reset();
        super::profile::set(true);
    }
    let code = match crate::proc::start_init(&init_argv) {
        Ok(init) => init.wait().shell_code(),
        Err(e) => {
            kprintln!("run: cannot start init: {e:?}");
            127
        }
    };
    if profiling {
        super::profile::report("run", 30);
    }
    log::info!("run: {path} ended with status {code}");
    if RUN_REPORT.load(core::sync::atomic::Ordering::Relaxed) {
        kprintln!("{}", before.every_process_gone());
        // Which locks the program's threads and processes waited for.
        let mut locks = String::new();
        let _ = vm::witness::write_contention(&mut locks);
        kprintln!("{}", locks.trim_end());
    }
    crate::dev::qemu::report_status(code);
}
