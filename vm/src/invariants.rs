//! The invariant checker: one walk over every page and list that returns what
//! is wrong, as values. Tests call it after every step; debug builds call it
//! at chosen points. The gdb command `vm check` evaluates the same rules on
//! a stopped kernel (tools/gdb/vmgdb/check.py, kept in step with this file
//! by hand; the host tests `gdb::vm_commands_match_the_kernel_*` compare the
//! two on a kernel with broken pages).
//!
//! What it checks (the rules are in `vm/RULES.md`):
//! - no page in limbo: a managed page in an object is valid, busy, wired or
//!   queued (rule 4);
//! - a free page is not owned, wired, queued, mapped or busy;
//! - the free lists, the cache and the FREE flags agree: every page of every
//!   free block and every cached page is marked free, and no other page is;
//! - no page is on two lists, and each list is well linked;
//! - per-order block counts, the free-page total and the queue counts agree
//!   with the lists;
//! - every busy word is well formed (exclusive with no sharers).
//!
//! The checker takes the cache, free-list and queue locks in turn, so it sees
//! each structure consistent; callers run it when nothing else changes pages.

use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use crate::page::{NIL, PageFlags, PageIndex, Queue};
use crate::phys::{NUM_ORDERS, PhysMem};

/// One broken invariant. Addresses are physical.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Rule 4: in an object, invalid or not, but unbusied, unwired and on no queue.
    Limbo {
        page: u64,
    },
    /// A free page that is still owned, wired, queued, mapped or busy.
    FreeButInUse {
        page: u64,
        what: &'static str,
    },
    /// Marked free but on no free list, nor in the cache or the zero pool.
    FreeFlagNotOnList {
        page: u64,
    },
    /// On a free list, in the cache or in the zero pool but not marked free.
    OnFreeListNotFree {
        page: u64,
    },
    /// In the zero pool without the zero flag.
    ZeroPoolNotZero {
        page: u64,
    },
    /// The zero pool's recorded length is not its list's.
    ZeroPoolCount {
        listed: u64,
        recorded: u64,
    },
    /// Found on two lists, or twice on one.
    OnTwoLists {
        page: u64,
    },
    /// A list whose links do not match (`prev` of the next is not this).
    BadLink {
        page: u64,
    },
    /// A page on queue list `list` whose `queue` field says otherwise.
    WrongQueueField {
        page: u64,
        list: Queue,
        field: Queue,
    },
    FreeBlockCount {
        order: usize,
        listed: u64,
        recorded: u64,
    },
    FreePageTotal {
        listed: u64,
        recorded: u64,
    },
    QueueCount {
        queue: Queue,
        listed: u64,
        recorded: u64,
    },
    /// Exclusive and shared at once.
    BadBusyWord {
        page: u64,
        word: u32,
    },
    /// A free-list head whose order does not match its list.
    BadOrder {
        page: u64,
        list: usize,
        order: Option<u8>,
    },
    /// Rule 16: marked to be freed after its page-out write, but not busy
    /// (only a write under way may carry the mark).
    FreeAfterWriteIdle {
        page: u64,
    },
    /// Rule 14: a clean page of a swap object whose pager holds no copy of
    /// it (freeing it would lose its data).
    CleanWithoutSlot {
        page: u64,
        pindex: u64,
    },
}

