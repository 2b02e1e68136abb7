//! A page-out write against a new dirtying of the page (rule 16): the
//! laundry write-protects the page's mappings, writes it, and frees it if
//! it is still marked and unused when the write completes; a thread
//! stores to the page through its mapping meanwhile (faulting when the
//! mapping has been write-protected). Whatever the order, the store is
//! not lost: a read afterwards sees it, and a clean page holds what its
//! pager holds.

extern crate std;

use alloc::sync::Arc;

use loom::thread;

use super::{Kept, check_clean, env_with_memory};
use crate::fault::fault;
use crate::map::{Inherit, MapLock, VmMap};
use crate::object::{ObjectKind, Pager, PagerResult, VmObject};
use crate::page::{Page, PageFlags};
use crate::pageout::scan_laundry;
use crate::phys::PhysMem;
use crate::pmap::soft::{SoftMachine, SoftPmap};
use crate::pmap::{PageMappings, Prot};
use crate::sync::Mutex;
use crate::sync::model::{Break, DEFAULT_PREEMPTIONS, check_with};

const P: u64 = crate::PAGE_SIZE as u64;

/// A file's pager whose store is one byte per page: the first byte of
/// each page written, which a read gives back.
struct Disk {
    pm: &'static PhysMem,
    bytes: Mutex<[u8; 4]>,
}

impl Disk {
    fn first_byte(&self, page: &Page) -> *mut u8 {
        self.pm.page_addr(page).expect("the model's pages have contents")
    }
}

impl Pager for Disk {
    fn has_page(&self, pindex: u64) -> Option<(u64, u64)> {
        (pindex < 4).then_some((0, 0))
    }

    fn get_page(&self, _obj: &VmObject, page: &'static Page) -> PagerResult {
        let b = self.bytes.lock()[page.pindex() as usize];
        // SAFETY: the page is exclusively busy for the read; its frame is
        // the model's memory.
        unsafe { *self.first_byte(page) = b };
        page.set_all_valid();
        PagerResult::Ok
    }

    fn put_pages(&self, _obj: &VmObject, pages: &[&'static Page]) -> usize {
        for p in pages {
            // SAFETY: as above, exclusively busy and write-protected.
            let b = unsafe { *self.first_byte(p) };
            self.bytes.lock()[p.pindex() as usize] = b;
        }
        pages.len()
    }
}

/// A store of `v` at `va` as a CPU makes it: through the pmap, faulting
/// when the mapping is missing or read-only.
fn store(map: &MapLock, pmap: &SoftPmap, pm: &PhysMem, va: u64, v: u8) {
    loop {
        // SAFETY: the mapping is writable and its page valid, held by the
        // translation while the store completes.
        let done = pmap.access(va, Prot::WRITE, |p| unsafe { *pm.page_addr(p).unwrap() = v });
        if done.is_ok() {
            return;
        }
        fault(map, va, Prot::WRITE, false).expect("a store to a file's page");
    }
}

/// The byte at `va`, faulting it in as needed.
fn load(map: &MapLock, pmap: &SoftPmap, pm: &PhysMem, va: u64) -> u8 {
    loop {
        // SAFETY: as in `store`, for a load.
        if let Ok(b) = pmap.access(va, Prot::READ, |p| unsafe { *pm.page_addr(p).unwrap() }) {
            return b;
        }
        fault(map, va, Prot::READ, false).expect("a load from a file's page");
    }
}

fn write_back_against_a_store() {
    let env = env_with_memory(4);
    let pm = env.pm;
    let free = pm.free_count();
    let machine: &'static SoftMachine = alloc::boxed::Box::leak(alloc::boxed::Box::new(SoftMachine::new()));
    let env = crate::object::VmEnv { mappings: machine, ..env };
    let pmap = machine.new_pmap();
    let map = Arc::new(MapLock::new(VmMap::new(P, 1 << 47, pmap.clone(), env)));
    let file = VmObject::new(ObjectKind::Vnode, 4, env);
    let disk = Arc::new(Disk { pm, bytes: Mutex::new([0; 4]) });
    file.lock().set_pager(disk.clone());
    let a = map.lock().map(None, P, Prot::RW, Prot::RW, Inherit::Share, Some((file.clone(), 0)), false).unwrap();
    let kept = Kept::new((map, file));
    let (map, file) = &*kept;
    // The page: written (1), dirty, in the laundry, not referenced since.
    store(map, &pmap, pm, a, 1);
    let page = file.lock().lookup(0).unwrap();
    machine.ts_referenced(page);
    page.clear_flags(PageFlags::REFERENCED);
    pm.launder(page);
    let daemon = thread::spawn(move || {
        scan_laundry(pm, machine, 1, &|| None);
    });
    store(map, &pmap, pm, a, 2);
    daemon.join().unwrap();
    // A clean resident page holds what the disk holds.
    let clean_but_not_written = {
        let l = file.lock();
        l.lookup(0).filter(|p| p.dirty() == 0 && !machine.is_modified(p)).map(|p| {
            // SAFETY: nobody else runs now; the page is resident.
            let b = unsafe { *pm.page_addr(p).unwrap() };
            (b, disk.bytes.lock()[0])
        })
    };
    if let Some((mem, on_disk)) = clean_but_not_written {
        assert_eq!(mem, on_disk, "rule 16: a clean page differs from its copy on disk (a store was lost at the write's end)");
    }
    assert_eq!(load(map, &pmap, pm, a), 2, "rule 16: the store made during the write-back is lost");
    let v = crate::invariants::check(pm);
    assert!(v.is_empty(), "invariant violations: {v:?}");
    map.lock().unmap(a, a + P).unwrap();
    drop(kept.release());
    pm.drain_cache();
    check_clean(pm, free);
}

#[test]
fn laundry_write_completing_against_a_new_dirtying() {
    check_with("laundry_write_completing_against_a_new_dirtying", DEFAULT_PREEMPTIONS, &[], write_back_against_a_store);
}

/// Broken: the laundry writes the page without write-protecting its
/// mappings first; a store during the write is cleared with the modified
/// bits when the write completes.
#[test]
#[should_panic(expected = "rule 16")]
fn broken_laundry_writes_without_write_protect() {
    check_with(
        "broken_laundry_writes_without_write_protect",
        DEFAULT_PREEMPTIONS,
        &[Break::LaunderWithoutWriteProtect],
        write_back_against_a_store,
    );
}
