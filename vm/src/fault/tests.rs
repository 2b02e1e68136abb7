//! Host tests of maps and faults over the software pmap.

extern crate std;

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use super::*;
use crate::failpoint::{Action, FailPoint};
use crate::invariants;
use crate::map::{Growth, Inherit, MapError, MapLimits, MapLock, VmMap};
use crate::object::tests::make_resident;
use crate::object::{ObjectKind, Pager, VmEnv};
use crate::page::Queue;
use crate::phys::PhysMem;
use crate::phys::tests::{mib, phys_with_memory};
use crate::pmap::soft::{SoftMachine, SoftPmap};
use crate::pmap::{PageMappings, Pmap};
use crate::radix::Radix;
use crate::zone::NodeZone;
use crate::zone::tests::HOST_PAGES;

const P: u64 = PAGE_SIZE as u64;

pub(super) struct T {
    pub(super) env: VmEnv,
    pub(super) machine: &'static SoftMachine,
    node_fail: &'static FailPoint,
    page_fail: &'static FailPoint,
    start_free: u64,
}

pub(super) fn setup() -> T {
    let pm: &'static PhysMem = Box::leak(Box::new(phys_with_memory(&[mib(1, 5)])));
    let node_fail: &'static FailPoint = Box::leak(Box::new(FailPoint::new("radix.node_alloc")));
    let page_fail: &'static FailPoint = Box::leak(Box::new(FailPoint::new("page.alloc")));
    let zone = Box::leak(Box::new(NodeZone::new(Radix::<&'static Page>::NODE_SIZE, &HOST_PAGES, node_fail)));
    let machine: &'static SoftMachine = Box::leak(Box::new(SoftMachine::new()));
    let start_free = pm.free_count();
    T { env: VmEnv { pm, zone, page_alloc: page_fail, mappings: machine }, machine, node_fail, page_fail, start_free }
}

impl T {
    pub(super) fn map(&self) -> (MapLock, Arc<SoftPmap>) {
        let pmap = self.machine.new_pmap();
        (MapLock::new(VmMap::new(P, 1 << 47, pmap.clone(), self.env)), pmap)
    }

    /// An access as a CPU makes it: through the pmap, faulting as needed.
    pub(super) fn touch(&self, map: &MapLock, pmap: &SoftPmap, va: u64, kind: Prot) -> Result<*mut u8, FaultError> {
        for _ in 0..4 {
            if let Ok(page) = pmap.touch(va, kind) {
                return Ok(self.env.pm.page_addr(page).unwrap().wrapping_add((va % P) as usize));
            }
            fault(map, va, kind, false)?;
        }
        panic!("fault at {va:#x} succeeded but the access still traps");
    }

    pub(super) fn read(&self, map: &MapLock, pmap: &SoftPmap, va: u64) -> Result<u8, FaultError> {
        // SAFETY: the pointer is into a mapped, valid page of the host model.
        self.touch(map, pmap, va, Prot::READ).map(|p| unsafe { *p })
    }

    pub(super) fn write(&self, map: &MapLock, pmap: &SoftPmap, va: u64, v: u8) -> Result<(), FaultError> {
        // SAFETY: as above, and the mapping allows writes.
        self.touch(map, pmap, va, Prot::WRITE).map(|p| unsafe { *p = v })
    }

    /// After the test's maps are gone: nothing in limbo, every page back.
    pub(super) fn done(&self) {
        let v = invariants::check(self.env.pm);
        assert!(v.is_empty(), "invariant violations: {v:?}");
        self.env.zone.drain();
        self.env.pm.drain_cache();
        assert_eq!(self.env.pm.free_count(), self.start_free, "free pages off");
        assert_eq!(self.env.zone.in_use(), 0, "trie nodes leaked");
    }

    pub(super) fn clean(&self) {
        let v = invariants::check(self.env.pm);
        assert!(v.is_empty(), "invariant violations: {v:?}");
    }
}

#[test]
fn zero_fill_and_data_survive() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let a = map.lock().map(None, 16 * P, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
        for i in 0..16 {
            assert_eq!(t.read(&map, &pmap, a + i * P + 7).unwrap(), 0, "fresh memory reads zero");
        }
        for i in 0..16 {
            t.write(&map, &pmap, a + i * P + 7, i as u8 + 1).unwrap();
        }
        for i in 0..16 {
            assert_eq!(t.read(&map, &pmap, a + i * P + 7).unwrap(), i as u8 + 1);
        }
        t.clean();
        assert_eq!(fault(&map, a + 16 * P, Prot::READ, false), Err(FaultError::NoEntry));
        map.lock().unmap(a, a + 16 * P).unwrap();
        assert!(pmap.is_empty());
    }
    t.done();
}

#[test]
fn prefault_maps_resident_neighbours() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let obj = VmObject::new(ObjectKind::Vnode, 16, t.env);
        for i in 0..16 {
            make_resident(&obj, i, 0);
        }
        let a = map.lock().map(None, 16 * P, Prot::READ, Prot::READ, Inherit::Share, Some((obj, 0)), false).unwrap();
        let stats = fault(&map, a + 8 * P, Prot::READ, false).unwrap();
        assert_eq!(stats.prefaulted as u64, 2 * PREFAULT);
        assert_eq!(pmap.len() as u64, 2 * PREFAULT + 1);
        drop(map);
    }
    t.done();
}

