//! Mapping a fault's resident neighbours (`vm_fault_prefault`).

use super::PREFAULT;
use crate::PAGE_SIZE;
use crate::map::{Lookup, VmMap};
use crate::pmap::Prot;

/// Maps resident, valid, idle neighbours of the faulting page in the first
/// object, so that a sequential walk does not fault on every page. Returns
/// how many it mapped.
#[inline(never)]
pub(super) fn prefault(lk: &Lookup, va_fault: u64, map: &VmMap, prot: Prot) -> u32 {
    let page = PAGE_SIZE as u64;
    let lo = va_fault.saturating_sub(PREFAULT * page).max(lk.entry_start);
    let hi = (va_fault + (PREFAULT + 1) * page).min(lk.entry_end);
    // Private mappings get neighbours read-only: a write must still fault
    // to keep the dirty bits exact.
    let prot = if lk.cow { prot - Prot::WRITE } else { prot };
    // Page index of the entry's start, and the window's indices.
    let base = lk.pindex - (va_fault - lk.entry_start) / page;
    let (first, last) = (base + (lo - lk.entry_start) / page, base + (hi - lk.entry_start) / page);
    let fault_pindex = lk.pindex;
    let mut n = 0;
    // Only resident pages are candidates: one walk of the trie over the
    // window, none of the page tables unless there is something to map.
    lk.object.lock().for_each_in(first, last, |p| {
        if p.pindex() == fault_pindex || !p.all_valid() {
            return;
        }
        let va = lk.entry_start + (p.pindex() - base) * page;
        if !p.try_sbusy() {
            return;
        }
        // Only where nothing is mapped yet: one pmap call for the check and
        // the mapping.
        if map.pmap().enter_quick(va, p, prot) == Ok(true) {
            n += 1;
        }
        p.sunbusy();
    });
    n
}
