//! A look at what an address space maps, for reports (`/proc/PID/smaps`
//! and `pagemap`): each present leaf of a range with its accessed and
//! dirty bits, read without changing anything.

use core::sync::atomic::Ordering;

use super::{A, ADDR, D, LEAF_SPAN, RW, SW_WIRED, X86Pmap, first_used};

/// What one present leaf entry maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    pub va: u64,
    pub phys: u64,
    pub writable: bool,
    /// The MMU has used the entry since its accessed bit was last cleared.
    pub accessed: bool,
    /// The MMU has written through the entry since it was made clean.
    pub dirty: bool,
    pub wired: bool,
}

impl X86Pmap {
    /// Calls `f` for each page of `[start, end)` mapped now, in address
    /// order. The pmap's lock is held around one leaf table at a time, so
    /// faults go on between them; `f` runs under it and may read pages'
    /// states but take no lock. The cost follows the tables in use, not the
    /// length of the range.
    pub fn scan(&self, start: u64, end: u64, mut f: impl FnMut(Leaf)) {
        let end = end.min(super::USER_END);
        let mut cur = start;
        while cur < end {
            let _pmap = self.lock.lock();
            let Some(first) = first_used(self.pml4, 3, 0, cur, end) else { return };
            let table_end = ((first | (LEAF_SPAN - 1)) + 1).min(end);
            self.for_each_leaf(first, table_end, None, |va, e| {
                let v = e.load(Ordering::Acquire);
                f(Leaf {
                    va,
                    phys: v & ADDR,
                    writable: v & RW != 0,
                    accessed: v & A != 0,
                    dirty: v & D != 0,
                    wired: v & SW_WIRED != 0,
                });
            });
            cur = table_end;
        }
    }
}