#[test]
fn copy_on_write_of_a_file_mapping() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let file = VmObject::new(ObjectKind::Vnode, 4, t.env);
        for i in 0..4 {
            make_resident(&file, i, 0x40 + i as u8);
        }
        file.reference();
        let private = map.lock().map(None, 4 * P, Prot::RW, Prot::ALL, Inherit::Copy, Some((file.clone(), 0)), true).unwrap();
        file.reference();
        let shared = map.lock().map(None, 4 * P, Prot::READ, Prot::READ, Inherit::Share, Some((file.clone(), 0)), false).unwrap();
        assert_eq!(t.read(&map, &pmap, private + P).unwrap(), 0x41, "reads see the file");
        t.write(&map, &pmap, private + P, 0x99).unwrap();
        assert_eq!(t.read(&map, &pmap, private + P).unwrap(), 0x99, "the writer sees its copy");
        assert_eq!(t.read(&map, &pmap, shared + P).unwrap(), 0x41, "the file is untouched");
        assert_eq!(t.read(&map, &pmap, private + 2 * P).unwrap(), 0x42, "other pages still read through");
        t.clean();
        file.deallocate();
        drop(map);
    }
    t.done();
}

/// A forced write (a debugger's, `/proc/PID/mem`) to a private read-only
/// file mapping copies the page into the entry's own object and maps it
/// read-only: the file keeps its bytes, the program reads the copy, and a
/// plain write still faults. Shared entries are never written behind
/// their protection; an unreadable entry is not reached at all.
#[test]
fn forced_writes_copy_and_leave_no_writable_mapping() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let file = VmObject::new(ObjectKind::Vnode, 4, t.env);
        for i in 0..4 {
            make_resident(&file, i, 0x40 + i as u8);
        }
        file.reference();
        let private = map.lock().map(None, 4 * P, Prot::READ, Prot::ALL, Inherit::Copy, Some((file.clone(), 0)), true).unwrap();
        file.reference();
        let shared = map.lock().map(None, 4 * P, Prot::READ, Prot::RW, Inherit::Share, Some((file.clone(), 0)), false).unwrap();
        let none = map.lock().map(None, P, Prot::empty(), Prot::ALL, Inherit::Copy, None, false).unwrap();

        assert_eq!(t.read(&map, &pmap, private + P).unwrap(), 0x41);
        fault_forced(&map, private + P, Prot::WRITE).unwrap();
        let copy = {
            let m = map.lock();
            let e = m.entry(private).unwrap();
            let first = e.object.clone().unwrap();
            assert!(!Arc::ptr_eq(&first, &file), "the entry has its own object now");
            first.lock().lookup(e.offset + 1).expect("the copy is in the entry's object")
        };
        assert!(copy.dirty() != 0, "the copy is dirty: it holds what the file does not");
        // As the kernel writes it: the page exclusively busy (rule 2).
        assert!(copy.try_xbusy());
        t.env.pm.with_contents_mut(copy, |b| b[0] = 0x77).unwrap();
        copy.xunbusy();
        assert_eq!(t.read(&map, &pmap, private + P).unwrap(), 0x77, "the program reads the copy");
        assert_eq!(t.read(&map, &pmap, shared + P).unwrap(), 0x41, "the file keeps its bytes");
        let (_, prot) = pmap.extract(private + P).expect("the copy is mapped");
        assert!(!prot.contains(Prot::WRITE), "mapped with the entry's protection");
        assert_eq!(t.write(&map, &pmap, private + P, 1), Err(FaultError::Protection));
        assert_eq!(fault_forced(&map, shared + P, Prot::WRITE), Err(FaultError::Protection), "shared, not writable");
        assert_eq!(fault_forced(&map, none, Prot::READ), Err(FaultError::Protection), "not readable at all");
        fault_forced(&map, shared + 2 * P, Prot::READ).unwrap();
        t.clean();
        file.deallocate();
        drop(map);
    }
    t.done();
}

#[test]
fn fork_shares_until_written() {
    let t = setup();
    {
        let (parent, ppmap) = t.map();
        let a = parent.lock().map(None, 4 * P, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
        t.write(&parent, &ppmap, a, 1).unwrap();
        t.write(&parent, &ppmap, a + P, 2).unwrap();
        let cpmap = t.machine.new_pmap();
        let child = MapLock::new(parent.lock().fork(cpmap.clone()).unwrap());
        assert_eq!(t.read(&child, &cpmap, a).unwrap(), 1);
        t.write(&parent, &ppmap, a, 10).unwrap();
        assert_eq!(t.read(&child, &cpmap, a).unwrap(), 1, "the child keeps the old data");
        t.write(&child, &cpmap, a + P, 20).unwrap();
        assert_eq!(t.read(&parent, &ppmap, a + P).unwrap(), 2, "the parent keeps its data");
        assert_eq!(t.read(&child, &cpmap, a + P).unwrap(), 20);
        t.clean();
        drop(child);
        drop(parent);
    }
    t.done();
}

/// Depth of the shadow chain under the entry at `va`.
fn chain_depth(map: &MapLock, va: u64) -> usize {
    let mut o = map.lock().entry(va).and_then(|e| e.object.clone());
    let mut depth = 0;
    while let Some(obj) = o {
        depth += 1;
        o = obj.lock().backing().map(|(b, _)| b);
    }
    depth
}

/// Fork, write on both sides, let the child go, over and over (a shell's
/// life): each fork first collapses the entry's object with a backing
/// object nobody else uses any more (FreeBSD's `vm_map_copy_entry`), so
/// the parent's chain stays two objects deep instead of growing by one a
/// round, and the parent's data survives every round.
#[test]
fn fork_and_exit_rounds_keep_the_shadow_chain_short() {
    let t = setup();
    {
        let (parent, ppmap) = t.map();
        let a = parent.lock().map(None, 4 * P, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
        for i in 0..4 {
            t.write(&parent, &ppmap, a + i * P, i as u8 + 1).unwrap();
        }
        for round in 0..20u8 {
            let cpmap = t.machine.new_pmap();
            let child = MapLock::new(parent.lock().fork(cpmap.clone()).unwrap());
            t.write(&child, &cpmap, a, 100 + round).unwrap();
            assert_eq!(t.read(&child, &cpmap, a + 2 * P).unwrap(), 3);
            t.write(&parent, &ppmap, a + P, round).unwrap();
            drop(child);
            let depth = chain_depth(&parent, a);
            assert!(depth <= 2, "round {round}: the parent's chain is {depth} objects deep");
            t.clean();
        }
        for (i, want) in [1, 19, 3, 4].into_iter().enumerate() {
            assert_eq!(t.read(&parent, &ppmap, a + i as u64 * P).unwrap(), want, "page {i}");
        }
        drop(parent);
    }
    t.done();
}

#[test]
fn protection_is_enforced_and_can_be_raised_to_the_maximum() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let a = map.lock().map(None, 2 * P, Prot::READ, Prot::RW, Inherit::Copy, None, false).unwrap();
        assert_eq!(t.read(&map, &pmap, a).unwrap(), 0);
        assert_eq!(t.write(&map, &pmap, a, 1), Err(FaultError::Protection));
        map.lock().protect(a, a + 2 * P, Prot::RW).unwrap();
        t.write(&map, &pmap, a, 1).unwrap();
        assert_eq!(map.lock().protect(a, a + P, Prot::ALL), Err(MapError::Protection), "never above the maximum");
        map.lock().protect(a, a + P, Prot::READ).unwrap();
        assert_eq!(t.write(&map, &pmap, a, 2), Err(FaultError::Protection));
        assert_eq!(t.read(&map, &pmap, a).unwrap(), 1);
        drop(map);
    }
    t.done();
}

