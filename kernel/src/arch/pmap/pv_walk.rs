//! The PV walks: every mapping of one page, reached through its PV list
//! (`vm::pmap::PageMappings`): remove them all (page-out), write-protect
//! them (before a page is written to its store), test and clear the
//! modified and accessed bits.
//!
//! **Locks.** A walk holds the page's PV-list lock throughout, and each
//! mapping's pmap lock while it changes that mapping's entry. The lock
//! order is the other way round (pmap, then PV list), so the pmap lock is
//! only tried; when another CPU holds it, the walk counts itself in the
//! pmap's `walkers` (keeping it alive), lets the list go, waits for the
//! pmap lock, and takes the list again. If the bucket's generation moved
//! meanwhile the list may have changed under it: it lets both go and
//! starts over (a walk is idempotent: the mappings it dealt with already
//! are gone, or already read-only or clean).
//!
//! **Flushing after the locks.** A walk waits for no other CPU while it
//! holds them: a shootdown's acknowledgements take an IPI round trip per
//! target CPU (under emulation, with more virtual CPUs than host cores,
//! each round trip can take milliseconds), and a walk that flushed each
//! mapping under them would keep faults on every CPU spinning for it. The
//! flushes a walk owes are kept in an [`Owed`] list, and done once the
//! locks are let go, before the walk returns: when it returns, no CPU
//! holds a translation the walk removed or changed.
//!
//! A pmap found in a PV list is alive while the list's lock or its own is
//! held (an address space being torn down removes its mappings under its
//! pmap lock, taking each list's lock, then frees the pmap). So a walk
//! counts itself in the pmap's `walkers` before it lets both go, and the
//! pmap's `Drop`, once its mappings are gone, waits for its walkers to be
//! done with it.
//!
//! The walk reads the PV list in place (no copy: page-out must not need the
//! heap). An [`Owed`] list holds [`OWED_MAX`] flushes; a page with more
//! mappings to change is walked again after the first ones are flushed
//! (each walk finds the ones it changed already done).

use core::sync::atomic::{AtomicU64, Ordering};

use vm::PAGE_SIZE;
use vm::page::Page;
use vm::pmap::{PageMappings, Prot};

use super::pv_chunk::Chunks;
use super::walk::free_tables;
use super::{A, D, P, Pv, SW_ORPHAN, SW_WIRED, X86Mappings, X86Pmap, g, leaf_at, leaf_va};

/// Flushes an [`Owed`] list holds before they are done.
const OWED_MAX: usize = 16;

/// Walks that found a pmap's lock taken and waited for it with the list let
/// go, and those of them that found the list changed and started over: for
/// the tests and the debugger. (A; counters.)
pub static WAITED: AtomicU64 = AtomicU64::new(0);
pub static RESTARTED: AtomicU64 = AtomicU64::new(0);

/// The flushes a PV walk owes: one page of one pmap each, with the page
/// tables the change emptied (to be freed after the flush).
struct Owed {
    n: usize,
    items: [(*const X86Pmap, u64, u64); OWED_MAX],
}

impl Owed {
    fn new() -> Owed {
        Owed { n: 0, items: [(core::ptr::null(), 0, 0); OWED_MAX] }
    }

    fn is_full(&self) -> bool {
        self.n == OWED_MAX
    }

    /// Records a flush of `va` in `pmap` (and the tables `emptied`), with
    /// the pmap's lock held: the pmap stays alive until [`Owed::settle`].
    fn push(&mut self, pmap: &X86Pmap, va: u64, emptied: u64) {
        debug_assert!(!self.is_full());
        // Relaxed: under the pmap's lock, which its `Drop` takes (to
        // remove its mappings) before it waits for walkers.
        pmap.walkers.fetch_add(1, Ordering::Relaxed);
        self.items[self.n] = (pmap as *const X86Pmap, va, emptied);
        self.n += 1;
    }

    /// Does every flush, with the pmap lock let go; then frees the tables
    /// and lets the pmaps go.
    fn settle(self) {
        for &(pmap, va, emptied) in &self.items[..self.n] {
            // SAFETY: counted in its walkers under the lock (`push`): its
            // `Drop` waits for this.
            let pmap = unsafe { &*pmap };
            pmap.flush(va, va + PAGE_SIZE as u64);
            free_tables(emptied);
            // Release pairs with the Acquire wait in `X86Pmap::drop`: the
            // flush above is done before the pmap can be freed.
            pmap.walkers.fetch_sub(1, Ordering::Release);
        }
    }
}

