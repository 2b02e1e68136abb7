//! A zone of fixed-size items carved from whole pages (a minimal slab
//! allocator, as UMA zones are in FreeBSD), for radix-trie nodes.
//!
//! Each slab is one page: a header followed by as many items as fit. A slab
//! with free items is on the zone's partial list; an item's slab is found by
//! rounding its address down to the page. When a slab becomes entirely free
//! it goes back to the page source at once, except for one kept spare so an
//! insert/remove pair at a slab boundary does not take and return a page
//! each time. Allocation can fail (no page, or the zone's fail point): it
//! returns `None` and nothing else changes.
//!
//! Locking: the zone's own spin lock, a leaf lock (nothing is taken under it
//! except the page source's allocator locks).

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::sync::Mutex;

use crate::PAGE_SIZE;
use crate::failpoint::FailPoint;

/// Where a zone gets its pages.
pub trait PageSource: Sync {
    /// A page-aligned, page-sized block of writable memory, or `None`.
    fn alloc_page(&self) -> Option<NonNull<u8>>;
    /// Returns a page from [`PageSource::alloc_page`].
    ///
    /// # Safety
    /// `page` came from `alloc_page` of this source and is not used again.
    unsafe fn free_page(&self, page: NonNull<u8>);
}

/// The head of each slab page.
#[repr(C)]
struct Slab {
    /// Free items of this slab, linked through their first word.
    free: *mut FreeItem,
    nfree: usize,
    /// Partial-list links.
    next: *mut Slab,
    prev: *mut Slab,
}

#[repr(C)]
struct FreeItem {
    next: *mut FreeItem,
}

const HEADER: usize = core::mem::size_of::<Slab>().next_multiple_of(16);

struct Inner {
    partial: *mut Slab,
    spare: *mut Slab,
}

// SAFETY: the raw pointers name slab pages owned by the zone; they are only
// followed with the zone's lock held.
unsafe impl Send for Inner {}

/// A zone of items of one size.
pub struct NodeZone {
    item_size: usize,
    per_slab: usize,
    source: &'static dyn PageSource,
    fail: &'static FailPoint,
    inner: Mutex<Inner>,
    /// Items handed out and not freed. (A)
    in_use: AtomicUsize,
    /// Pages held, including the spare. (A)
    slabs: AtomicUsize,
}

impl NodeZone {
    /// A zone of `item_size`-byte items (16-byte aligned) from `source`,
    /// whose allocations fail when `fail` says so.
    pub fn new(item_size: usize, source: &'static dyn PageSource, fail: &'static FailPoint) -> NodeZone {
        let item_size = item_size.max(core::mem::size_of::<FreeItem>()).next_multiple_of(16);
        let per_slab = (PAGE_SIZE - HEADER) / item_size;
        assert!(per_slab > 0, "zone items of {item_size} bytes do not fit a page");
        NodeZone {
            item_size,
            per_slab,
            source,
            fail,
            inner: Mutex::new(Inner { partial: ptr::null_mut(), spare: ptr::null_mut() }),
            in_use: AtomicUsize::new(0),
            slabs: AtomicUsize::new(0),
        }
    }

    pub fn item_size(&self) -> usize {
        self.item_size
    }

    pub fn items_per_slab(&self) -> usize {
        self.per_slab
    }

    /// Items allocated and not yet freed.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Pages the zone holds.
    pub fn slabs(&self) -> usize {
        self.slabs.load(Ordering::Relaxed)
    }

    /// Formats a fresh page as a slab with every item free.
    fn new_slab(&self, page: NonNull<u8>) -> *mut Slab {
        let base = page.as_ptr();
        let slab = base as *mut Slab;
        let mut free: *mut FreeItem = ptr::null_mut();
        for i in (0..self.per_slab).rev() {
            // SAFETY: item i lies inside the page: HEADER + per_slab *
            // item_size <= PAGE_SIZE; the page is ours and 16-byte aligned.
            unsafe {
                let item = base.add(HEADER + i * self.item_size) as *mut FreeItem;
                item.write(FreeItem { next: free });
                free = item;
            }
        }
        // SAFETY: the header fits at the start of the page (HEADER < PAGE_SIZE).
        unsafe { slab.write(Slab { free, nfree: self.per_slab, next: ptr::null_mut(), prev: ptr::null_mut() }) };
        slab
    }

    /// Gives the empty partial list a slab: the spare, or a new page.
    #[inline(never)]
    fn refill(&self, inner: &mut Inner) -> Option<()> {
        let slab = if !inner.spare.is_null() {
            core::mem::replace(&mut inner.spare, ptr::null_mut())
        } else {
            let page = self.source.alloc_page()?;
            self.slabs.fetch_add(1, Ordering::Relaxed);
            self.new_slab(page)
        };
        // SAFETY: `slab` is an empty slab page of this zone, on no list.
        unsafe {
            (*slab).next = ptr::null_mut();
            (*slab).prev = ptr::null_mut();
        }
        inner.partial = slab;
        Some(())
    }

    /// Allocates one item (uninitialised), or `None` when the fail point
    /// fires or no page can be had.
    /// (Inlined: a page fault takes one for its PV entry.)
    #[inline]
    pub fn alloc(&self) -> Option<NonNull<u8>> {
        if self.fail.should_fail() {
            return None;
        }
        let mut inner = self.inner.lock();
        if inner.partial.is_null() {
            self.refill(&mut inner)?;
        }
        let slab = inner.partial;
        // SAFETY: slabs on the partial list are live slab pages of this zone
        // with at least one free item; the lock is held.
        unsafe {
            let item = (*slab).free;
            (*slab).free = (*item).next;
            (*slab).nfree -= 1;
            if (*slab).nfree == 0 {
                // Full: off the partial list.
                inner.partial = (*slab).next;
                if !inner.partial.is_null() {
                    (*inner.partial).prev = ptr::null_mut();
                }
                (*slab).next = ptr::null_mut();
            }
            self.in_use.fetch_add(1, Ordering::Relaxed);
            Some(NonNull::new_unchecked(item as *mut u8))
        }
    }