/// PROT_NONE takes the mappings away (a page table cannot forbid reading
/// a present page), and the data is there again when access comes back.
#[test]
fn no_access_removes_the_mappings_and_keeps_the_data() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let a = map.lock().map(None, 4 * P, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
        for i in 0..4 {
            t.write(&map, &pmap, a + i * P, i as u8 + 7).unwrap();
        }
        map.lock().protect(a + P, a + 3 * P, Prot::empty()).unwrap();
        assert!(pmap.extract(a + P).is_none() && pmap.extract(a + 2 * P).is_none(), "no mapping left to read through");
        assert!(pmap.extract(a).is_some() && pmap.extract(a + 3 * P).is_some(), "the rest stays mapped");
        assert_eq!(t.read(&map, &pmap, a + P), Err(FaultError::Protection));
        map.lock().protect(a, a + 4 * P, Prot::RW).unwrap();
        for i in 0..4 {
            assert_eq!(t.read(&map, &pmap, a + i * P).unwrap(), i as u8 + 7, "page {i}");
        }
        drop(map);
    }
    t.done();
}

#[test]
fn wiring_keeps_pages_and_unwire_returns_them() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let a = map.lock().map(None, 8 * P, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
        let b = map.lock().map(None, 4 * P, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
        wire(&map, a, a + 8 * P).unwrap();
        assert_eq!(pmap.wired_count(), 8);
        let pages: Vec<&'static Page> = (0..8).map(|i| t.env.pm.page_of(pmap.extract(a + i * P).unwrap().0).unwrap()).collect();
        assert!(pages.iter().all(|p| p.wire_count() == 1));
        // Pressure on other pages, and even remove_all on a wired one: the
        // wiring lives in the map and the page, so the page stays.
        for i in 0..4 {
            t.write(&map, &pmap, b + i * P, 5).unwrap();
            let other = t.env.pm.page_of(pmap.extract(b + i * P).unwrap().0).unwrap();
            t.machine.remove_all(other);
        }
        t.machine.remove_all(pages[3]);
        assert!(pages[3].wired() && pages[3].object().is_some(), "still wired and resident");
        assert_eq!(t.read(&map, &pmap, a + 3 * P).unwrap(), 0, "and faults back in");
        map.lock().unwire(a, a + 4 * P).unwrap();
        assert!(pages[..4].iter().all(|p| !p.wired() && p.queue() == Queue::Active));
        // Unmapping a wired range unwires it.
        map.lock().unmap(a, a + 8 * P).unwrap();
        assert!(pages[4..].iter().all(|p| !p.wired()));
        t.clean();
        drop(map);
    }
    t.done();
}

