//! The /proc files read in the kernel; user/procmaps.c reads them as a
//! program does, here and on Linux.

use ktest::ktest;

use super::{open, text as made};

/// The text of `path`, which must exist.
fn text(path: &[u8]) -> alloc::string::String {
    let bytes = made(path).expect("not a /proc path").expect("no such /proc file");
    alloc::string::String::from_utf8(bytes).expect("not text")
}

/// `/proc/vmstat` has the swap pager's counters as Linux's has them, one
/// "name value" line each.
#[ktest]
fn proc_vmstat_has_the_swap_counters() {
    let (pin, pout) = crate::mm::swap::pages_in_out();
    let text = text(b"/proc/vmstat");
    let value = |key: &str| {
        let line = text.lines().find(|l| l.split(' ').next() == Some(key)).expect(key);
        line[key.len() + 1..].parse::<u64>().unwrap()
    };
    assert!(value("pswpin") >= pin && value("pswpout") >= pout, "{text}");
    assert!(open(b"/proc/vmstat2").is_none());
    assert!(open(b"/tmp/x").is_none());
}

/// `/proc/meminfo`'s figures add up: free and cached pages within the
/// total, each line in Linux's layout (the figure ending in column 24).
#[ktest]
fn meminfo_adds_up() {
    let text = text(b"/proc/meminfo");
    let value = |key: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(key) && l[key.len()..].starts_with(':')).expect(key);
        assert_eq!(line.len(), 27, "{line:?}");
        line[key.len() + 1..line.len() - 3].trim().parse().unwrap()
    };
    let total = value("MemTotal");
    let pm = vm::global();
    assert_eq!(total, pm.pages().len() as u64 * 4);
    assert!(value("MemFree") <= total && value("MemFree") > 0);
    assert!(value("MemAvailable") >= value("MemFree"));
    assert!(value("Cached") + value("MemFree") <= total);
    assert!(value("SwapFree") <= value("SwapTotal"));
}

/// A process that is not there has no files; the kernel's limits are as
/// the VM keeps them.
#[ktest]
fn process_files_and_sysctls() {
    assert_eq!(open(b"/proc/999999/maps"), Some(Err(crate::syscall::errno::ENOENT)));
    assert_eq!(open(b"/proc/999999/pagemap"), Some(Err(crate::syscall::errno::ENOENT)));
    assert_eq!(open(b"/proc/1x/maps"), None);
    assert_eq!(text(b"/proc/sys/vm/max_map_count"), alloc::format!("{}\n", vm::map::DEFAULT_MAX_ENTRIES));
    assert_eq!(text(b"/proc/sys/vm/mmap_min_addr"), "4096\n");
    assert_eq!(text(b"/proc/sys/vm/overcommit_memory"), "0\n");
}

/// Memory paged out shows as swap: a space's pages pushed to swap by a
/// program twice the size of RAM count in smaps' `Swap`, not in `Rss`,
/// and their pagemap words say swapped, with a block; touched again they
/// are back, resident, with their contents, and the swap figure is 0.
#[ktest(timeout = 600)]
fn paged_out_memory_shows_as_swap() {
    use vm::map::Inherit;
    use vm::pmap::Prot;

    const PAGES: u64 = 256;
    const PAGE: u64 = vm::PAGE_SIZE as u64;
    let space = crate::mm::vmspace::AddressSpace::new().unwrap();
    let a = space.map.lock().map(None, PAGES * PAGE, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
    let touch = |write: bool| {
        let _on = space.activate();
        for i in 0..PAGES {
            let p = (a + i * PAGE) as *mut u64;
            // SAFETY: mapped read-write in the active space.
            unsafe {
                if write {
                    p.write_volatile(0x5A4D_0000 + i);
                } else {
                    assert_eq!(p.read_volatile(), 0x5A4D_0000 + i, "page {i} came back wrong");
                }
            }
        }
    };
    touch(true);
    let words = || -> alloc::vec::Vec<u64> {
        let map = space.map.lock();
        (0..PAGES).map(|i| super::pagemap::word(&space, &map, a + i * PAGE)).collect()
    };
    let before = super::maps::totals(&space).unwrap();
    assert_eq!((before.use_.rss, before.use_.swap), (PAGES * PAGE, 0));
    assert!(words().iter().all(|w| w >> 63 == 1 && w >> 62 & 1 == 0), "every page present, none swapped");

    let ram_mib = (vm::global().pages().len() as u64 * PAGE) >> 20;
    let st = crate::proc::tests::run_bin("swapper", &[&alloc::format!("{}", 2 * ram_mib), "one"]);
    assert_eq!(st, crate::proc::Status::Exited(0));
    let out = super::maps::totals(&space).unwrap();
    let w = words();
    let swapped = w.iter().filter(|w| *w >> 62 & 1 == 1).count() as u64;
    crate::kprintln!("paged out: {} of {PAGES} pages on swap, {} resident", out.use_.swap / PAGE, out.use_.rss / PAGE);
    assert!(out.use_.swap > PAGES * PAGE / 2, "only {} of {PAGES} pages on swap", out.use_.swap / PAGE);
    assert_eq!(swapped, out.use_.swap / PAGE, "pagemap and smaps count the same pages");
    assert!(out.use_.rss + out.use_.swap <= PAGES * PAGE, "a page counted twice");
    for word in w {
        assert!(word >> 63 == 0 || word >> 62 & 1 == 0, "present and swapped at once: {word:#x}");
    }

    touch(false);
    let back = super::maps::totals(&space).unwrap();
    assert_eq!((back.use_.rss, back.use_.swap), (PAGES * PAGE, 0), "not every page came back");
}
