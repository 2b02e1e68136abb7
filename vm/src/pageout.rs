//! The pageout daemon's work: reclaiming pages when free memory runs low,
//! as FreeBSD's `vm_pageout.c` does it, in three passes over the paging
//! queues. The kernel runs them from its daemon threads (the policy of
//! when, and how many, is there); this module is the page protocol.
//!
//! ```text
//!   active ──(not referenced)──► inactive ──(clean)──► free
//!     ▲                             │  │
//!     └──────(referenced)───────────┘  └──(dirty)──► laundry ──(written)──► free
//!     ▲                                                 │
//!     └────────────(referenced, or the write failed)────┘
//! ```
//!
//! - [`scan_active`] ages the active queue: pages not referenced since the
//!   last look (the page's flag and the hardware accessed bits, cleared as
//!   they are read) move to the inactive queue.
//! - [`scan_inactive`] frees clean, unreferenced inactive pages after
//!   removing their mappings; referenced ones go back to active, dirty ones
//!   to the laundry.
//! - [`scan_laundry`] writes laundry pages out through their object's pager, in
//!   clusters of neighbours, and completes each write: written pages are
//!   clean and, still marked [`PageFlags::FREE_AFTER_WRITE`], freed (rule
//!   16); pages whose write failed keep their data and dirty bits, lose the
//!   mark, and go back to the active queue. An anonymous object meets its
//!   pager here: at its first page-out it becomes a swap object.
//!
//! Every page is handled exclusively busy, taken with `try_xbusy` under the
//! queue lock (never waited for: a busy page is someone else's and is
//! skipped). The busy hold is also what keeps the page's object alive while
//! it is examined ([`VmObject::from_handle`]): termination waits for every
//! busy page. Wired pages live off the queues; one found on a queue (wired
//! since it was queued) is taken off. No page is ever left off a queue
//! unbusied (rule 4).

use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::object::{ObjectKind, Pager, VmObject};
use crate::page::{Page, PageFlags, Queue};
use crate::phys::PhysMem;
use crate::pmap::PageMappings;

/// Most pages in one page-out write (FreeBSD's `vm_pageout_page_count`).
pub const CLUSTER: usize = 32;

/// What a pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassStats {
    pub scanned: u64,
    pub freed: u64,
    pub reactivated: u64,
    pub deactivated: u64,
    pub to_laundry: u64,
    /// Pages written out, and write requests (clusters) issued.
    pub written: u64,
    pub writes: u64,
    /// Pages whose write failed (kept dirty and resident).
    pub write_failed: u64,
    /// Dirty anonymous pages that had nowhere to go (no swap, or swap full).
    pub no_swap: u64,
}

impl PhysMem {
    /// The first page from the head of `which` that can be busied now,
    /// exclusively busy, moved to the tail (so that a pass of `budget`
    /// pages looks at each once). Pages that are busy are moved to the
    /// tail too and skipped. `None` when the budget is spent.
    fn next_busy(&self, which: Queue, budget: &mut u64) -> Option<&'static Page> {
        let mut q = self.queues.lock();
        while *budget > 0 {
            *budget -= 1;
            let idx = q.lists[which as usize].head;
            if idx == crate::page::NIL {
                return None;
            }
            self.queue_remove(&mut q, idx);
            self.queue_insert_tail(&mut q, idx, which);
            let page = self.page(idx);
            if page.try_xbusy() {
                return Some(page);
            }
        }
        None
    }
}

/// Reads and clears whether `page` was used since the last look.
fn referenced(page: &'static Page, mappings: &dyn PageMappings) -> bool {
    let flag = page.flags().contains(PageFlags::REFERENCED);
    page.clear_flags(PageFlags::REFERENCED);
    // Both are cleared: the accessed bits must be read even when the flag
    // already answers.
    let hw = mappings.ts_referenced(page) > 0;
    flag || hw
}