/// A range locked on fault (`mlock2(MLOCK_ONFAULT)`) has nothing brought
/// in; each page faulted in is wired, and no neighbour is mapped unwired
/// beside it; a page there before is wired by the lock. Locking it again
/// without on-fault brings the rest in, and no page holds two wirings
/// for the one entry. Unlocking a part splits the entry; unlocking the
/// rest joins it again.
#[test]
fn a_range_locked_on_fault_wires_pages_as_they_come() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let a = map.lock().map(None, 8 * P, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
        // Pages 0, 4 and 5 resident; 4 and 5 not mapped (as after the page
        // daemon took their mappings).
        for i in [0, 4, 5] {
            t.write(&map, &pmap, a + i * P, i as u8 + 1).unwrap();
        }
        pmap.remove(a + 4 * P, a + 6 * P).flush();
        lock(&map, a, a + 8 * P, true).unwrap();
        assert_eq!(pmap.wired_count(), 1, "the page mapped before is wired");
        let page_at = |va: u64| t.env.pm.page_of(pmap.extract(va).unwrap().0).unwrap();
        assert_eq!(page_at(a).wire_count(), 1);
        // A resident page faulted in, its resident neighbour left alone (a
        // prefault would map it unwired); a new page written.
        assert_eq!(t.read(&map, &pmap, a + 4 * P).unwrap(), 5);
        assert!(pmap.extract(a + 5 * P).is_none(), "nothing mapped but what was touched");
        t.write(&map, &pmap, a + 3 * P, 7).unwrap();
        assert_eq!(pmap.wired_count(), 3);
        assert!([0, 3, 4].iter().all(|i| page_at(a + i * P).wire_count() == 1));
        {
            let m = map.lock();
            let e = m.entry(a).unwrap();
            assert!(e.wired_count == 1 && e.lock_on_fault);
        }
        // Locked again, whole: every page in, each wired once.
        lock(&map, a, a + 8 * P, false).unwrap();
        assert_eq!(pmap.wired_count(), 8);
        assert!((0..8).all(|i| page_at(a + i * P).wire_count() == 1));
        assert!(!map.lock().entry(a).unwrap().lock_on_fault);
        // A second fault wiring a page wired already adds nothing.
        fault(&map, a + 2 * P, Prot::WRITE, true).unwrap();
        assert_eq!(page_at(a + 2 * P).wire_count(), 1);
        // Unlocked in the middle: three entries; then all: one again.
        map.lock().unwire(a + 2 * P, a + 4 * P).unwrap();
        assert_eq!(map.lock().entries().count(), 3);
        assert!(page_at(a + 2 * P).wire_count() == 0 && page_at(a + 4 * P).wire_count() == 1);
        map.lock().unwire(a, a + 8 * P).unwrap();
        assert_eq!(map.lock().entries().count(), 1);
        assert_eq!(pmap.wired_count(), 0);
        assert!((0..8).all(|i| !page_at(a + i * P).wired()));
        // Inaccessible memory locks on fault whatever is asked, and its
        // pages wire as it is opened.
        map.lock().protect(a, a + 8 * P, Prot::empty()).unwrap();
        lock(&map, a, a + 8 * P, false).unwrap();
        assert!(map.lock().entry(a).unwrap().lock_on_fault);
        map.lock().protect(a, a + 8 * P, Prot::RW).unwrap();
        t.write(&map, &pmap, a + 6 * P, 1).unwrap();
        assert_eq!(pmap.wired_count(), 1);
        map.lock().unmap(a, a + 8 * P).unwrap();
        t.clean();
        drop(map);
    }
    t.done();
}

/// MADV_FREE (`VmMap::free_lazily`): pages given up stay as they were
/// until the page daemon comes; it frees the clean ones with nothing
/// written, though their object is swap-backed and has no copies (rule
/// 14's exception), and they read as zeros after; a page written in
/// between is kept. Memory shared with a forked child is not given up.
#[test]
fn pages_freed_lazily_go_at_the_daemon_unless_written_again() {
    struct NoCopies;
    impl Pager for NoCopies {
        fn has_page(&self, _: u64) -> Option<(u64, u64)> {
            None
        }
        fn get_page(&self, _: &VmObject, _: &'static Page) -> crate::object::PagerResult {
            crate::object::PagerResult::Error
        }
        fn put_pages(&self, _: &VmObject, _: &[&'static Page]) -> usize {
            0
        }
    }
    let t = setup();
    {
        let (map, pmap) = t.map();
        let a = map.lock().map(None, 8 * P, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
        for i in 0..8 {
            t.write(&map, &pmap, a + i * P, i as u8 + 1).unwrap();
        }
        let obj = map.lock().entry(a).unwrap().object.clone().unwrap();
        obj.lock().make_swap_backed(Arc::new(NoCopies));
        let pages: Vec<&'static Page> = (0..8).map(|i| obj.lock().lookup(i).unwrap()).collect();
        assert!(map.lock().private_anonymous(a, a + 8 * P));
        assert_eq!(map.lock().free_lazily(a, a + 8 * P), 8);
        for (i, p) in pages.iter().enumerate() {
            assert!(p.dirty() == 0 && p.flags().contains(PageFlags::DISCARDABLE) && p.queue() == Queue::Inactive);
            // SAFETY: a resident page of the host model, read through the direct map.
            assert_eq!(unsafe { *t.env.pm.page_addr(p).unwrap() }, i as u8 + 1, "kept until the daemon comes");
        }
        assert!(invariants::check_object(&obj).is_empty(), "clean without a copy, and allowed");
        t.write(&map, &pmap, a + 2 * P, 42).unwrap();
        let st = crate::pageout::scan_inactive(t.env.pm, t.env.mappings, 100);
        assert_eq!(st.freed, 7, "all but the page written again");
        assert_eq!(obj.lock().lookup(2).map(|p| p.phys()), Some(pages[2].phys()));
        for i in 0..8 {
            assert_eq!(t.read(&map, &pmap, a + i * P).unwrap(), if i == 2 { 42 } else { 0 });
        }
        // After a fork the pages are the child's too: nothing is given up.
        let cpmap = t.machine.new_pmap();
        let child = MapLock::new(map.lock().fork(cpmap.clone()).unwrap());
        assert_eq!(map.lock().free_lazily(a, a + 8 * P), 0);
        assert_eq!(child.lock().free_lazily(a, a + 8 * P), 0);
        drop(child);
        t.clean();
        drop(map);
    }
    t.done();
}

#[test]
fn wiring_a_private_file_mapping_copies_it_up_front() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let file = VmObject::new(ObjectKind::Vnode, 2, t.env);
        for i in 0..2 {
            make_resident(&file, i, 0);
        }
        file.reference();
        let a = map.lock().map(None, 2 * P, Prot::RW, Prot::ALL, Inherit::Copy, Some((file.clone(), 0)), true).unwrap();
        wire(&map, a, a + 2 * P).unwrap();
        let entry_obj = map.lock().entry(a).unwrap().object.clone().unwrap();
        assert!(!Arc::ptr_eq(&entry_obj, &file), "the entry has its own shadow");
        assert_eq!(entry_obj.lock().resident(), 2, "both pages were copied into it");
        assert!(file.lock().lookup(0).is_some_and(|p| !p.wired()), "the file's pages are not wired");
        // A later write needs no copy: it lands in the wired page.
        let before = pmap.extract(a).unwrap().0;
        t.write(&map, &pmap, a, 7).unwrap();
        assert_eq!(pmap.extract(a).unwrap().0, before);
        file.deallocate();
        drop(map);
    }
    t.done();
}