/// Checks everything; an empty list means all is well.
pub fn check(pm: &PhysMem) -> Vec<Violation> {
    // Room for the violations found under the allocator's locks: a push
    // that grew the vector there could need a page for the heap, from the
    // allocator whose locks are held.
    let mut out = Vec::with_capacity(64);
    // Pages waiting in the CPUs' batches for a queue go on it first: a
    // page whose mark outlives this is on no list, and shows below.
    pm.flush_queue_batches();
    let n = pm.pages.len();
    // Which list each page is on: 0 none, 1 free block, 2 cache, 3.. queue,
    // ZERO_POOL the zero pool.
    const ZERO_POOL: u8 = u8::MAX;
    let mut on = vec![0u8; n];
    let mark = |on: &mut [u8], idx: PageIndex, tag: u8, out: &mut Vec<Violation>| {
        let slot = &mut on[idx as usize];
        if *slot != 0 {
            out.push(Violation::OnTwoLists { page: pm.page(idx).phys() });
        }
        *slot = tag;
    };

    // Each CPU's cache, then the free lists (the allocator's lock order;
    // one cache at a time, as nothing holds two).
    {
        for cc in &pm.caches {
            let cache = cc.cache.lock();
            for &idx in &cache.pages[..cache.len] {
                mark(&mut on, idx, 2, &mut out);
            }
        }
        let fl = pm.free.lock();
        let mut listed_pages = 0;
        for order in 0..NUM_ORDERS {
            let mut blocks = 0;
            let mut prev = NIL;
            let mut idx = fl.heads[order];
            while idx != NIL && blocks <= n as u64 {
                let head = pm.page(idx);
                if head.free_order() != Some(order as u8) {
                    out.push(Violation::BadOrder { page: head.phys(), list: order, order: head.free_order() });
                }
                if head.prev.load(Ordering::Relaxed) != prev {
                    out.push(Violation::BadLink { page: head.phys() });
                }
                for i in 0..(1u32 << order) {
                    if (idx + i) as usize >= n {
                        break;
                    }
                    mark(&mut on, idx + i, 1, &mut out);
                }
                blocks += 1;
                prev = idx;
                idx = head.next.load(Ordering::Relaxed);
            }
            listed_pages += blocks << order;
            if blocks != fl.blocks[order] {
                out.push(Violation::FreeBlockCount { order, listed: blocks, recorded: fl.blocks[order] });
            }
        }
        if listed_pages != fl.pages {
            out.push(Violation::FreePageTotal { listed: listed_pages, recorded: fl.pages });
        }
        let z = pm.zeroed.lock();
        let mut listed = 0;
        let mut idx = z.head;
        while idx != NIL && listed <= n as u64 {
            mark(&mut on, idx, ZERO_POOL, &mut out);
            if !pm.page(idx).flags().contains(PageFlags::ZERO) {
                out.push(Violation::ZeroPoolNotZero { page: pm.page(idx).phys() });
            }
            listed += 1;
            idx = pm.page(idx).next.load(Ordering::Relaxed);
        }
        if listed != z.len {
            out.push(Violation::ZeroPoolCount { listed, recorded: z.len });
        }
        // The free flag against the lists, while the allocator's locks keep
        // both still: later, an allocation (this check's own, for `out`,
        // may take a page for the heap) would make a listed page look
        // taken, and a free a freed page look lost.
        for (i, p) in pm.pages.iter().enumerate() {
            let listed_free = on[i] == 1 || on[i] == 2 || on[i] == ZERO_POOL;
            match (p.flags().contains(PageFlags::FREE), listed_free) {
                (true, false) => out.push(Violation::FreeFlagNotOnList { page: p.phys() }),
                (false, true) => out.push(Violation::OnFreeListNotFree { page: p.phys() }),
                _ => {}
            }
        }
    }

    {
        let q = pm.queues.lock();
        for which in Queue::PAGING {
            let list = &q.lists[which as usize];
            let mut count = 0;
            let mut prev = NIL;
            let mut idx = list.head;
            while idx != NIL && count <= n as u64 {
                let p = pm.page(idx);
                mark(&mut on, idx, 3 + which as u8, &mut out);
                if p.queue() != which {
                    out.push(Violation::WrongQueueField { page: p.phys(), list: which, field: p.queue() });
                }
                if p.prev.load(Ordering::Relaxed) != prev {
                    out.push(Violation::BadLink { page: p.phys() });
                }
                count += 1;
                prev = idx;
                idx = p.next.load(Ordering::Relaxed);
            }
            if prev != list.tail {
                out.push(Violation::BadLink { page: if prev == NIL { 0 } else { pm.page(prev).phys() } });
            }
            if count != list.count {
                out.push(Violation::QueueCount { queue: which, listed: count, recorded: list.count });
            }
        }
    }

    for (i, p) in pm.pages.iter().enumerate() {
        let phys = p.phys();
        let flags = p.flags();
        let word = p.busy_word();
        if p.xbusied() && p.sbusy_count() > 0 {
            out.push(Violation::BadBusyWord { page: phys, word });
        }
        if flags.contains(PageFlags::FREE) {
            let what = if p.object().is_some() {
                Some("owned by an object")
            } else if p.wired() {
                Some("wired")
            } else if p.queue() != Queue::None || (on[i] >= 3 && on[i] != ZERO_POOL) {
                Some("queued")
            } else if p.mapping_count() != 0 {
                Some("mapped")
            } else if p.busied() {
                Some("busy")
            } else {
                None
            };
            if let Some(what) = what {
                out.push(Violation::FreeButInUse { page: phys, what });
            }
        } else {
            if p.is_managed() && p.object().is_some() && !p.busied() && !p.wired() && p.queue() == Queue::None {
                out.push(Violation::Limbo { page: phys });
            }
            if flags.contains(PageFlags::FREE_AFTER_WRITE) && !p.busied() {
                out.push(Violation::FreeAfterWriteIdle { page: phys });
            }
        }
    }
    out
}