/// The object of a busy page found on a queue, or `None` (after dealing
/// with the page) when the page should not be on a queue at all.
fn object_of(pm: &PhysMem, page: &'static Page) -> Option<&'static VmObject> {
    // Wired since it was queued: wired pages live off the queues. (Under
    // the queue lock: a last unwire queues the page and drops its wiring
    // under it, and the page must not be taken off between the two.)
    #[cfg(loom)]
    let wired = if crate::sync::model::broken(crate::sync::model::Break::PageoutIgnoresWiring) {
        false
    } else {
        pm.dequeue_if_wired(page)
    };
    #[cfg(not(loom))]
    let wired = pm.dequeue_if_wired(page);
    match page.object() {
        Some(h) if !wired => {
            // SAFETY: the page is exclusively busy and belongs to `h`:
            // termination of `h` waits for the busy page.
            Some(unsafe { VmObject::from_handle(h) })
        }
        // Taken off its queue above (and its last unwire, which may have
        // come since, queued it again: it stays).
        Some(_) => {
            page.xunbusy();
            None
        }
        // In no object: not the daemon's (nor any queue's).
        None => {
            pm.dequeue(page);
            page.xunbusy();
            None
        }
    }
}

/// Frees `page` (exclusively busy, clean, unwired, in `object`) after
/// removing its mappings; if a mapping had dirtied it meanwhile, it goes
/// to the laundry instead. Returns whether it was freed.
fn reclaim(pm: &PhysMem, mappings: &dyn PageMappings, object: &VmObject, page: &'static Page) -> bool {
    mappings.remove_all(page);
    if page.dirty() != 0 {
        pm.launder(page);
        page.xunbusy();
        return false;
    }
    if object.kind() == ObjectKind::Swap && !page.flags().contains(PageFlags::DISCARDABLE) {
        let pager = object.lock().pager();
        assert!(
            pager.is_some_and(|p| p.has_page(page.pindex()).is_some()),
            "page {:#x}: clean in a swap object at index {} with no swap slot (rule 14): freeing it would lose its data",
            page.phys(),
            page.pindex()
        );
    }
    let may_free = object.lock().remove(page);
    if may_free {
        pm.free(page);
    } else {
        page.xunbusy();
    }
    may_free
}

/// Moves up to `count` unreferenced pages from the active queue to the
/// inactive one.
pub fn scan_active(pm: &PhysMem, mappings: &dyn PageMappings, count: u64) -> PassStats {
    let mut st = PassStats::default();
    let mut budget = pm.queue_count(Queue::Active).min(count);
    while let Some(page) = pm.next_busy(Queue::Active, &mut budget) {
        st.scanned += 1;
        if object_of(pm, page).is_none() {
            continue;
        }
        if !referenced(page, mappings) {
            pm.deactivate(page);
            st.deactivated += 1;
        }
        page.xunbusy();
    }
    st
}

/// The next page of a pass over `which`: `None` when the budget is spent;
/// `Some(None)` when the page was dealt with here (wired, or referenced:
/// reactivated); else the page, exclusively busy and unreferenced since the
/// last look, and its object.
#[allow(clippy::type_complexity)]
fn candidate(
    pm: &PhysMem,
    mappings: &dyn PageMappings,
    which: Queue,
    budget: &mut u64,
    st: &mut PassStats,
) -> Option<Option<(&'static Page, &'static VmObject)>> {
    let page = pm.next_busy(which, budget)?;
    st.scanned += 1;
    let Some(object) = object_of(pm, page) else { return Some(None) };
    if referenced(page, mappings) {
        pm.activate(page);
        page.xunbusy();
        st.reactivated += 1;
        return Some(None);
    }
    Some(Some((page, object)))
}

/// Frees up to `want` clean, unreferenced pages of the inactive queue;
/// referenced ones are reactivated, dirty ones laundered.
pub fn scan_inactive(pm: &PhysMem, mappings: &dyn PageMappings, want: u64) -> PassStats {
    let mut st = PassStats::default();
    let mut budget = pm.queue_count(Queue::Inactive);
    while st.freed < want {
        let Some(next) = candidate(pm, mappings, Queue::Inactive, &mut budget, &mut st) else { break };
        let Some((page, object)) = next else { continue };
        if page.dirty() != 0 || mappings.is_modified(page) {
            pm.launder(page);
            page.xunbusy();
            st.to_laundry += 1;
            continue;
        }
        if reclaim(pm, mappings, object, page) {
            st.freed += 1;
        } else {
            st.to_laundry += u64::from(page.queue() == Queue::Laundry);
        }
    }
    st
}

/// True if `page` is still dirty after its mappings were write-protected
/// (which moves their modified bits into the page's dirty bits).
fn dirty_after_protect(mappings: &dyn PageMappings, page: &'static Page) -> bool {
    #[cfg(loom)]
    if crate::sync::model::broken(crate::sync::model::Break::LaunderWithoutWriteProtect) {
        return page.dirty() != 0 || mappings.is_modified(page);
    }
    mappings.write_protect_all(page);
    page.dirty() != 0
}

/// Grows `run`, which holds `page` (exclusively busy, in `object`, dirty
/// and write-protected), into a run of consecutive dirty pages of `object`
/// for one write: its neighbours ahead, then behind, within the page
/// indices `bounds`, up to `max` pages and never past `run`'s capacity (no
/// allocation). A neighbour joins if it is resident, `eligible` (looked at
/// under the object's lock), idle (it is busied here), and still dirty once
/// write-protected in every mapping; the first that does not ends the run
/// on that side. Returns how many joined behind `page`: its index in the
/// run.
///
/// The laundry's clustering ([`scan_laundry`]) and a pager's write-back of
/// a range (the vnode pager's flush) build their runs with it.
pub fn dirty_run(
    mappings: &dyn PageMappings,
    object: &VmObject,
    page: &'static Page,
    run: &mut Vec<&'static Page>,
    bounds: core::ops::Range<u64>,
    max: usize,
    eligible: impl Fn(&Page) -> bool,
) -> usize {
    debug_assert!(run.last().is_some_and(|&p| core::ptr::eq(p, page)), "the run starts with its page");
    let max = max.min(run.capacity());
    let take = |pindex: u64| -> Option<&'static Page> {
        if !bounds.contains(&pindex) {
            return None;
        }
        let l = object.lock();
        let q = l.lookup(pindex)?;
        if !eligible(q) || !q.try_xbusy() {
            return None;
        }
        drop(l);
        if dirty_after_protect(mappings, q) {
            Some(q)
        } else {
            q.xunbusy();
            None
        }
    };
    let p = page.pindex();
    let mut i = 1;
    while run.len() < max {
        match p.checked_add(i).and_then(take) {
            Some(q) => run.push(q),
            None => break,
        }
        i += 1;
    }
    let mut behind = 0;
    while run.len() < max && (behind as u64) < p {
        match take(p - 1 - behind as u64) {
            Some(q) => {
                run.insert(0, q);
                behind += 1;
            }
            None => break,
        }
    }
    behind
}