/// A pager that answers from a script, then OK.
struct ScriptPager {
    script: spin::Mutex<VecDeque<PagerResult>>,
    pm: &'static PhysMem,
    reads: core::sync::atomic::AtomicU32,
}

impl Pager for ScriptPager {
    fn has_page(&self, pindex: u64) -> Option<(u64, u64)> {
        (pindex < 64).then_some((0, 0))
    }
    fn get_page(&self, _obj: &VmObject, page: &'static Page) -> PagerResult {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let r = self.script.lock().pop_front().unwrap_or(PagerResult::Ok);
        if r == PagerResult::Ok {
            // SAFETY: the page is exclusively busy for us; the model maps it.
            unsafe { core::ptr::write_bytes(self.pm.page_addr(page).unwrap(), 0x5A ^ page.pindex() as u8, PAGE_SIZE) };
            page.set_all_valid();
        }
        r
    }
}

#[test]
fn pager_results_are_handled() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let pager = Arc::new(ScriptPager {
            script: spin::Mutex::new(VecDeque::from([
                PagerResult::Error,
                PagerResult::Again,
                PagerResult::Again,
                PagerResult::Ok,
                PagerResult::Bad,
            ])),
            pm: t.env.pm,
            reads: 0.into(),
        });
        let file = VmObject::new(ObjectKind::Vnode, 128, t.env);
        file.lock().set_pager(pager.clone());
        let a = map.lock().map(None, 128 * P, Prot::READ, Prot::READ, Inherit::Share, Some((file, 0)), false).unwrap();
        assert_eq!(fault(&map, a, Prot::READ, false), Err(FaultError::Io), "an I/O error reaches the faulting thread");
        t.clean(); // the page read into is not left in limbo (rule 6)
        let s = fault(&map, a, Prot::READ, false).unwrap();
        assert_eq!(s.restarts, 2, "AGAIN restarts the fault");
        assert!(s.paged_in);
        assert_eq!(t.read(&map, &pmap, a).unwrap(), 0x5A);
        assert_eq!(fault(&map, a + P, Prot::READ, false), Err(FaultError::Bad));
        // Past what the pager holds: zero-filled.
        assert_eq!(t.read(&map, &pmap, a + 100 * P).unwrap(), 0);
        assert_eq!(pager.reads.load(Ordering::Relaxed), 5);
        t.clean();
        drop(map);
    }
    t.done();
}

#[test]
fn pmap_shortage_waits_and_gives_a_clean_status() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let a = map.lock().map(None, 4 * P, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
        t.machine.fail_enter.store(true, Ordering::Relaxed);
        assert_eq!(fault(&map, a, Prot::WRITE, false), Err(FaultError::NoMemory));
        t.clean();
        t.machine.fail_enter.store(false, Ordering::Relaxed);
        t.write(&map, &pmap, a, 3).unwrap();
        assert_eq!(t.read(&map, &pmap, a).unwrap(), 3);
        drop(map);
    }
    t.done();
}

#[test]
fn moving_instead_of_copying_uses_replace() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        // An anonymous object with data, mapped privately, the map holding
        // the only reference: the first write moves the page up.
        let obj = VmObject::new(ObjectKind::Anonymous, 1, t.env);
        make_resident(&obj, 0, 0x77);
        let a = map.lock().map(None, P, Prot::RW, Prot::ALL, Inherit::Copy, Some((obj, 0)), true).unwrap();
        t.node_fail.set(Action::Always); // replace needs no node
        let s = fault(&map, a, Prot::WRITE, false).unwrap();
        assert!(s.moved && !s.copied, "{s:?}");
        t.node_fail.set(Action::Off);
        assert_eq!(t.read(&map, &pmap, a).unwrap(), 0x77);
        t.clean();
        drop(map);
    }
    t.done();
}

