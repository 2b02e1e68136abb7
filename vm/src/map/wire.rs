//! Wiring in the map (`mlock`, `mlock2`): an entry's wired count and its
//! pages' wirings. The fault path brings the pages in (`fault::wire`,
//! `fault::lock`); here the entries are marked, and unwired with their pages.

use super::{MapEntry, MapError, PAGE, VmMap};
use crate::page::Queue;
use alloc::vec::Vec;

/// A range to lock, and how (`mlock2`'s `MLOCK_ONFAULT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockRange {
    pub start: u64,
    pub end: u64,
    /// Pages are wired as they are faulted in, not all brought in now.
    pub on_fault: bool,
}

/// Which pages of a range just locked the fault path must wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fill {
    /// Every page: brought in if missing.
    All,
    /// Those mapped already (the rest are wired at their faults).
    Present,
}

/// Part of a range `lock_entries` locked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ToLock {
    pub start: u64,
    pub end: u64,
    pub fill: Fill,
    /// Not wired before: a failure unwires it again.
    pub newly: bool,
}

impl VmMap {
    /// Locks `[start, end)` as `mlock2` does: an entry not wired yet is
    /// wired once (locks do not nest), page by page as it is faulted in
    /// when `on_fault`; a range locked on fault and locked again without
    /// it must have all its pages now. Says what the fault path has to
    /// bring in and wire (see `fault::lock`); like ranges join.
    pub(crate) fn lock_entries(&mut self, start: u64, end: u64, on_fault: bool) -> Result<Vec<ToLock>, MapError> {
        self.check_range(start, end)?;
        if !self.fully_mapped(start, end) {
            return Err(MapError::NoEntry);
        }
        // Room first (clipping keeps the count of entries in the range):
        // `simplify` may join the range's entries and its two neighbours.
        let n = self.overlapping(start, end).count();
        let mut todo = Vec::new();
        todo.try_reserve_exact(n).map_err(|_| MapError::NoMemory)?;
        self.deferred.reserve(n + 2)?;
        for k in self.clipped(start, end, false)? {
            let e = self.entries.get_mut(&k).unwrap();
            let newly = e.wired_count == 0;
            // A range no access reaches has no pages to bring in: it is
            // locked on fault, whatever was asked (as Linux's population
            // passes over it), and its pages are wired when it is opened.
            let on_fault = on_fault || e.prot.is_empty();
            let fill = if newly {
                e.wired_count = 1;
                e.lock_on_fault = on_fault;
                Some(if on_fault { Fill::Present } else { Fill::All })
            } else if e.lock_on_fault && !on_fault {
                e.lock_on_fault = false;
                Some(Fill::All)
            } else {
                // Locked already: every page it maps is wired, so locking
                // on fault from now on changes nothing else.
                e.lock_on_fault |= on_fault;
                None
            };
            if let Some(fill) = fill {
                todo.push(ToLock { start: e.start, end: e.end, fill, newly });
            }
        }
        self.simplify(start, end);
        self.timestamp += 1;
        Ok(todo)
    }

    /// Drops one wiring of `[start, end)`; pages of entries no longer wired
    /// are unwired (onto the active queue), and like entries join again.
    pub fn unwire(&mut self, start: u64, end: u64) -> Result<(), MapError> {
        self.check_range(start, end)?;
        if !self.fully_mapped(start, end) {
            return Err(MapError::NoEntry);
        }
        let keys = self.clipped(start, end, false)?;
        // Joining is worth having, not needed: without room, it waits.
        let join = self.deferred.reserve(keys.len() + 2).is_ok();
        for k in keys {
            let e = self.entries.get_mut(&k).unwrap();
            if e.wired_count == 0 {
                continue;
            }
            e.wired_count -= 1;
            if e.wired_count == 0 {
                e.lock_on_fault = false;
                let e = e.clone();
                self.unwire_pages(&e);
            }
        }
        if join {
            self.simplify(start, end);
        }
        self.timestamp += 1;
        Ok(())
    }

    /// Drops the wiring each page of `e` holds for the entry. Goes by the
    /// pages the pmap has (mappings and orphaned wirings), not by
    /// addresses: a wiring that failed part way through a huge entry leaves
    /// few pages to visit.
    pub(super) fn unwire_pages(&self, e: &MapEntry) {
        let pm = self.env.pm;
        let mut next = e.start;
        while let Some(va) = self.pmap.next_used(next, e.end) {
            next = va + PAGE;
            if let Some((pa, _)) = self.pmap.extract(va) {
                self.pmap.unwire(va);
                if let Some(page) = pm.page_of(pa)
                    && page.is_managed()
                    && page.wired()
                {
                    pm.unwire(page, Queue::Active);
                }
            } else if let Some(pa) = self.pmap.take_orphan(va) {
                // A wired page that left its object (truncation) while
                // mapped here: this wiring was the entry's.
                if let Some(page) = pm.page_of(pa) {
                    pm.unwire(page, Queue::Active);
                }
            }
        }
    }
}
