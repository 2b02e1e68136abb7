//! A software pmap: page tables as ordered maps, with the same rules as the
//! hardware one (valid pages only, PV entries, wired marks, modified and
//! referenced bits, a page-table budget that can run out). Host tests use it
//! to test maps and faults without hardware; `touch` plays the MMU.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::sync::Mutex;

use super::{PageMappings, Pmap, PmapError, Prot, TlbFlush};
use crate::PAGE_SIZE;
use crate::page::Page;

/// One software page-table entry.
#[derive(Clone, Copy, Debug)]
struct Pte {
    page: &'static Page,
    prot: Prot,
    wired: bool,
    referenced: bool,
    modified: bool,
}

/// A machine: the PV entries of every page across its address spaces.
pub struct SoftMachine {
    /// page physical address -> (address space id, va).
    pv: Mutex<BTreeMap<u64, BTreeSet<(usize, u64)>>>,
    spaces: Mutex<BTreeMap<usize, Arc<SoftPmap>>>,
    next_id: AtomicUsize,
    /// When set, every `enter` that would need a new page table fails.
    pub fail_enter: AtomicBool,
}

/// One software address space.
pub struct SoftPmap {
    id: usize,
    machine: &'static SoftMachine,
    ptes: Mutex<BTreeMap<u64, Pte>>,
    /// Wirings left by orphan_wired, by address.
    orphans: Mutex<BTreeMap<u64, &'static Page>>,
}

/// Why the MMU refused an access in [`SoftPmap::touch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trap {
    NotPresent,
    Protection,
}

impl SoftMachine {
    pub fn new() -> SoftMachine {
        SoftMachine {
            pv: Mutex::new(BTreeMap::new()),
            spaces: Mutex::new(BTreeMap::new()),
            next_id: AtomicUsize::new(1),
            fail_enter: AtomicBool::new(false),
        }
    }

    /// A new, empty address space on this machine.
    pub fn new_pmap(&'static self) -> Arc<SoftPmap> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let p = Arc::new(SoftPmap { id, machine: self, ptes: Mutex::new(BTreeMap::new()), orphans: Mutex::new(BTreeMap::new()) });
        self.spaces.lock().insert(id, p.clone());
        p
    }

    /// Mappings of `page` as (address space id, va).
    fn mappings_of(&self, page: &Page) -> Vec<(usize, u64)> {
        self.pv.lock().get(&page.phys()).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    fn space(&self, id: usize) -> Arc<SoftPmap> {
        self.spaces.lock().get(&id).cloned().expect("PV entry of an unknown address space")
    }

    fn each_pte(&self, page: &'static Page, mut f: impl FnMut(&mut Pte)) {
        for (id, va) in self.mappings_of(page) {
            let space = self.space(id);
            let mut ptes = space.ptes.lock();
            if let Some(pte) = ptes.get_mut(&va) {
                f(pte);
            }
        }
    }
}

impl Default for SoftMachine {
    fn default() -> Self {
        Self::new()
    }
}

impl SoftPmap {
    fn pv_add(&self, page: &'static Page, va: u64) {
        self.machine.pv.lock().entry(page.phys()).or_default().insert((self.id, va));
        page.add_mapping();
    }

    fn pv_remove(&self, page: &'static Page, va: u64) {
        let mut pv = self.machine.pv.lock();
        let set = pv.get_mut(&page.phys()).expect("mapping without a PV entry");
        assert!(set.remove(&(self.id, va)), "mapping without a PV entry");
        if set.is_empty() {
            pv.remove(&page.phys());
        }
        drop(pv);
        page.remove_mapping();
    }

    /// The MMU: an access of `kind` at `va`. Sets the referenced and modified
    /// bits as hardware does, or reports the trap.
    pub fn touch(&self, va: u64, kind: Prot) -> Result<&'static Page, Trap> {
        self.access(va, kind, |page| page)
    }