    /// Returns an item.
    ///
    /// # Safety
    /// `item` came from [`NodeZone::alloc`] of this zone and is not used again.
    pub unsafe fn free(&self, item: NonNull<u8>) {
        let mut inner = self.inner.lock();
        let slab = (item.as_ptr() as usize & !(PAGE_SIZE - 1)) as *mut Slab;
        // SAFETY: the item lies in a slab page of this zone (caller's
        // contract), whose header is at the page start; the lock is held.
        unsafe {
            let it = item.as_ptr() as *mut FreeItem;
            it.write(FreeItem { next: (*slab).free });
            (*slab).free = it;
            (*slab).nfree += 1;
            if (*slab).nfree == 1 {
                // Was full: back on the partial list.
                (*slab).prev = ptr::null_mut();
                (*slab).next = inner.partial;
                if !inner.partial.is_null() {
                    (*inner.partial).prev = slab;
                }
                inner.partial = slab;
            }
            if (*slab).nfree == self.per_slab {
                // Empty: off the list; keep it as the spare or give it back.
                if (*slab).prev.is_null() {
                    inner.partial = (*slab).next;
                } else {
                    (*(*slab).prev).next = (*slab).next;
                }
                if !(*slab).next.is_null() {
                    (*(*slab).next).prev = (*slab).prev;
                }
                if inner.spare.is_null() {
                    inner.spare = slab;
                } else {
                    self.slabs.fetch_sub(1, Ordering::Relaxed);
                    self.source.free_page(NonNull::new_unchecked(slab as *mut u8));
                }
            }
        }
        self.in_use.fetch_sub(1, Ordering::Relaxed);
    }

    /// Gives the spare slab back (e.g. before counting free pages).
    pub fn drain(&self) {
        let mut inner = self.inner.lock();
        let spare = core::mem::replace(&mut inner.spare, ptr::null_mut());
        if let Some(p) = NonNull::new(spare as *mut u8) {
            self.slabs.fetch_sub(1, Ordering::Relaxed);
            // SAFETY: the spare is an empty slab page from this source.
            unsafe { self.source.free_page(p) };
        }
    }
}

/// Pages for the kernel's zones: unmanaged pages from the global allocator,
/// reached through the direct map.
pub struct KernelPages;

impl PageSource for KernelPages {
    fn alloc_page(&self) -> Option<NonNull<u8>> {
        let pm = crate::try_global()?;
        let page = pm.alloc(crate::phys::AllocFlags::UNMANAGED | crate::phys::AllocFlags::SYSTEM)?;
        NonNull::new(pm.page_addr(page)?)
    }

    unsafe fn free_page(&self, page: NonNull<u8>) {
        let pm = crate::global();
        let record = pm.page_of_addr(page.as_ptr()).expect("zone page not in the direct map");
        pm.free(record);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    extern crate std;

    use std::alloc::{Layout, alloc, dealloc};
    use std::vec::Vec;

    use super::*;
    use crate::failpoint::Action;

    /// Pages from the host allocator.
    pub(crate) struct HostPages;

    impl PageSource for HostPages {
        fn alloc_page(&self) -> Option<NonNull<u8>> {
            // SAFETY: the layout has non-zero size.
            NonNull::new(unsafe { alloc(Layout::from_size_align(PAGE_SIZE, PAGE_SIZE).unwrap()) })
        }

        unsafe fn free_page(&self, page: NonNull<u8>) {
            // SAFETY: allocated above with this layout (caller's contract).
            unsafe { dealloc(page.as_ptr(), Layout::from_size_align(PAGE_SIZE, PAGE_SIZE).unwrap()) }
        }
    }

    pub(crate) static HOST_PAGES: HostPages = HostPages;

    #[test]
    fn items_come_and_go_and_pages_return() {
        static FP: FailPoint = FailPoint::new("zone.test");
        let z = NodeZone::new(144, &HOST_PAGES, &FP);
        let per = z.items_per_slab();
        assert_eq!(per, (PAGE_SIZE - HEADER) / 144);
        let items: Vec<_> = (0..per * 3 + 1).map(|_| z.alloc().unwrap()).collect();
        assert_eq!(z.slabs(), 4);
        assert_eq!(z.in_use(), per * 3 + 1);
        let mut addrs: Vec<usize> = items.iter().map(|p| p.as_ptr() as usize).collect();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), items.len(), "an item was handed out twice");
        for it in items {
            // SAFETY: allocated above, freed once.
            unsafe { z.free(it) };
        }
        assert_eq!(z.in_use(), 0);
        assert_eq!(z.slabs(), 1, "only the spare remains");
        z.drain();
        assert_eq!(z.slabs(), 0);
    }

    #[test]
    fn the_fail_point_fails_allocation_cleanly() {
        static FP: FailPoint = FailPoint::new("zone.test2");
        let z = NodeZone::new(64, &HOST_PAGES, &FP);
        FP.set(Action::Always);
        assert!(z.alloc().is_none());
        assert_eq!((z.in_use(), z.slabs()), (0, 0));
        FP.set(Action::Off);
        let a = z.alloc().unwrap();
        // SAFETY: allocated above.
        unsafe { z.free(a) };
        z.drain();
    }
}