/// Seed 001 end to end: with node and page allocation failing at random,
/// every fault succeeds or fails with a clean status; nothing leaks, nothing
/// is freed twice, nothing is left in limbo.
#[test]
fn faults_under_random_allocation_failure() {
    for seed in 0..8 {
        let t = setup();
        {
            let (map, pmap) = t.map();
            let a = map.lock().map(None, 64 * P, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
            for i in 0..64 {
                t.write(&map, &pmap, a + i * P, i as u8).unwrap();
            }
            let cpmap = t.machine.new_pmap();
            let child = MapLock::new(map.lock().fork(cpmap.clone()).unwrap());
            t.node_fail.set(Action::Probability { ppm: 200_000, seed });
            t.page_fail.set(Action::Probability { ppm: 200_000, seed: seed + 100 });
            let (mut ok, mut short) = (0, 0);
            for round in 0..4u64 {
                for i in 0..64 {
                    let (m, p) = if (i + round) % 2 == 0 { (&map, &pmap) } else { (&child, &cpmap) };
                    match t.write(m, p, a + i * P, (i + round) as u8) {
                        Ok(()) => ok += 1,
                        Err(FaultError::NoMemory) => short += 1,
                        Err(e) => panic!("unexpected fault error {e:?}"),
                    }
                }
                t.clean();
            }
            assert!(ok > 0);
            let _ = short;
            t.node_fail.set(Action::Off);
            t.page_fail.set(Action::Off);
            drop(child);
            drop(map);
        }
        t.done();
    }
}

/// A wired range forked and then written by the parent: the copy takes the
/// wiring over, the page left to the child loses it, and every page comes
/// back when both maps are gone.
#[test]
fn a_wired_range_written_after_fork_moves_its_wiring() {
    let t = setup();
    {
        let (parent, ppmap) = t.map();
        let a = parent.lock().map(None, 2 * P, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
        t.write(&parent, &ppmap, a, 1).unwrap();
        wire(&parent, a, a + 2 * P).unwrap();
        let old = t.env.pm.page_of(ppmap.extract(a).unwrap().0).unwrap();
        assert_eq!(old.wire_count(), 1);
        let cpmap = t.machine.new_pmap();
        let child = MapLock::new(parent.lock().fork(cpmap.clone()).unwrap());
        t.write(&parent, &ppmap, a, 2).unwrap();
        let new = t.env.pm.page_of(ppmap.extract(a).unwrap().0).unwrap();
        assert!(!core::ptr::eq(old, new), "the write copied the page");
        assert_eq!(new.wire_count(), 1, "the copy is wired for the entry");
        assert!(!old.wired(), "the child's page is no longer wired");
        assert_eq!(t.read(&child, &cpmap, a).unwrap(), 1, "the child keeps the old data");
        t.clean();
        drop(child);
        drop(parent);
    }
    t.done();
}

/// `discard` (MADV_DONTNEED): anonymous memory reads zeros again, even
/// below a fork's shadow; a private file mapping reads the file again; a
/// shared mapping keeps its data.
#[test]
fn discard_gives_zeros_or_the_file_back() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let a = map.lock().map(None, 2 * P, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
        t.write(&map, &pmap, a, 7).unwrap();
        t.write(&map, &pmap, a + P, 8).unwrap();
        map.lock().discard(a, a + P).unwrap();
        assert_eq!(t.read(&map, &pmap, a).unwrap(), 0);
        assert_eq!(t.read(&map, &pmap, a + P).unwrap(), 8, "outside the range nothing changes");

        let cpmap = t.machine.new_pmap();
        let child = MapLock::new(map.lock().fork(cpmap.clone()).unwrap());
        t.write(&child, &cpmap, a + P, 9).unwrap();
        child.lock().discard(a + P, a + 2 * P).unwrap();
        assert_eq!(t.read(&child, &cpmap, a + P).unwrap(), 0, "zeros, not the parent's data");
        assert_eq!(t.read(&map, &pmap, a + P).unwrap(), 8, "the parent keeps its data");
        drop(child);

        let file = VmObject::new(ObjectKind::Vnode, 1, t.env);
        make_resident(&file, 0, 0x40);
        file.reference();
        let private = map.lock().map(None, P, Prot::RW, Prot::ALL, Inherit::Copy, Some((file.clone(), 0)), true).unwrap();
        t.write(&map, &pmap, private, 0x99).unwrap();
        map.lock().discard(private, private + P).unwrap();
        assert_eq!(t.read(&map, &pmap, private).unwrap(), 0x40, "the file's data again");
        let shared = map.lock().map(None, P, Prot::RW, Prot::ALL, Inherit::Share, Some((file, 0)), false).unwrap();
        t.write(&map, &pmap, shared, 0x55).unwrap();
        map.lock().discard(shared, shared + P).unwrap();
        assert_eq!(t.read(&map, &pmap, shared).unwrap(), 0x55, "shared memory keeps its data");
        t.clean();
        drop(map);
    }
    t.done();
}

/// Truncation under a locked mapping: the wired page leaves the object and
/// every mapping at once (the address faults again), and is freed only when
/// the entry is unwired (rule 5).
#[test]
fn a_truncated_wired_page_is_freed_at_unwire() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let file = VmObject::new(ObjectKind::Vnode, 2, t.env);
        make_resident(&file, 0, 0x41);
        make_resident(&file, 1, 0x42);
        file.reference();
        let a = map.lock().map(None, 2 * P, Prot::READ, Prot::READ, Inherit::Share, Some((file.clone(), 0)), false).unwrap();
        wire(&map, a, a + 2 * P).unwrap();
        let page = t.env.pm.page_of(pmap.extract(a + P).unwrap().0).unwrap();
        let free_before = t.env.pm.free_count();
        file.remove_range(1, 2);
        assert!(page.object().is_none() && page.wired(), "out of the object, still wired");
        assert!(pmap.extract(a + P).is_none(), "and out of every mapping");
        assert_eq!(t.env.pm.free_count(), free_before, "not freed yet");
        map.lock().unwire(a, a + 2 * P).unwrap();
        assert!(!page.wired());
        assert_eq!(t.env.pm.free_count(), free_before + 1, "freed at unwire");
        t.clean();
        file.deallocate();
        drop(map);
    }
    t.done();
}

/// A wiring of a 1 TiB entry runs out of memory a few hundred pages in and
/// is undone: the unwiring visits the pages the pmap has, not the 2^28
/// addresses of the entry (which took tens of seconds, under the map
/// lock). Every page is unwired and freed with the entry.
#[test]
fn a_failed_wiring_of_a_huge_entry_is_undone_by_its_pages() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        const TIB: u64 = 1 << 40;
        let a = map.lock().map(None, TIB, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(wire(&map, a, a + TIB), Err(FaultError::NoMemory));
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(5), "the failed wiring took {took:?}");
        assert_eq!(pmap.wired_count(), 0, "every mapping unwired");
        assert!(map.lock().entries().all(|e| e.wired_count == 0));
        t.clean();
        map.lock().unmap(a, a + TIB).unwrap();
        drop(map);
    }
    t.done();
}

/// Runs `at` once, when the fault has ended `step`: a fault stopped between
/// two steps, for another thread to change the map meanwhile.
struct StopAfter<F: FnOnce()> {
    step: Step,
    at: Option<F>,
}

impl<F: FnOnce()> Watch for StopAfter<F> {
    fn after(&mut self, step: Step) {
        if step == self.step
            && let Some(at) = self.at.take()
        {
            at();
        }
    }
}