    /// The MMU and the access together: `f` runs on the page while the
    /// translation is held, as a CPU's load or store completes before an
    /// unmap or write-protect that races with it takes effect (on hardware,
    /// the TLB shootdown waits for it). Tests whose threads race with
    /// unmaps access memory this way.
    pub fn access<R>(&self, va: u64, kind: Prot, f: impl FnOnce(&'static Page) -> R) -> Result<R, Trap> {
        let mut ptes = self.ptes.lock();
        let pte = ptes.get_mut(&(va & !(PAGE_SIZE as u64 - 1))).ok_or(Trap::NotPresent)?;
        if !pte.prot.contains(kind) {
            return Err(Trap::Protection);
        }
        pte.referenced = true;
        if kind.contains(Prot::WRITE) {
            pte.modified = true;
        }
        Ok(f(pte.page))
    }

    /// Mappings in the address space.
    pub fn len(&self) -> usize {
        self.ptes.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every mapping and forgets the address space.
    pub fn destroy(&self) {
        self.remove(0, u64::MAX).skip_not_loaded();
        self.machine.spaces.lock().remove(&self.id);
    }
}

fn soft_flush(_: usize, _: u64, _: u64) {}

impl Pmap for SoftPmap {
    fn enter(&self, va: u64, page: &'static Page, prot: Prot, wired: bool) -> Result<TlbFlush, PmapError> {
        assert!(page.valid() != 0, "page {:#x}: an invalid page is never mapped (rule 2)", page.phys());
        assert_eq!(va % PAGE_SIZE as u64, 0);
        let mut ptes = self.ptes.lock();
        let old = ptes.get(&va).copied();
        if old.is_none() && self.machine.fail_enter.load(Ordering::Relaxed) {
            return Err(PmapError::NoMemory);
        }
        if let Some(o) = old
            && !core::ptr::eq(o.page, page)
        {
            drop(ptes);
            self.pv_remove(o.page, va);
            ptes = self.ptes.lock();
        }
        let same = old.is_some_and(|o| core::ptr::eq(o.page, page));
        ptes.insert(va, Pte { page, prot, wired, referenced: false, modified: same && old.is_some_and(|o| o.modified) });
        drop(ptes);
        if !same {
            self.pv_add(page, va);
        }
        Ok(if old.is_some() { TlbFlush::range(0, va, va + PAGE_SIZE as u64, soft_flush) } else { TlbFlush::none() })
    }

    fn remove(&self, start: u64, end: u64) -> TlbFlush {
        let gone: Vec<(u64, Pte)> = {
            let mut ptes = self.ptes.lock();
            let keys: Vec<u64> = ptes.range(start..end).map(|(k, _)| *k).collect();
            keys.into_iter().map(|k| (k, ptes.remove(&k).unwrap())).collect()
        };
        for (va, pte) in &gone {
            if pte.modified {
                pte.page.set_all_dirty();
            }
            self.pv_remove(pte.page, *va);
        }
        if gone.is_empty() { TlbFlush::none() } else { TlbFlush::range(0, start, end, soft_flush) }
    }

    fn protect(&self, start: u64, end: u64, prot: Prot) -> TlbFlush {
        let mut ptes = self.ptes.lock();
        let mut any = false;
        for (_, pte) in ptes.range_mut(start..end) {
            if pte.prot.contains(Prot::WRITE) && !prot.contains(Prot::WRITE) && pte.modified {
                pte.page.set_all_dirty();
            }
            any |= pte.prot != pte.prot & prot;
            pte.prot &= prot;
        }
        if any { TlbFlush::range(0, start, end, soft_flush) } else { TlbFlush::none() }
    }

    fn extract(&self, va: u64) -> Option<(u64, Prot)> {
        let ptes = self.ptes.lock();
        let pte = ptes.get(&(va & !(PAGE_SIZE as u64 - 1)))?;
        Some((pte.page.phys() + (va & (PAGE_SIZE as u64 - 1)), pte.prot))
    }

    fn take_orphan(&self, va: u64) -> Option<u64> {
        self.orphans.lock().remove(&(va & !(PAGE_SIZE as u64 - 1))).map(|p| p.phys())
    }

    fn next_used(&self, start: u64, end: u64) -> Option<u64> {
        let mapped = self.ptes.lock().range(start..end).next().map(|(va, _)| *va);
        let orphan = self.orphans.lock().range(start..end).next().map(|(va, _)| *va);
        match (mapped, orphan) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn wired_at(&self, va: u64) -> bool {
        self.ptes.lock().get(&(va & !(PAGE_SIZE as u64 - 1))).is_some_and(|p| p.wired)
    }

    fn unwire(&self, va: u64) {
        if let Some(pte) = self.ptes.lock().get_mut(&va) {
            pte.wired = false;
        }
    }

    fn move_range(&self, from: u64, to: u64, len: u64) -> Result<TlbFlush, PmapError> {
        assert!(from.checked_add(len).is_some_and(|e| e <= to) || to.checked_add(len).is_some_and(|e| e <= from));
        let moved: Vec<u64> = {
            let mut ptes = self.ptes.lock();
            assert!(ptes.range(to..to + len).next().is_none(), "move_range into mapped addresses");
            let keys: Vec<u64> = ptes.range(from..from + len).map(|(k, _)| *k).collect();
            if !keys.is_empty() && self.machine.fail_enter.load(Ordering::Relaxed) {
                return Err(PmapError::NoMemory);
            }
            // The PV lock under the entries': nothing takes them the
            // other way round (the walks copy a page's list first).
            let mut pv = self.machine.pv.lock();
            for &k in &keys {
                let pte = ptes.remove(&k).unwrap();
                let set = pv.get_mut(&pte.page.phys()).expect("mapping without a PV entry");
                assert!(set.remove(&(self.id, k)), "mapping without a PV entry");
                set.insert((self.id, k - from + to));
                ptes.insert(k - from + to, pte);
            }
            keys
        };
        let mut orphans = self.orphans.lock();
        let marks: Vec<u64> = orphans.range(from..from + len).map(|(k, _)| *k).collect();
        for k in &marks {
            let page = orphans.remove(k).unwrap();
            orphans.insert(k - from + to, page);
        }
        Ok(if moved.is_empty() { TlbFlush::none() } else { TlbFlush::range(0, from, from + len, soft_flush) })
    }

    fn wired_count(&self) -> usize {
        self.ptes.lock().values().filter(|p| p.wired).count()
    }
}

impl PageMappings for SoftMachine {
    fn remove_all(&self, page: &'static Page) {
        for (id, va) in self.mappings_of(page) {
            self.space(id).remove(va, va + PAGE_SIZE as u64).skip_not_loaded();
        }
        assert!(page.mapping_count() == 0);
    }

    fn write_protect_all(&self, page: &'static Page) {
        for (id, va) in self.mappings_of(page) {
            self.space(id).protect(va, va + PAGE_SIZE as u64, Prot::READ | Prot::EXEC).skip_not_loaded();
        }
    }

    fn is_modified(&self, page: &'static Page) -> bool {
        let mut m = false;
        self.each_pte(page, |p| m |= p.modified);
        m
    }

    fn orphan_wired(&self, page: &'static Page) {
        for (id, va) in self.mappings_of(page) {
            let space = self.space(id);
            let wired = space.ptes.lock().get(&va).is_some_and(|p| p.wired);
            space.remove(va, va + PAGE_SIZE as u64).skip_not_loaded();
            if wired {
                space.orphans.lock().insert(va, page);
            }
        }
        assert!(page.mapping_count() == 0);
    }

    fn clear_modify(&self, page: &'static Page) {
        self.each_pte(page, |p| p.modified = false);
    }

    fn ts_referenced(&self, page: &'static Page) -> u32 {
        let mut n = 0;
        self.each_pte(page, |p| {
            n += p.referenced as u32;
            p.referenced = false;
        });
        n
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use alloc::boxed::Box;

    use super::*;

    /// Rule 2: the pmap refuses to enter a page none of whose blocks is
    /// valid (the hardware pmap asserts the same).
    #[test]
    #[should_panic(expected = "an invalid page is never mapped (rule 2)")]
    fn an_invalid_page_is_never_entered() {
        let machine: &'static SoftMachine = Box::leak(Box::new(SoftMachine::new()));
        let pmap = machine.new_pmap();
        let page: &'static Page = Box::leak(Box::new(Page::new(0x1000, 0)));
        assert!(page.try_xbusy());
        page.set_valid_range(0, 512);
        assert!(pmap.enter(0x4000, page, Prot::READ, false).is_ok(), "a page with a valid block is mapped");
        pmap.remove(0, u64::MAX).skip_not_loaded();
        page.invalidate();
        let _ = pmap.enter(0x5000, page, Prot::READ, false);
    }
}
