//! Per-CPU batches of queue insertions (after FreeBSD's `vm_batchqueue`).
//!
//! Every zero-fill or read-in fault ends by putting its new page on the
//! active queue, and the queue lock (Q) is one for the machine: with
//! several CPUs faulting at once it would be taken by all of them at every
//! fault. Instead, a page going from no queue to a queue is marked pending
//! for that queue and recorded in the running CPU's batch; the batch is put
//! on the queues under one hold of Q when it has [`BATCH`] pages, and
//! whenever the queues must be complete: their counts are read
//! ([`PhysMem::queue_count`]), the pageout daemon starts a pass, the
//! invariants are checked.
//!
//! **The mark.** `Page::queue` holds the queue with [`PENDING`] set while
//! the page waits in a batch. It is set by a compare-and-swap from "no
//! queue" (by the caller of [`PhysMem::activate`], which holds the page
//! busy) and cleared only under Q: by the batch's flush, which links the
//! page onto its queue, or by any other queue operation on the page
//! (`queue_remove`, under Q, drops the mark instead of unlinking). A batch
//! entry whose page no longer carries the mark when its batch is flushed
//! was dealt with meanwhile (moved, dequeued, freed, and perhaps queued
//! again through another batch), and is skipped. So a page is linked at
//! most once however many batches name it, and never once it is free.
//!
//! [`Page::queue`] reports a pending page's queue as the one it is bound
//! for.
//!
//! Lock order: a CPU's batch lock, then Q.
//!
//! [`Page::queue`]: crate::page::Page::queue

use core::sync::atomic::Ordering;

use crate::counter::MAX_CPUS;
use crate::page::{NIL, Page, PageIndex, Queue};
use crate::phys::PhysMem;
use crate::sync::Mutex;
use crate::witness::order;

/// Pages a batch holds before it is flushed.
pub const BATCH: usize = 32;

/// The bit of `Page::queue` that says the page waits in a batch for the
/// queue in the other bits.
pub(crate) const PENDING: u8 = 0x80;

/// One CPU's batch: pages marked pending, in the order they came. (its
/// lock)
pub(crate) struct Batch {
    n: usize,
    pages: [PageIndex; BATCH],
}

/// One CPU's batch, alone on its cache lines.
#[repr(align(64))]
pub(crate) struct CpuBatch {
    batch: Mutex<Batch>,
}

/// Every CPU's batch.
pub(crate) fn new_batches() -> [CpuBatch; MAX_CPUS] {
    core::array::from_fn(|_| CpuBatch { batch: Mutex::ranked(Batch { n: 0, pages: [NIL; BATCH] }, &order::PAGE_QUEUE_BATCH) })
}

impl PhysMem {
    /// Puts `page`, on no queue, on `which` through the running CPU's
    /// batch. Returns false, doing nothing, if the page is on a queue (or
    /// bound for one) after all.
    pub(crate) fn enqueue_batched(&self, page: &Page, which: Queue) -> bool {
        self.enqueue_batched_on(crate::sync::this_cpu() as usize, page, which)
    }

    /// [`PhysMem::enqueue_batched`] through CPU `cpu`'s batch.
    fn enqueue_batched_on(&self, cpu: usize, page: &Page, which: Queue) -> bool {
        // AcqRel: the Release half pairs with the flush's Acquire load of
        // the mark (which may come from another CPU's batch, see
        // `flush_batch`); the CAS only has to lose to a queue operation
        // that got here first.
        if page.queue.compare_exchange(Queue::None as u8, which as u8 | PENDING, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return false;
        }
        let idx = self.index_of(page);
        let cb = &self.batches[cpu % MAX_CPUS];
        let mut b = cb.batch.lock();
        let n = b.n;
        b.pages[n] = idx;
        b.n += 1;
        if b.n == BATCH {
            self.flush_batch(&mut b);
        }
        true
    }

