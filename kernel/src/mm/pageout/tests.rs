//! Paging under memory pressure: programs larger than RAM, swap I/O errors,
//! wired memory, and running out of memory and swap. Each is followed by
//! the runner's invariant check and free-page count.

use core::sync::atomic::Ordering;

use ktest::ktest;
use vm::failpoint::{Action, SWAP_READ, SWAP_WRITE};
use vm::map::Inherit;
use vm::pmap::Prot;

use super::COUNTERS;
use crate::proc::tests::{run_bin, run_bin_within};
use crate::proc::{SIGKILL, Status};

const SIGBUS: u8 = 7;

/// Managed memory in MiB.
fn ram_mib() -> u64 {
    (vm::global().pages().len() as u64 * 4096) >> 20
}

/// The swap space, which these tests need (the test boots attach a disk).
fn swap() -> &'static crate::mm::swap::Space {
    crate::mm::swap::swap().expect("no swap disk: the test boots attach one (SWAP_SIZE)")
}

/// `swapper` over three times RAM: alone, as two processes at once, and
/// with fork and copy-on-write; every byte reads back as written.
#[ktest(timeout = 1200)]
fn programs_three_times_larger_than_ram() {
    let mib = 3 * ram_mib();
    assert!((swap().pages() * 4096) >> 20 >= mib, "swap ({} pages) smaller than {mib} MiB", swap().pages());
    let (in0, out0) = crate::mm::swap::pages_in_out();
    let arg = alloc::format!("{mib}");
    for mode in ["one", "two", "fork"] {
        let t0 = crate::kern::time::ticks();
        assert_eq!(run_bin_within("swapper", &[&arg, mode], 360), Status::Exited(0), "swapper {mib} {mode}");
        let ms = (crate::kern::time::ticks() - t0) * 1000 / crate::kern::time::HZ;
        crate::kprintln!("three times RAM, {mode}: {ms} ms");
    }
    let (in1, out1) = crate::mm::swap::pages_in_out();
    let (out, inn) = (out1 - out0, in1 - in0);
    crate::kprintln!("three times RAM ({mib} MiB): {out} pages paged out, {inn} paged in");
    assert!(out > 3 * (mib << 8) / 2, "only {out} pages paged out for {mib} MiB three times");
    assert!(inn > 0, "nothing was paged in");
    assert_eq!(swap().avail(), swap().pages(), "swap blocks left allocated after the programs ended");
}

/// Swap writes failing one time in five: the pages stay dirty and
/// resident, are written again later, and the program reads back every
/// byte.
#[ktest(timeout = 600)]
fn swap_write_errors_lose_nothing() {
    let mib = 2 * ram_mib();
    let failed = COUNTERS.write_failed.load(Ordering::Relaxed);
    SWAP_WRITE.set(Action::Probability { ppm: 200_000, seed: 5 });
    let st = run_bin("swapper", &[&alloc::format!("{mib}"), "one"]);
    SWAP_WRITE.set(Action::Off);
    assert_eq!(st, Status::Exited(0));
    let failed = COUNTERS.write_failed.load(Ordering::Relaxed) - failed;
    crate::kprintln!("swap write errors: {failed} pages kept after a failed write; nothing lost");
    assert!(failed > 0, "no swap write failed at 20 %");
    assert_eq!(swap().avail(), swap().pages());
}

/// Swap reads failing: the program that needs its paged-out memory back
/// ends with SIGBUS (a clear error, not a hang or a panic), and its pages
/// and swap blocks are all freed (the runner counts the pages after).
#[ktest(timeout = 600)]
fn swap_read_errors_end_the_program_cleanly() {
    let mib = 2 * ram_mib();
    SWAP_READ.set(Action::Always);
    let st = run_bin("swapper", &[&alloc::format!("{mib}"), "one"]);
    SWAP_READ.set(Action::Off);
    assert_eq!(st, Status::Signaled(SIGBUS));
    assert_eq!(swap().avail(), swap().pages(), "swap blocks left allocated");
}