/// Rule 14 over one object's resident pages: in a swap object, a clean
/// page must have a copy in the pager (freeing it would otherwise lose its
/// data), unless its owner gave its contents up (`PageFlags::DISCARDABLE`). Busy pages are in transition and skipped. (The page-array walk
/// of [`check`] cannot do this: it cannot tell a live object from a page's
/// handle alone; the pageout path asserts it at every free.)
pub fn check_object(object: &crate::object::VmObject) -> Vec<Violation> {
    let mut out = Vec::new();
    if object.kind() != crate::object::ObjectKind::Swap {
        return out;
    }
    let Some(pager) = object.lock().pager() else { return out };
    let mut next = 0;
    loop {
        let Some(p) = object.lock().lookup_ge(next) else { break };
        next = p.pindex() + 1;
        if !p.try_xbusy() {
            continue;
        }
        if p.dirty() == 0
            && p.all_valid()
            && !p.flags().contains(crate::page::PageFlags::DISCARDABLE)
            && pager.has_page(p.pindex()).is_none()
        {
            out.push(Violation::CleanWithoutSlot { page: p.phys(), pindex: p.pindex() });
        }
        p.xunbusy();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phys::AllocFlags;
    use crate::phys::tests::{mib, phys_with_memory};

    #[test]
    fn limbo_is_detected() {
        let pm = phys_with_memory(&[mib(1, 2)]);
        let p = pm.alloc(AllocFlags::empty()).unwrap();
        p.set_owner(0x7000, 0);
        assert!(check(&pm).is_empty(), "busy pages are not in limbo");
        // The bug of seed 000: an invalid read-ahead page unbusied on no queue.
        p.xunbusy();
        assert_eq!(check(&pm), vec![Violation::Limbo { page: p.phys() }]);
        pm.deactivate(p);
        assert!(check(&pm).is_empty());
    }

    #[test]
    fn corrupted_structures_are_detected() {
        let pm = phys_with_memory(&[mib(1, 2)]);
        let p = pm.alloc(AllocFlags::NOBUSY).unwrap();
        // A free flag on an allocated page.
        p.set_flags(PageFlags::FREE);
        assert!(check(&pm).contains(&Violation::FreeFlagNotOnList { page: p.phys() }));
        p.clear_flags(PageFlags::FREE);
        // A wrong count.
        pm.free.lock().pages += 1;
        assert!(check(&pm).iter().any(|v| matches!(v, Violation::FreePageTotal { .. })));
        pm.free.lock().pages -= 1;
        // A free page that is wired.
        let q = pm.alloc(AllocFlags::NOBUSY).unwrap();
        pm.free(q);
        q.wire();
        assert!(check(&pm).contains(&Violation::FreeButInUse { page: q.phys(), what: "wired" }));
        q.unwire_noq();
        assert!(check(&pm).is_empty());
    }

    /// Rule 16: the free-after-write mark lives only as long as the write,
    /// which holds the page busy; an idle page carrying it is reported.
    #[test]
    fn a_free_after_write_mark_on_an_idle_page_is_detected() {
        let pm = phys_with_memory(&[mib(1, 2)]);
        let p = pm.alloc(AllocFlags::empty()).unwrap();
        p.set_owner(0x7000, 0);
        p.set_flags(PageFlags::FREE_AFTER_WRITE);
        assert!(check(&pm).is_empty(), "a write under way may carry the mark");
        pm.deactivate(p);
        p.xunbusy();
        assert_eq!(check(&pm), vec![Violation::FreeAfterWriteIdle { page: p.phys() }]);
        p.clear_flags(PageFlags::FREE_AFTER_WRITE);
        assert!(check(&pm).is_empty());
    }
}
