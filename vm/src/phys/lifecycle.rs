//! The page life cycle's steps that belong to the allocator and the queues
//! (rules 4, 5, 6): finishing a read-ahead page, requeueing, unwiring.

use super::*;

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

    /// Puts an unbusied managed page of an object back on a queue if it is on
    /// none and not wired, so that it is never left in limbo (rule 4).
    pub fn requeue(&self, page: &'static Page) {
        if page.is_managed() && page.object().is_some() && !page.wired() && page.queue() == Queue::None {
            self.deactivate(page);
        }
    }

    /// Drops a wiring of a managed page. On the last one the page goes to
    /// `queue` if it still belongs to an object, and is freed if it does not
    /// (rule 5: whoever removed it from its object left the freeing to us).
    pub fn unwire(&self, page: &'static Page, queue: Queue) {
        assert!(page.is_managed(), "page {:#x}: unwire of an unmanaged page; use unwire_noq", page.phys());
        if !page.unwire_noq() {
            return;
        }
        if page.object().is_none() {
            // Nobody else can find the page: it is ours to free.
            self.free(page);
        } else {
            self.enqueue(page, if queue == Queue::None { Queue::Active } else { queue });
        }
    }
}