/// Writes out up to `want` pages of the laundry queue. `swap_pager` makes
/// the pager of an anonymous object at its first page-out (`None`: no
/// swap space; the page waits in the laundry).
pub fn scan_laundry(
    pm: &PhysMem,
    mappings: &dyn PageMappings,
    want: u64,
    swap_pager: &dyn Fn() -> Option<Arc<dyn Pager>>,
) -> PassStats {
    let mut st = PassStats::default();
    let mut budget = pm.queue_count(Queue::Laundry);
    while st.written < want {
        let Some(next) = candidate(pm, mappings, Queue::Laundry, &mut budget, &mut st) else { break };
        let Some((page, object)) = next else { continue };
        if !dirty_after_protect(mappings, page) {
            // Clean after all: an ordinary inactive page now.
            pm.deactivate(page);
            page.xunbusy();
            continue;
        }
        let pager = {
            let mut l = object.lock();
            match l.pager() {
                Some(p) => Some(p),
                None if object.kind() == ObjectKind::Anonymous => swap_pager().map(|p| l.make_swap_backed(p)),
                None => None,
            }
        };
        let Some(pager) = pager else {
            // Nowhere to write it: it stays in the laundry (at the tail).
            page.xunbusy();
            st.no_swap += 1;
            continue;
        };
        let mut run: Vec<&'static Page> = Vec::new();
        if run.try_reserve_exact(CLUSTER).is_err() {
            page.xunbusy();
            break;
        }
        run.push(page);
        // Neighbours waiting to be written too: idle, unwired, on the
        // inactive or laundry queue.
        let candidate = |q: &Page| !q.wired() && matches!(q.queue(), Queue::Inactive | Queue::Laundry);
        dirty_run(mappings, object, page, &mut run, 0..u64::MAX, CLUSTER, candidate);
        // Rule 16: marked to be freed when the write completes.
        for q in &run {
            q.set_flags(PageFlags::FREE_AFTER_WRITE);
        }
        object.pip_add();
        let written = pager.put_pages(object, &run).min(run.len());
        object.pip_wakeup();
        st.writes += 1;
        for (i, &q) in run.iter().enumerate() {
            if i < written {
                complete_write(pm, mappings, object, q, &mut st);
            } else {
                // The write failed: the data stays, dirty, and the mark goes.
                q.clear_flags(PageFlags::FREE_AFTER_WRITE);
                pm.activate(q);
                q.xunbusy();
                st.write_failed += 1;
            }
        }
        st.written += written as u64;
    }
    st
}

/// The completion of a page's successful write: it is clean, and freed if
/// still marked so (rule 16) and unused meanwhile; else it is inactive.
fn complete_write(pm: &PhysMem, mappings: &dyn PageMappings, object: &VmObject, page: &'static Page, st: &mut PassStats) {
    page.undirty();
    mappings.clear_modify(page);
    let marked = page.flags().contains(PageFlags::FREE_AFTER_WRITE);
    // On swap now: its copy is a real one again.
    page.clear_flags(PageFlags::FREE_AFTER_WRITE | PageFlags::DISCARDABLE);
    if marked && !page.wired() && !referenced(page, mappings) {
        if reclaim(pm, mappings, object, page) {
            st.freed += 1;
        }
    } else {
        pm.deactivate(page);
        page.xunbusy();
    }
}

#[cfg(test)]
mod tests;
