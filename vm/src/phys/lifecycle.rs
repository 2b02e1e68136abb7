//! The page life cycle's steps that belong to the allocator and the queues
//! (rules 4, 5, 6): finishing a read-ahead page, requeueing, unwiring.

use super::*;
use crate::page::{WIRE_COUNT, WIRE_OBJREF};

impl PhysMem {
    /// Finishes a read-ahead/behind page whose read succeeded (rule 6): it
    /// is unbusied and queued (inactive unless it was referenced). One whose
    /// read failed is invalid, and is freed from its object instead (rule 5:
    /// `object::Locked::free_invalid`).
    pub fn readahead_finish(&self, page: &'static Page) {
        assert!(page.valid() != 0, "page {:#x}: read-ahead finished but nothing in it is valid", page.phys());
        if !page.wired() && page.is_managed() {
            if page.flags().contains(PageFlags::REFERENCED) {
                self.activate(page);
            } else {
                self.deactivate(page);
            }
        }
        page.xunbusy();
    }

    /// Puts a managed page of an object back on a queue if it is on none and
    /// not wired, so that it is never left in limbo (rule 4). The caller
    /// still holds the page busy, and unbusies it after: an unbusied page
    /// may be freed at once by another CPU, and must not be queued then.
    pub fn requeue(&self, page: &'static Page) {
        debug_assert!(page.xbusied(), "page {:#x}: requeued after it was unbusied", page.phys());
        if page.is_managed() && page.object().is_some() && !page.wired() && page.queue() == Queue::None {
            self.deactivate(page);
        }
    }

    /// Drops a wiring of a managed page. On the last one the page goes to
    /// `queue` if it still belongs to an object, and is freed if it does not
    /// (rule 5: whoever removed it from its object left the freeing to us).
    ///
    /// The last wiring of a page in an object is dropped under the queue
    /// lock, and the page queued in the same hold. Against a removal from
    /// the object (`Page::clear_owner`) at the same moment: a remover that
    /// comes after the drop sees no wiring and frees the page, and its free
    /// takes it off the queue under the same lock (after we let go); one
    /// that comes before leaves the page to us, off every queue, and our
    /// drop, retried on the changed word, finds it in no object and frees
    /// it. The pageout daemon, which takes wired pages off the queues,
    /// decides under that lock too ([`PhysMem::dequeue_if_wired`]), so it
    /// sees the page wired and unqueued, or unwired and queued.
    pub fn unwire(&self, page: &'static Page, queue: Queue) {
        assert!(page.is_managed(), "page {:#x}: unwire of an unmanaged page; use unwire_noq", page.phys());
        let queue = if queue == Queue::None { Queue::Active } else { queue };
        let mut old = page.wire_word();
        loop {
            let last_in_object = old & WIRE_COUNT == 1 && old & WIRE_OBJREF != 0;
            #[cfg(loom)]
            let last_in_object = last_in_object && !crate::sync::model::broken(crate::sync::model::Break::OwnerAndWiringApart);
            let dropped = if last_in_object {
                let idx = self.index_of(page);
                let mut q = self.queues.lock();
                let dropped = page.unwire_from(old);
                if dropped.is_ok() {
                    self.queue_remove(&mut q, idx);
                    self.queue_insert_tail(&mut q, idx, queue);
                }
                dropped
            } else {
                page.unwire_from(old)
            };
            match dropped {
                Ok(_) => break,
                // Wired again, or taken out of its object: look again.
                Err(now) => old = now,
            }
        }
        #[cfg(loom)]
        if crate::sync::model::broken(crate::sync::model::Break::OwnerAndWiringApart) {
            // The old way: drop the wiring, then look at the owner.
            if old & WIRE_COUNT == 1 {
                match page.object() {
                    None => {
                        while !page.try_xbusy() {
                            crate::sync::spin_hint();
                        }
                        self.free(page)
                    }
                    Some(_) => self.enqueue(page, queue),
                }
            }
            return;
        }
        if old == 1 {
            // The last wiring of a page in no object: ours to free. Its
            // remover may still hold it busy, a moment more (it lets go
            // right after handing the page over), or the pageout daemon
            // (which lets go of a page in no object at once): the free
            // waits for them. A spin, not a sleep: callers hold their
            // map's lock, and neither holder waits for anything.
            while !page.try_xbusy() {
                crate::sync::spin_hint();
            }
            self.free(page);
        }
    }

    /// Takes a page found on a queue off it if it is wired (the pageout
    /// daemon's lazy dequeue: pages wired while queued stay on their queue
    /// until it looks). Decided under the queue lock, which the last
    /// unwire of a page in an object holds from queueing the page to
    /// dropping the wiring. Returns whether the page was wired.
    pub fn dequeue_if_wired(&self, page: &Page) -> bool {
        let idx = self.index_of(page);
        let mut q = self.queues.lock();
        let wired = page.wired();
        if wired {
            self.queue_remove(&mut q, idx);
        }
        wired
    }
}