/// Wired (mlocked) memory stays resident and is never written to swap
/// while a program twice the size of RAM pages everything else out.
#[ktest(timeout = 600)]
fn wired_memory_is_never_paged_out() {
    const PAGES: u64 = 256;
    let space = crate::mm::vmspace::AddressSpace::new().unwrap();
    let a = space.map.lock().map(None, PAGES * 4096, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
    vm::fault::wire(&space.map, a, a + PAGES * 4096).unwrap();
    {
        let _on = space.activate();
        for i in 0..PAGES {
            // SAFETY: mapped read-write and wired in the active space.
            unsafe { ((a + i * 4096) as *mut u64).write_volatile(0x5117_0000 + i) };
        }
    }
    let out0 = crate::mm::swap::pages_in_out().1;
    assert_eq!(run_bin("swapper", &[&alloc::format!("{}", 2 * ram_mib()), "one"]), Status::Exited(0));
    assert!(crate::mm::swap::pages_in_out().1 - out0 > ram_mib() << 8, "the program did not page much out");
    let pmap = space.map.lock().pmap().clone();
    for i in 0..PAGES {
        let va = a + i * 4096;
        let (pa, _) = pmap.extract(va).unwrap_or_else(|| panic!("wired page {i} is no longer mapped"));
        let page = vm::global().page_of(pa).unwrap();
        assert!(page.wired(), "page {i} lost its wiring");
        assert!(pmap.wired_at(va));
    }
    let object = space.map.lock().entry(a).and_then(|e| e.object.clone()).expect("the wired range has an object");
    assert_eq!(object.kind(), vm::object::ObjectKind::Anonymous, "the wired object was paged out (it became a swap object)");
    {
        let _on = space.activate();
        for i in 0..PAGES {
            // SAFETY: as above.
            assert_eq!(unsafe { ((a + i * 4096) as *const u64).read_volatile() }, 0x5117_0000 + i);
        }
    }
    drop(object);
    drop(space);
}

/// Memory given up with MADV_FREE (`VmMap::free_lazily`) after it had been
/// to swap and back: under pressure the page daemon frees it with nothing
/// written (clean, and its swap copies gone: rule 14's one exception), and
/// it reads as zeros; the pages written again in between keep their data.
#[ktest(timeout = 900)]
fn memory_freed_lazily_goes_under_pressure_unless_written_again() {
    const PAGES: u64 = 256;
    const KEPT: u64 = 16;
    let space = crate::mm::vmspace::AddressSpace::new().unwrap();
    let a = space.map.lock().map(None, PAGES * 4096, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
    let word = |i: u64| (a + i * 4096) as *mut u64;
    let fill = |tag: u64| {
        let _on = space.activate();
        for i in 0..PAGES {
            // SAFETY: mapped read-write in the active space.
            unsafe { word(i).write_volatile(tag + i) };
        }
    };
    fill(0x1000);
    // Out to swap, back in, and written: a swap object's dirty pages.
    let mib = alloc::format!("{}", 2 * ram_mib());
    assert_eq!(run_bin("swapper", &[&mib, "one"]), Status::Exited(0));
    fill(0x2000);
    let object = space.map.lock().entry(a).and_then(|e| e.object.clone()).expect("an object");
    assert_eq!(object.kind(), vm::object::ObjectKind::Swap, "the range was not paged out");
    assert_eq!(space.map.lock().free_lazily(a, a + PAGES * 4096), PAGES);
    {
        let _on = space.activate();
        for i in 0..KEPT {
            // SAFETY: as above.
            unsafe { word(i).write_volatile(0x3000 + i) };
        }
    }
    assert_eq!(run_bin("swapper", &[&mib, "one"]), Status::Exited(0));
    let _on = space.activate();
    for i in 0..PAGES {
        // SAFETY: as above.
        let v = unsafe { word(i).read_volatile() };
        if i < KEPT {
            assert_eq!(v, 0x3000 + i, "page {i} was written again: kept");
        } else {
            assert_eq!(v, 0, "page {i} was given up: freed, and zero");
        }
    }
    drop(_on);
    drop(object);
    drop(space);
}

/// Out of memory with swap full: the largest process is killed, once, with
/// a message; a small program that runs meanwhile completes, and the
/// kernel goes on.
#[ktest(timeout = 600)]
fn out_of_memory_and_swap_kills_the_largest() {
    use crate::proc::spawn_image;
    static NAP: u8 = 0;
    // Leave 32 MiB of swap.
    let sw = swap();
    assert_eq!(sw.avail(), sw.pages(), "swap in use before the test");
    let keep = 32 << 8;
    assert_eq!(sw.fill(0, sw.pages() - keep), sw.pages() - keep);
    let kills = COUNTERS.oom_kills.load(Ordering::Relaxed);
    // Both programs' images are looked up now, before memory is short.
    let swapper = crate::proc::tests::bin("swapper");
    let hog = spawn_image("swapper", swapper.clone(), &["/bin/swapper", &alloc::format!("{}", 8 * ram_mib()), "one"]).unwrap();
    // Once the hog has filled memory and swap, a small program needs pages.
    while sw.avail() > keep / 8 && hog.status().is_none() {
        crate::kern::sched::sleep_until(&NAP as *const u8 as usize, crate::kern::time::ticks() + 10, || true);
    }
    // Starting it needs pages too: it waits for them (the kill frees them)
    // instead of failing.
    let small = spawn_image("swapper", swapper, &["/bin/swapper", "8", "one"])
        .expect("starting a process waits for memory; it does not fail");
    let (small_st, hog_st) = (small.wait(), hog.wait());
    sw.free(0, sw.pages() - keep);
    crate::kprintln!(
        "out of memory and swap: {} kill(s) by the pageout daemon",
        COUNTERS.oom_kills.load(Ordering::Relaxed) - kills
    );
    assert_eq!(hog_st, Status::Signaled(SIGKILL), "the largest process is the one killed");
    assert_eq!(small_st, Status::Exited(0), "the small program ran to its end");
    assert_eq!(sw.avail(), sw.pages());
}

/// Takes every page a normal allocation may have, leaving the reserve.
fn take_all_pages() -> alloc::vec::Vec<&'static vm::page::Page> {
    let pm = vm::global();
    let mut held = alloc::vec::Vec::with_capacity(pm.pages().len());
    while let Some(p) = pm.alloc(vm::phys::AllocFlags::UNMANAGED) {
        held.push(p);
    }
    held
}

/// Gives `held` back after `ms` milliseconds, from another thread (as the
/// pageout daemon would free pages). Returns the thread, to join.
fn give_back_later(held: alloc::vec::Vec<&'static vm::page::Page>, ms: u64) -> crate::kern::sched::ThreadId {
    static NAP: u8 = 0;
    crate::kern::sched::spawn("give-back", move || {
        crate::kern::sched::sleep_until(
            &NAP as *const u8 as usize,
            crate::kern::time::ticks() + ms * crate::kern::time::HZ / 1000,
            || true,
        );
        for p in held {
            vm::global().free(p);
        }
    })
    .expect("a thread for the test")
}

/// Creating a process while no page can be had waits for memory, as a
/// fault does, instead of failing: a spawn (whose program then forks
/// twenty times), and a fork of an address space. The allocation that does
/// not wait (`X86Pmap::new`) is refused meanwhile, which shows the shortage
/// is real.
#[ktest(timeout = 120)]
fn process_creation_waits_for_memory() {
    use crate::mm::vmspace::AddressSpace;

    let held = take_all_pages();
    assert!(crate::arch::pmap::X86Pmap::new().is_err(), "a page could still be had after taking all of them");
    let n = held.len();
    let t = give_back_later(held, 300);
    let st = run_bin("fork", &[]);
    crate::kern::sched::join(t);
    assert_eq!(st, Status::Exited(0), "the program started while memory was short ran");

    let space = AddressSpace::new().unwrap();
    let held = take_all_pages();
    assert!(crate::arch::pmap::X86Pmap::new().is_err());
    let t = give_back_later(held, 300);
    let child = space.fork().expect("fork waits for memory");
    crate::kern::sched::join(t);
    crate::kprintln!("process creation under shortage: waited for {n} held pages to come back");
    drop(child);
    drop(space);
}

/// Under memory pressure the pageout daemon gives the kernel heap's empty
/// slabs back before it scans the queues (FreeBSD's `uma_reclaim` in
/// `vm_pageout_lowmem`): a size class that keeps an empty slab after a
/// burst of frees loses it once free memory falls below the target.
#[ktest(timeout = 60)]
fn the_daemon_reclaims_empty_heap_slabs() {
    use alloc::boxed::Box;
    use alloc::vec::Vec;

    let class = |s: &crate::kern::heap::HeapStats| *s.classes.iter().find(|c| c.size == 2048).expect("a 2048-byte class");
    // Seventy objects of 2048 bytes fill ten slabs; freed, the class keeps
    // one of them empty.
    let boxes: Vec<Box<[u8; 2048]>> = (0..70).map(|i| Box::new([i as u8; 2048])).collect();
    drop(core::hint::black_box(boxes));
    let before = class(&crate::kern::heap::stats());
    assert!(before.empty >= 1, "the class kept no empty slab: {before:?}");
    let reclaimed = COUNTERS.heap_reclaimed.load(Ordering::Relaxed);
    // Below the target (every ordinary page taken): the daemon runs.
    let pm = vm::global();
    let mut held = Vec::with_capacity(pm.pages().len());
    while let Some(p) = pm.alloc(vm::phys::AllocFlags::UNMANAGED) {
        held.push(p);
    }
    static NAP: u8 = 0;
    let deadline = crate::kern::time::ticks() + 5 * crate::kern::time::HZ;
    while class(&crate::kern::heap::stats()).empty > 0 && crate::kern::time::ticks() < deadline {
        crate::kern::sched::sleep_until(&NAP as *const u8 as usize, crate::kern::time::ticks() + 10, || true);
    }
    for p in held {
        pm.free(p);
    }
    let after = class(&crate::kern::heap::stats());
    assert_eq!(after.empty, 0, "the empty slab is still there: {after:?}");
    assert!(
        COUNTERS.heap_reclaimed.load(Ordering::Relaxed) >= reclaimed + before.empty as u64 * before.slab_pages as u64,
        "the daemon did not count the pages it reclaimed"
    );
}

/// The out-of-memory clock runs only during a shortage: a shortage that
/// comes after a quiet spell starts it afresh. (It once kept the time of
/// the last progress of an earlier shortage, and the first pass after 30 s
/// of plenty killed a process with all of swap free, before the laundry
/// thread had been woken.)
#[ktest]
fn the_oom_clock_starts_with_each_shortage() {
    use super::{OOM_TICKS, STUCK_TICKS, Verdict, Watch};
    let mut w = Watch::new();
    // A shortage, eased without the daemon's help.
    w.begin(1_000);
    assert_eq!(w.pass(1_010, false, false), Verdict::Wait);
    w.no_shortage();
    // Thirty seconds later, another: its first passes wait.
    let t = 31_000;
    w.begin(t);
    assert_eq!(w.pass(t + 5, false, false), Verdict::Wait, "a new shortage inherited an old clock");
    w.begin(t + 10);
    assert_eq!(w.pass(t + STUCK_TICKS - 1, false, false), Verdict::Wait);
    // Ten seconds without progress with swap free: stuck, reported.
    assert_eq!(w.pass(t + STUCK_TICKS, false, false), Verdict::Stuck(STUCK_TICKS));
    // Timed afresh after a kill.
    assert_eq!(w.pass(t + STUCK_TICKS + 1, false, false), Verdict::Wait);
    w.no_shortage();

    // Swap full: half a second without progress, and progress resets it.
    let t = 60_000;
    w.begin(t);
    assert_eq!(w.pass(t + OOM_TICKS - 1, false, true), Verdict::Wait);
    assert_eq!(w.pass(t + OOM_TICKS, true, true), Verdict::Wait);
    assert_eq!(w.pass(t + 2 * OOM_TICKS - 1, false, true), Verdict::Wait);
    assert_eq!(w.pass(t + 2 * OOM_TICKS, false, true), Verdict::Kill);
    assert_eq!(w.pass(t + 2 * OOM_TICKS + 1, false, true), Verdict::Wait);
}