    /// Links the pages of `b` that still carry the mark onto their queues,
    /// under one hold of Q, and empties it.
    #[inline(never)]
    fn flush_batch(&self, b: &mut Batch) {
        let mut q = self.queues.lock();
        for &idx in &b.pages[..b.n] {
            let page = self.page(idx);
            // Acquire pairs with the Release half of the marking CAS in
            // `enqueue_batched_on`, which may be another CPU's (a page
            // freed and queued again through its batch): what that CPU did
            // to the page before (taking it from the allocator, whose free
            // lists use the same links) happens before our linking. The
            // mark is cleared only under Q, which we hold.
            let raw = page.queue.load(Ordering::Acquire);
            let link = raw & PENDING != 0;
            #[cfg(loom)]
            let link = link || crate::sync::model::broken(crate::sync::model::Break::BatchIgnoresMark);
            if link {
                debug_assert!(
                    raw & PENDING != 0 && !page.flags().contains(crate::page::PageFlags::FREE),
                    "page {:#x}: a batch linked a page that was not waiting in it (free, or queued already)",
                    page.phys()
                );
                self.queue_insert_tail(&mut q, idx, Queue::from_u8(raw & !PENDING));
            }
        }
        b.n = 0;
    }

    /// Flushes every CPU's batch, one at a time: afterwards every page
    /// queued before the call is on its queue.
    pub fn flush_queue_batches(&self) {
        for cb in &self.batches {
            let mut b = cb.batch.lock();
            if b.n != 0 {
                self.flush_batch(&mut b);
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use alloc::vec::Vec;

    use super::*;
    use crate::invariants;
    use crate::phys::AllocFlags;
    use crate::phys::tests::{mib, phys_with_memory};

    /// `n` managed pages in an object (a made-up handle), on no queue.
    fn pages(pm: &PhysMem, n: usize) -> Vec<&'static Page> {
        (0..n)
            .map(|i| {
                let p = pm.alloc(AllocFlags::NOBUSY).unwrap();
                p.xbusy();
                p.set_owner(0x5000, i as u64);
                p.xunbusy();
                p
            })
            .collect()
    }

    fn listed(pm: &PhysMem, which: Queue) -> u64 {
        pm.queues.lock().lists[which as usize].count
    }

    #[test]
    fn an_activated_page_waits_in_the_batch_until_it_fills() {
        let pm = &phys_with_memory(&[mib(1, 2)]);
        let ps = pages(pm, BATCH);
        for p in &ps[..BATCH - 1] {
            pm.activate(p);
            assert!(p.queue_pending());
            assert_eq!(p.queue(), Queue::Active, "a pending page reports the queue it is bound for");
        }
        assert_eq!(listed(pm, Queue::Active), 0, "nothing linked before the batch is full");
        pm.activate(ps[BATCH - 1]);
        assert_eq!(listed(pm, Queue::Active), BATCH as u64, "the full batch went on the queue at once");
        assert!(ps.iter().all(|p| !p.queue_pending() && p.queue() == Queue::Active));
        assert!(invariants::check(pm).is_empty());
    }

    #[test]
    fn a_page_moved_or_freed_while_pending_is_skipped_by_the_flush() {
        let pm = &phys_with_memory(&[mib(1, 2)]);
        let ps = pages(pm, 3);
        for p in &ps {
            pm.activate(p);
        }
        // Moved to another queue while pending: linked there, once.
        pm.deactivate(ps[0]);
        assert!(!ps[0].queue_pending());
        // Taken out of its object and freed while pending.
        ps[1].xbusy();
        let _ = ps[1].clear_owner();
        pm.free(ps[1]);
        pm.flush_queue_batches();
        assert_eq!((listed(pm, Queue::Active), listed(pm, Queue::Inactive)), (1, 1));
        assert_eq!(ps[1].queue(), Queue::None, "the freed page stayed off the queues");
        assert!(invariants::check(pm).is_empty());
    }

    #[test]
    fn a_page_named_by_two_batches_is_linked_once() {
        let pm = &phys_with_memory(&[mib(1, 2)]);
        let p = pages(pm, 1)[0];
        assert!(pm.enqueue_batched_on(1, p, Queue::Active));
        // Dequeued (its mark dropped), then queued again through CPU 2's
        // batch: CPU 1's entry is stale.
        pm.dequeue(p);
        assert!(pm.enqueue_batched_on(2, p, Queue::Active));
        assert!(!pm.enqueue_batched_on(3, p, Queue::Active), "bound for a queue already");
        pm.flush_queue_batches();
        assert_eq!(listed(pm, Queue::Active), 1);
        assert!(invariants::check(pm).is_empty());
    }
}