/// Calls `f(pmap, chunks, entry, va)` for each mapping of `page` (its leaf
/// entry and address), with the page's PV-list lock and the mapping's
/// pmap lock held, collecting the flushes it owes
/// in an [`Owed`] list; `f` returns whether it changed the entry and, if
/// so, the tables it emptied. Walks again while a list filled up or the
/// list changed while a pmap lock was waited for. The flushes are done
/// after the locks are let go.
fn walk(page: &'static Page, mut f: impl FnMut(&X86Pmap, &mut Chunks, &'static AtomicU64, u64) -> Option<u64>) {
    let gl = g();
    let i = gl.pm.index_of(page) as usize;
    let bucket = gl.bucket(i);
    loop {
        let mut owed = Owed::new();
        let mut list = bucket.lock.lock();
        let mut cur = gl.heads.at(i).load(Ordering::Relaxed) as *const Pv;
        let mut changed = false;
        while !cur.is_null() && !owed.is_full() {
            // SAFETY: a live PV item, read under the list's lock; its next
            // is read before `f` may remove it.
            let (pmap, leaf, next) = unsafe { ((*cur).pmap, (*cur).leaf, (*cur).next) };
            // SAFETY: a listed mapping's pmap is alive while the list's
            // lock is held (its `Drop` removes its mappings first).
            let pmap = unsafe { &*pmap };
            let mut held = match pmap.lock.try_lock() {
                Some(held) => held,
                None => {
                    // Against the order: wait for the pmap with the list
                    // let go, the pmap kept alive by the count. Relaxed:
                    // raised while the list's lock keeps the pmap alive;
                    // the Release decrement below pairs with `Drop`.
                    WAITED.fetch_add(1, Ordering::Relaxed);
                    let generation = bucket.generation.load(Ordering::Relaxed);
                    pmap.walkers.fetch_add(1, Ordering::Relaxed);
                    drop(list);
                    let held = pmap.lock.lock();
                    list = bucket.lock.lock();
                    // Relaxed: raised under the list's lock, which is held.
                    changed = bucket.generation.load(Ordering::Relaxed) != generation;
                    let held = if changed {
                        RESTARTED.fetch_add(1, Ordering::Relaxed);
                        drop(held);
                        None
                    } else {
                        Some(held)
                    };
                    // Release pairs with the Acquire wait in `Drop`: the
                    // pmap is not touched after this. (When the walk goes
                    // on, it holds the pmap's lock, which keeps it alive.)
                    pmap.walkers.fetch_sub(1, Ordering::Release);
                    match held {
                        Some(held) => held,
                        None => break,
                    }
                }
            };
            // The entry and its address, read under the pmap lock (a
            // table moved whole changes its base under it).
            let va = leaf_va(leaf);
            if let Some(emptied) = f(pmap, &mut held, leaf_at(leaf), va) {
                owed.push(pmap, va, emptied);
            }
            drop(held);
            cur = next;
        }
        drop(list);
        owed.settle();
        if cur.is_null() && !changed {
            return;
        }
    }
}

impl PageMappings for X86Mappings {
    fn remove_all(&self, page: &'static Page) {
        walk(page, |pmap, chunks, _, va| {
            let mut emptied = 0;
            let mut any = false;
            // By the range walk, which unlinks the tables it empties.
            pmap.for_each_leaf(va, va + PAGE_SIZE as u64, Some(&mut emptied), |_, e| {
                pmap.clear_leaf(chunks, e, true);
                any = true;
            });
            (any || emptied != 0).then_some(emptied)
        });
    }

    fn write_protect_all(&self, page: &'static Page) {
        walk(page, |pmap, _, _, va| {
            let flush = pmap.protect_locked(va, va + PAGE_SIZE as u64, Prot::READ | Prot::EXEC);
            let owed = !flush.is_empty();
            // Done by the walk, after the lock (`Owed`).
            flush.skip_not_loaded();
            owed.then_some(0)
        });
    }

    fn is_modified(&self, page: &'static Page) -> bool {
        let mut m = false;
        walk(page, |_, _, e, _| {
            m |= e.load(Ordering::Acquire) & D != 0;
            None
        });
        m
    }

    fn orphan_wired(&self, page: &'static Page) {
        walk(page, |pmap, chunks, e, _| {
            // Cleared in place (the page table stays: it holds the mark).
            let old = pmap.clear_leaf(chunks, e, true);
            if old & P != 0 && old & SW_WIRED != 0 {
                e.store(page.phys() | SW_ORPHAN, Ordering::Release);
            }
            Some(0)
        });
    }

    // A cleared modified or referenced bit is flushed before the walk
    // returns: a CPU that kept the old entry would write (or read) through
    // it without setting the bit again.

    fn clear_modify(&self, page: &'static Page) {
        walk(page, |_, _, e, _| clear_bit(e, D).then_some(0));
    }

    fn ts_referenced(&self, page: &'static Page) -> u32 {
        let mut n = 0;
        walk(page, |_, _, e, _| {
            let was = clear_bit(e, A);
            n += was as u32;
            was.then_some(0)
        });
        n
    }
}

/// Clears `bit` in leaf entry `e`; whether it was set.
fn clear_bit(e: &AtomicU64, bit: u64) -> bool {
    e.fetch_and(!bit, Ordering::AcqRel) & bit != 0
}