/// A read of a private file mapping looks the map up (the file's object,
/// read-only), and stops. A write to the same page shadows the entry's
/// object, copies the page and maps the copy. When the read goes on, the
/// map has changed under it: it must look again and not map the file's
/// page over the copy, or the write would seem undone.
#[test]
fn a_fault_that_raced_with_a_shadowing_lookup_looks_again() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let file = VmObject::new(ObjectKind::Vnode, 1, t.env);
        make_resident(&file, 0, 0x40);
        file.reference();
        let a = map.lock().map(None, P, Prot::RW, Prot::ALL, Inherit::Copy, Some((file.clone(), 0)), true).unwrap();
        let (looked_up, wait_lookup) = std::sync::mpsc::channel::<()>();
        let (go, wait_go) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            let map = &map;
            let reader = s.spawn(move || {
                let stop = StopAfter {
                    step: Step::Lookup,
                    at: Some(move || {
                        looked_up.send(()).unwrap();
                        wait_go.recv().unwrap();
                    }),
                };
                fault_with(map, a, Prot::READ, false, stop)
            });
            wait_lookup.recv().unwrap();
            t.write(map, &pmap, a, 0x99).unwrap();
            go.send(()).unwrap();
            let stats = reader.join().unwrap().unwrap();
            assert_eq!(stats.restarts, 1, "the read looked the map up again");
        });
        assert_eq!(t.read(&map, &pmap, a).unwrap(), 0x99, "the write is not undone by the read that raced with it");
        t.clean();
        file.deallocate();
        drop(map);
    }
    t.done();
}

/// A write fault finds the file's page busy below the entry's new shadow
/// object. It sleeps on the page only after letting go of everything, the
/// shadow's placeholder page included: the page's holder may be waiting
/// for that placeholder.
#[test]
fn a_busy_page_is_slept_on_with_nothing_held() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let file = VmObject::new(ObjectKind::Vnode, 1, t.env);
        make_resident(&file, 0, 0x40);
        file.reference();
        let a = map.lock().map(None, P, Prot::RW, Prot::ALL, Inherit::Copy, Some((file.clone(), 0)), true).unwrap();
        let page = file.lock().lookup(0).unwrap();
        assert!(page.try_xbusy());
        // What the fault holds while it sleeps: busy pages, the file's lock.
        type Held = Option<(Vec<u64>, bool)>;
        let seen: Arc<spin::Mutex<Held>> = Arc::new(spin::Mutex::new(None));
        let pm = t.env.pm;
        let (seen2, file2) = (seen.clone(), file.clone());
        crate::page::on_next_busy_wait(Box::new(move |waited: &Page| {
            let held = pm.pages().iter().filter(|p| p.busied() && !core::ptr::eq(*p, waited)).map(|p| p.phys()).collect();
            *seen2.lock() = Some((held, file2.is_locked()));
            if core::ptr::eq(waited, page) {
                waited.xunbusy();
            }
        }));
        t.write(&map, &pmap, a, 0x99).unwrap();
        let (held, locked) = seen.lock().take().expect("the fault slept on the busy page");
        assert!(held.is_empty(), "pages {held:x?} still busy while the fault slept");
        assert!(!locked, "the file's object was locked while the fault slept");
        assert_eq!(t.read(&map, &pmap, a).unwrap(), 0x99);
        t.clean();
        file.deallocate();
        drop(map);
    }
    t.done();
}

/// An unmap under the map lock that gives up the last reference to an
/// object leaves the object alone until the lock is let go: terminating it
/// waits for its busy pages, and the map lock is a spin lock. The guard
/// deallocates it after unlocking, and the wait happens then.
#[test]
fn an_object_unmapped_under_the_map_lock_goes_after_the_unlock() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let map = Arc::new(map);
        let a = map.lock().map(None, 2 * P, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
        t.write(&map, &pmap, a, 1).unwrap();
        t.write(&map, &pmap, a + P, 2).unwrap();
        // An `Arc` to look at it by, not a reference of the VM's.
        let obj = map.lock().entry(a).unwrap().object.clone().unwrap();
        assert_eq!(obj.ref_count(), 1, "the entry holds the only reference");
        // Another thread's busy page: the termination has to wait for it.
        let page = obj.lock().lookup(1).unwrap();
        assert!(page.try_xbusy());
        // Whether the map was locked when the termination waited.
        let seen: Arc<spin::Mutex<Option<bool>>> = Arc::new(spin::Mutex::new(None));
        let (seen2, map2) = (seen.clone(), map.clone());
        crate::page::on_next_busy_wait(Box::new(move |waited: &Page| {
            *seen2.lock() = Some(map2.is_locked());
            waited.xunbusy();
        }));
        {
            let mut m = map.lock();
            m.unmap(a, a + 2 * P).unwrap();
            assert!(m.is_free(a, a + 2 * P) && pmap.is_empty(), "the range is unmapped at once");
            assert_eq!(obj.ref_count(), 1, "the reference is kept while the map is locked");
            assert_eq!(obj.lock().resident(), 2, "and so are the pages");
            assert_eq!(*seen.lock(), None, "nothing waited with the map locked");
        }
        assert_eq!(obj.ref_count(), 0, "the guard dropped the reference");
        assert_eq!(obj.lock().resident(), 0, "the object was terminated");
        assert_eq!(*seen.lock(), Some(false), "the termination waited for the busy page with the map unlocked");
        t.clean();
    }
    t.done();
}

