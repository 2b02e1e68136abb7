//! The paging queues: active, inactive and laundry, as in FreeBSD.
//!
//! Each is a doubly linked list threaded through the page records' `next` and
//! `prev` (a page is on at most one list: a free list or one queue) with a
//! count. The pageout daemon (later) scans inactive pages to reclaim, moves
//! dirty ones to the laundry to be written, and refills inactive from active.
//! All of it is under the queue lock (Q), taken after the object lock and the
//! page busy lock, never while holding the free-list lock.

use core::sync::atomic::Ordering;

use crate::page::{NIL, Page, PageFlags, PageIndex, Queue};
use crate::phys::PhysMem;

pub mod batch;

use batch::PENDING;

/// One list. (Q)
#[derive(Clone, Copy, Debug)]
pub(crate) struct List {
    pub(crate) head: PageIndex,
    pub(crate) tail: PageIndex,
    pub(crate) count: u64,
}

/// The queues, indexed by `Queue as usize` (slot 0, `None`, unused). (Q)
pub(crate) struct Queues {
    pub(crate) lists: [List; 4],
}

impl Queues {
    pub(crate) const fn new() -> Queues {
        Queues { lists: [List { head: NIL, tail: NIL, count: 0 }; 4] }
    }
}

impl PhysMem {
    #[inline(always)]
    pub(crate) fn queue_insert_tail(&self, q: &mut Queues, idx: PageIndex, which: Queue) {
        let list = &mut q.lists[which as usize];
        let page = self.page(idx);
        page.next.store(NIL, Ordering::Relaxed);
        page.prev.store(list.tail, Ordering::Relaxed);
        if list.tail == NIL {
            list.head = idx;
        } else {
            self.page(list.tail).next.store(idx, Ordering::Relaxed);
        }
        list.tail = idx;
        list.count += 1;
        page.queue.store(which as u8, Ordering::Release);
    }

    #[inline(always)]
    pub(crate) fn queue_remove(&self, q: &mut Queues, idx: PageIndex) {
        let page = self.page(idx);
        let raw = page.queue.load(Ordering::Acquire);
        if raw & PENDING != 0 {
            // Waiting in a batch, on no list: dropping the mark is the
            // removal (the batch skips the page: `batch`).
            page.queue.store(Queue::None as u8, Ordering::Release);
            return;
        }
        let which = Queue::from_u8(raw);
        if which == Queue::None {
            return;
        }
        let list = &mut q.lists[which as usize];
        let (next, prev) = (page.next.load(Ordering::Relaxed), page.prev.load(Ordering::Relaxed));
        if prev == NIL {
            list.head = next;
        } else {
            self.page(prev).next.store(next, Ordering::Relaxed);
        }
        if next == NIL {
            list.tail = prev;
        } else {
            self.page(next).prev.store(prev, Ordering::Relaxed);
        }
        list.count -= 1;
        page.next.store(NIL, Ordering::Relaxed);
        page.prev.store(NIL, Ordering::Relaxed);
        page.queue.store(Queue::None as u8, Ordering::Release);
    }

    /// Moves `page` to the tail of `which` (or off every queue for `None`).
    #[inline(always)]
    pub fn enqueue(&self, page: &Page, which: Queue) {
        assert!(page.is_managed(), "page {:#x}: unmanaged pages are never queued", page.phys());
        assert!(!page.flags().contains(PageFlags::FREE), "page {:#x}: queueing a free page", page.phys());
        let idx = self.index_of(page);
        let mut q = self.queues.lock();
        self.queue_remove(&mut q, idx);
        if which != Queue::None {
            self.queue_insert_tail(&mut q, idx, which);
        }
    }

    /// Puts the page on the active queue (recently used). A page already
    /// there stays where it is: its use is recorded in its referenced bit
    /// (`Page::reference`, the mappings' accessed bits), which the pageout
    /// daemon reads before it deactivates anything, so moving it to the
    /// tail would only take the queue lock at every fault on a resident
    /// page (FreeBSD's `vm_page_activate` leaves an active page in place
    /// too). The look at the queue is without the lock: a page the daemon
    /// moves meanwhile ends on the inactive queue with its reference
    /// recorded, and goes back at the daemon's next look.
    ///
    /// A page on no queue goes there through the running CPU's batch
    /// ([`batch`]), without the queue lock.
    #[inline]
    pub fn activate(&self, page: &Page) {
        match page.queue() {
            Queue::Active => {}
            Queue::None
                if page.is_managed() && !page.flags().contains(PageFlags::FREE) && self.enqueue_batched(page, Queue::Active) => {}
            _ => self.enqueue(page, Queue::Active),
        }
    }

    /// Puts the page on the inactive queue (a reclaim candidate).
    pub fn deactivate(&self, page: &Page) {
        page.clear_flags(PageFlags::REFERENCED);
        self.enqueue(page, Queue::Inactive);
    }

    /// Puts the page on the laundry queue (dirty, to be written out).
    pub fn launder(&self, page: &Page) {
        self.enqueue(page, Queue::Laundry);
    }

    /// Takes the page off its queue.
    pub fn dequeue(&self, page: &Page) {
        let idx = self.index_of(page);
        self.queue_remove(&mut self.queues.lock(), idx);
    }

    /// Pages on `which` (the CPUs' batches flushed first: their pages
    /// count where they are bound).
    pub fn queue_count(&self, which: Queue) -> u64 {
        self.flush_queue_batches();
        self.queues.lock().lists[which as usize].count
    }
}

#[cfg(test)]
mod tests {
    use crate::invariants;
    use crate::page::Queue;
    use crate::phys::AllocFlags;
    use crate::phys::tests::{mib, phys_with_memory};

    #[test]
    fn pages_move_between_queues_with_counts() {
        let pm = phys_with_memory(&[mib(1, 2)]);
        let pages: alloc::vec::Vec<_> = (0..5).map(|_| pm.alloc(AllocFlags::NOBUSY).unwrap()).collect();
        for (i, p) in pages.iter().enumerate() {
            p.xbusy();
            p.set_owner(0x5000, i as u64);
            p.xunbusy();
            pm.activate(p);
        }
        assert_eq!(pm.queue_count(Queue::Active), 5);
        pm.deactivate(pages[1]);
        pm.launder(pages[2]);
        pm.deactivate(pages[4]);
        assert_eq!((pm.queue_count(Queue::Active), pm.queue_count(Queue::Inactive), pm.queue_count(Queue::Laundry)), (2, 2, 1));
        assert_eq!(pages[2].queue(), Queue::Laundry);
        assert!(invariants::check(&pm).is_empty());
        for p in &pages {
            p.xbusy();
            assert!(p.clear_owner());
            pm.free(p); // dequeues
        }
        assert_eq!(pm.queue_count(Queue::Active) + pm.queue_count(Queue::Inactive), 0);
        assert!(invariants::check(&pm).is_empty());
    }
}