/// A stack (`VmMap::map_stack`) grows down on faults below it: by the
/// step at a time, or to the faulting page when that is further; never
/// past its limit, where a fault within a step of the floor is told apart
/// as an overflow; its data stays where it was written.
#[test]
fn a_stack_grows_down_within_its_limit() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let top = 1 << 40;
        map.lock().set_limits(MapLimits { stack: 64 * P, step: 8 * P, lowest: P, ..MapLimits::UNLIMITED });
        let start = map.lock().map_stack(top, 4 * P).unwrap();
        assert_eq!((start, map.lock().stack_bottom()), (top - 4 * P, Some(top - 4 * P)));
        t.write(&map, &pmap, top - 8, 1).unwrap();
        t.write(&map, &pmap, start - 8, 2).unwrap();
        assert_eq!(map.lock().stack_bottom(), Some(start - 8 * P), "a step at a time");
        t.write(&map, &pmap, top - 60 * P, 3).unwrap();
        assert_eq!(map.lock().stack_bottom(), Some(top - 60 * P), "to the page when that is further");
        t.write(&map, &pmap, top - 64 * P, 4).unwrap();
        assert_eq!(map.lock().stack_bottom(), Some(top - 64 * P), "down to the limit");
        assert_eq!(map.lock().grow_stack(top - 65 * P), Growth::Overflow { limit: 64 * P });
        assert_eq!(fault(&map, top - 65 * P, Prot::WRITE, false), Err(FaultError::StackOverflow { limit: 64 * P }));
        assert_eq!(map.lock().grow_stack(top - 100 * P), Growth::NotStack, "far below: not the stack's");
        assert_eq!(map.lock().grow_stack(1 << 41), Growth::NotStack, "above it");
        for (va, v) in [(top - 8, 1), (start - 8, 2), (top - 60 * P, 3), (top - 64 * P, 4)] {
            assert_eq!(t.read(&map, &pmap, va).unwrap(), v);
        }
        t.clean();
    }
    t.done();
}

/// Any entry made to grow down (`MAP_GROWSDOWN`) grows as the stack does,
/// to its own floor (its top less the stack limit), with its own
/// protection; the process's stack is not moved by it.
#[test]
fn an_entry_made_to_grow_down_grows_to_its_own_limit() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let top = 1 << 40;
        map.lock().set_limits(MapLimits { stack: 64 * P, step: 8 * P, lowest: P, ..MapLimits::UNLIMITED });
        map.lock().map_stack(top, 4 * P).unwrap();
        let g_top = top - 1024 * P;
        let g = map.lock().map(Some(g_top - 2 * P), 2 * P, Prot::READ, Prot::ALL, Inherit::Copy, None, false).unwrap();
        assert!(map.lock().set_grows_down(g));
        assert_eq!(t.read(&map, &pmap, g - 3 * P).unwrap(), 0);
        {
            let m = map.lock();
            let e = m.entry(g - 3 * P).unwrap();
            assert_eq!((e.start, e.end, e.prot, e.grows_down), (g - 8 * P, g, Prot::READ, true), "a step, read-only");
        }
        assert_eq!(t.write(&map, &pmap, g - 3 * P, 1), Err(FaultError::Protection));
        t.read(&map, &pmap, g_top - 64 * P).unwrap();
        assert_eq!(map.lock().grow_stack(g_top - 65 * P), Growth::Overflow { limit: 64 * P });
        assert_eq!(map.lock().stack_bottom(), Some(top - 4 * P), "the process's stack stays as it was");
        assert_eq!(map.lock().stack_top(), Some(top));
        t.clean();
    }
    t.done();
}

/// A stack stops at an entry mapped below it, and at the map's size
/// limit: by a page when the step is too much, not at all when the page
/// is. A forked child's stack grows on its own.
#[test]
fn a_stack_stops_at_what_is_below_and_at_the_size_limit() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let top = 1 << 40;
        map.lock().set_limits(MapLimits { step: 8 * P, ..MapLimits::UNLIMITED });
        map.lock().map_stack(top, 4 * P).unwrap();
        map.lock().map(Some(top - 20 * P), 2 * P, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
        t.write(&map, &pmap, top - 6 * P, 1).unwrap();
        assert_eq!(map.lock().stack_bottom(), Some(top - 12 * P));
        t.write(&map, &pmap, top - 17 * P, 2).unwrap();
        assert_eq!(map.lock().stack_bottom(), Some(top - 18 * P), "up to the entry below, not into it");
        assert_eq!(map.lock().grow_stack(top - 25 * P), Growth::NotStack, "below that entry: not the stack's");

        let cpmap = t.machine.new_pmap();
        let child = MapLock::new(map.lock().fork(cpmap.clone()).unwrap());
        drop(map);
        child.lock().unmap(top - 20 * P, top - 18 * P).unwrap();
        let size = child.lock().size();
        child.lock().set_limits(MapLimits { step: 8 * P, size: size + P, ..MapLimits::UNLIMITED });
        t.write(&child, &cpmap, top - 19 * P, 3).unwrap();
        assert_eq!(child.lock().stack_bottom(), Some(top - 19 * P), "one page: the step is past the size limit");
        assert_eq!(child.lock().grow_stack(top - 20 * P), Growth::Refused, "the page is past it too");
        assert_eq!(t.read(&child, &cpmap, top - 6 * P).unwrap(), 1, "the child has the parent's stack");
        t.clean();
    }
    t.done();
}

/// With new memory wired as it is mapped (`mlockall(MCL_FUTURE)`), the
/// stack's growth is wired, and stops at the wired limit.
#[test]
fn a_stack_grown_under_wire_future_is_wired() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let top = 1 << 40;
        map.lock().set_limits(MapLimits { step: 4 * P, wire_future: Some(6 * P), ..MapLimits::UNLIMITED });
        map.lock().map_stack(top, 2 * P).unwrap();
        t.write(&map, &pmap, top - 3 * P, 1).unwrap();
        assert_eq!(map.lock().stack_bottom(), Some(top - 6 * P));
        assert_eq!(map.lock().wired_size(), 4 * P, "the new part is wired");
        assert!(pmap.len() >= 4, "and mapped");
        assert_eq!(map.lock().grow_stack(top - 9 * P), Growth::Refused, "past the wired limit");
        let wired = map.lock().wired_size();
        map.lock().unwire(top - 6 * P, top - 2 * P).unwrap();
        assert_eq!(map.lock().wired_size(), wired - 4 * P);
        t.clean();
    }
    t.done();
}
