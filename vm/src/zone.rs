//! Zones of fixed-size items carved from slabs of whole pages (a minimal
//! slab allocator, as UMA's kegs and zones are in FreeBSD): the radix-trie
//! nodes and PV entries, and the kernel heap's size classes (`malloc(9)`
//! over UMA, `kernel/src/kern/heap.rs`).
//!
//! Two layers, as in UMA:
//!
//! - [`Keg`] is the bookkeeping of one item size and nothing else: slabs of
//!   `slab_size` bytes (a power of two of pages, aligned to its size), each
//!   with its free items on a list of its own, the partially used slabs on
//!   the keg's partial list, the wholly free ones on its empty list, the full
//!   ones on none. It takes no lock and never calls a page allocator: its
//!   owner hands it fresh slabs ([`Keg::add_slab`]) and takes back empty
//!   ones ([`Keg::take_empty`]) as its own locking allows. The heap, which
//!   is reached with interrupts off and may only call the page allocator
//!   with them on, needs exactly that split.
//! - [`NodeZone`] is a keg behind a plain lock with a [`PageSource`], for the
//!   VM's own items (taken with interrupts on): it takes a page when the keg
//!   is full and gives an emptied slab back at once, keeping one spare so an
//!   insert/remove pair at a slab boundary does not take and return a page
//!   each time.
//!
//! A slab's header is at its end; items start at the slab's first byte, so
//! an item of a power-of-two size is aligned to that size (the heap relies
//! on it), and any item to 16 bytes. The slab of an item is found by
//! rounding its address down to the slab size.
//!
//! Allocation can fail (no page, or the zone's fail point): it returns
//! `None` and nothing else changes.
//!
//! Locking: a keg is its owner's to lock; a [`NodeZone`]'s lock is a leaf
//! lock (nothing is taken under it except the page source's allocator
//! locks).

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

/// The tail of each slab. (K: the keg's owner's lock, like every field
/// reached from a keg.)
#[repr(C)]
struct Slab {
    /// Free items of this slab, linked through their first word.
    free: *mut FreeItem,
    nfree: usize,
    /// Links of the partial list (both) or the empty list (`next` only).
    next: *mut Slab,
    prev: *mut Slab,
}

#[repr(C)]
struct FreeItem {
    next: *mut FreeItem,
}

/// Bytes at the end of each slab taken by its header.
pub const SLAB_HEADER: usize = core::mem::size_of::<Slab>().next_multiple_of(16);

/// The slabs of one item size: what a zone allocates from, without a lock
/// or a page source (see the module docs). Every field is the owner's lock's
/// (K).
///
/// A keg is its owner's data: behind the zone's keg lock (Z) in a
/// `NodeZone`, behind the heap's lock (H) in the kernel heap.
pub struct Keg {
    /// (C)
    item_size: usize,
    /// Bytes per slab: a power of two, a multiple of the page size. (C)
    slab_size: usize,
    /// (C)
    per_slab: usize,
    /// Slabs with free and used items, doubly linked. (owner's lock)
    partial: *mut Slab,
    /// Slabs with every item free, linked through `next`. (owner's lock)
    empty: *mut Slab,
    nempty: usize,
    /// Items handed out and not freed. (owner's lock)
    in_use: usize,
    /// Slabs held, empty ones included. (owner's lock)
    slabs: usize,
}

// SAFETY: the raw pointers name slabs owned by the keg; its owner only
// follows them under its own lock (every method takes `&mut self`).
unsafe impl Send for Keg {}

impl Keg {
    /// A keg of `item_size`-byte items (rounded up to a multiple of 16) in
    /// slabs of `slab_size` bytes (a power of two, at least a page, that
    /// holds at least one item besides the header).
    pub const fn new(item_size: usize, slab_size: usize) -> Keg {
        let min = core::mem::size_of::<FreeItem>();
        let item_size = if item_size < min { min } else { item_size }.next_multiple_of(16);
        assert!(slab_size.is_power_of_two() && slab_size >= PAGE_SIZE, "a slab is a power of two of pages");
        let per_slab = (slab_size - SLAB_HEADER) / item_size;
        assert!(per_slab > 0, "zone items do not fit their slab");
        Keg { item_size, slab_size, per_slab, partial: ptr::null_mut(), empty: ptr::null_mut(), nempty: 0, in_use: 0, slabs: 0 }
    }

    pub const fn item_size(&self) -> usize {
        self.item_size
    }

    pub const fn slab_size(&self) -> usize {
        self.slab_size
    }

    pub const fn items_per_slab(&self) -> usize {
        self.per_slab
    }

    /// Items handed out and not freed.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Slabs held, empty ones included.
    pub fn slabs(&self) -> usize {
        self.slabs
    }

    /// Slabs with every item free.
    pub fn empty_slabs(&self) -> usize {
        self.nempty
    }

    /// The header of the slab an item of this keg lies in, from its address
    /// alone.
    fn slab_of(&self, item: *mut u8) -> *mut Slab {
        ((item as usize & !(self.slab_size - 1)) + self.slab_size - SLAB_HEADER) as *mut Slab
    }

    /// Takes a free item (uninitialised) from a partial slab, else from an
    /// empty one; `None` when every slab is full: the owner then adds a slab.
    pub fn alloc(&mut self) -> Option<NonNull<u8>> {
        if self.partial.is_null() {
            let slab = self.empty;
            if slab.is_null() {
                return None;
            }
            // SAFETY: slabs on the empty list are live slabs of this keg
            // (added by `add_slab`), reached under the owner's lock.
            unsafe {
                self.empty = (*slab).next;
                (*slab).next = ptr::null_mut();
                (*slab).prev = ptr::null_mut();
            }
            self.nempty -= 1;
            self.partial = slab;
        }
        let slab = self.partial;
        // SAFETY: slabs on the partial list are live slabs of this keg with
        // at least one free item.
        unsafe {
            let item = (*slab).free;
            (*slab).free = (*item).next;
            (*slab).nfree -= 1;
            if (*slab).nfree == 0 {
                // Full: off the partial list.
                self.partial = (*slab).next;
                if !self.partial.is_null() {
                    (*self.partial).prev = ptr::null_mut();
                }
                (*slab).next = ptr::null_mut();
            }
            self.in_use += 1;
            Some(NonNull::new_unchecked(item as *mut u8))
        }
    }

    /// Formats `mem` as a slab with every item free and puts it on the
    /// empty list.
    ///
    /// # Safety
    /// `mem` is `slab_size` writable bytes aligned to `slab_size`, owned by
    /// the keg from now until [`Keg::take_empty`] gives it back.
    pub unsafe fn add_slab(&mut self, mem: NonNull<u8>) {
        let base = mem.as_ptr();
        debug_assert_eq!(base as usize % self.slab_size, 0, "a misaligned slab");
        let mut free: *mut FreeItem = ptr::null_mut();
        for i in (0..self.per_slab).rev() {
            // SAFETY: item i lies inside the slab (per_slab * item_size <=
            // slab_size - SLAB_HEADER), which is ours and 16-byte aligned.
            unsafe {
                let item = base.add(i * self.item_size) as *mut FreeItem;
                item.write(FreeItem { next: free });
                free = item;
            }
        }
        let slab = self.slab_of(base);
        // SAFETY: the header lies in the slab's last SLAB_HEADER bytes, past
        // every item.
        unsafe { slab.write(Slab { free, nfree: self.per_slab, next: self.empty, prev: ptr::null_mut() }) };
        self.empty = slab;
        self.nempty += 1;
        self.slabs += 1;
    }

    /// Returns an item. Returns whether its slab is now empty (on the empty
    /// list, for the owner to keep or take back).
    ///
    /// # Safety
    /// `item` came from [`Keg::alloc`] of this keg and is not used again.
    pub unsafe fn free(&mut self, item: NonNull<u8>) -> bool {
        let slab = self.slab_of(item.as_ptr());
        self.in_use -= 1;
        // SAFETY: the item lies in a live slab of this keg (caller's
        // contract), whose header `slab_of` finds; the owner's lock is held.
        unsafe {
            let it = item.as_ptr() as *mut FreeItem;
            it.write(FreeItem { next: (*slab).free });
            (*slab).free = it;
            (*slab).nfree += 1;
            let was_full = (*slab).nfree == 1;
            if (*slab).nfree < self.per_slab {
                if was_full {
                    // Back on the partial list.
                    (*slab).prev = ptr::null_mut();
                    (*slab).next = self.partial;
                    if !self.partial.is_null() {
                        (*self.partial).prev = slab;
                    }
                    self.partial = slab;
                }
                return false;
            }
            // Empty: off the partial list (unless it went from full to
            // empty at once, one item per slab), onto the empty list.
            if !was_full {
                if (*slab).prev.is_null() {
                    self.partial = (*slab).next;
                } else {
                    (*(*slab).prev).next = (*slab).next;
                }
                if !(*slab).next.is_null() {
                    (*(*slab).next).prev = (*slab).prev;
                }
            }
            (*slab).prev = ptr::null_mut();
            (*slab).next = self.empty;
            self.empty = slab;
        }
        self.nempty += 1;
        true
    }

    /// Takes an empty slab off the keg when it holds more than `keep`, for
    /// the owner to give back to where it came from: the slab's first byte.
    pub fn take_empty(&mut self, keep: usize) -> Option<NonNull<u8>> {
        if self.nempty <= keep {
            return None;
        }
        let slab = self.empty;
        // SAFETY: nempty > 0, so the empty list's head is a live, wholly free
        // slab of this keg.
        unsafe { self.empty = (*slab).next };
        self.nempty -= 1;
        self.slabs -= 1;
        let base = (slab as usize + SLAB_HEADER) - self.slab_size;
        NonNull::new(base as *mut u8)
    }
}

/// A zone of items of one size for the VM: a [`Keg`] of one-page slabs
/// behind a plain lock, with pages from a [`PageSource`].
pub struct NodeZone {
    /// Where slabs' pages come from. (C)
    source: &'static dyn PageSource,
    /// Fails the allocations it is told to (tests). (C)
    fail: &'static FailPoint,
    /// The keg lock (Z) and the slabs.
    keg: Mutex<Keg>,
    /// (C)
    item_size: usize,
    per_slab: usize,
    /// Items handed out and not freed. (A)
    in_use: AtomicUsize,
    /// Pages held, including the spare. (A)
    slabs: AtomicUsize,
}

impl NodeZone {
    /// A zone of `item_size`-byte items (16-byte aligned) from `source`,
    /// whose allocations fail when `fail` says so.
    pub fn new(item_size: usize, source: &'static dyn PageSource, fail: &'static FailPoint) -> NodeZone {
        let keg = Keg::new(item_size, PAGE_SIZE);
        NodeZone {
            source,
            fail,
            item_size: keg.item_size(),
            per_slab: keg.items_per_slab(),
            keg: Mutex::ranked(keg, &crate::witness::order::KEG),
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

    /// Gives the full keg a slab: a new page.
    #[inline(never)]
    fn refill(&self, keg: &mut Keg) -> Option<NonNull<u8>> {
        let page = self.source.alloc_page()?;
        // SAFETY: a fresh page-sized, page-aligned page from the source, the
        // keg's until it gives it back.
        unsafe { keg.add_slab(page) };
        self.slabs.fetch_add(1, Ordering::Relaxed);
        keg.alloc()
    }

    /// Allocates one item (uninitialised), or `None` when the fail point
    /// fires or no page can be had.
    /// (Inlined: a page fault takes one for its PV entry.)
    #[inline]
    pub fn alloc(&self) -> Option<NonNull<u8>> {
        if self.fail.should_fail() {
            return None;
        }
        let mut keg = self.keg.lock();
        let item = match keg.alloc() {
            Some(item) => item,
            None => self.refill(&mut keg)?,
        };
        self.in_use.fetch_add(1, Ordering::Relaxed);
        Some(item)
    }

    /// Returns an item.
    ///
    /// # Safety
    /// `item` came from [`NodeZone::alloc`] of this zone and is not used again.
    pub unsafe fn free(&self, item: NonNull<u8>) {
        let mut keg = self.keg.lock();
        // SAFETY: the caller's contract.
        if unsafe { keg.free(item) } {
            // Keep one empty slab as the spare, give back the rest.
            if let Some(page) = keg.take_empty(1) {
                self.slabs.fetch_sub(1, Ordering::Relaxed);
                // SAFETY: an empty slab, a page from this source.
                unsafe { self.source.free_page(page) };
            }
        }
        self.in_use.fetch_sub(1, Ordering::Relaxed);
    }

    /// Gives the spare slab back (e.g. before counting free pages).
    pub fn drain(&self) {
        let mut keg = self.keg.lock();
        while let Some(page) = keg.take_empty(0) {
            self.slabs.fetch_sub(1, Ordering::Relaxed);
            // SAFETY: an empty slab, a page from this source.
            unsafe { self.source.free_page(page) };
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
        assert_eq!(per, (PAGE_SIZE - SLAB_HEADER) / 144);
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

    /// A slab of `size` bytes aligned to its size, from the host.
    fn host_slab(size: usize) -> NonNull<u8> {
        // SAFETY: the layout has non-zero size.
        NonNull::new(unsafe { alloc(Layout::from_size_align(size, size).unwrap()) }).unwrap()
    }

    /// Kegs of several item and slab sizes: every item is handed out once,
    /// lies inside its slab clear of the header, is aligned to the largest
    /// power of two dividing its size, and slabs go partial -> full ->
    /// partial -> empty and come back out whole; one item per slab (full to
    /// empty at once) included.
    #[test]
    fn kegs_of_many_shapes() {
        for &(item, slab) in
            &[(16, PAGE_SIZE), (48, PAGE_SIZE), (512, PAGE_SIZE), (1536, 4 * PAGE_SIZE), (2048, 4 * PAGE_SIZE), (3000, PAGE_SIZE)]
        {
            let mut k = Keg::new(item, slab);
            let per = k.items_per_slab();
            assert_eq!(per, (slab - SLAB_HEADER) / k.item_size());
            assert!(k.alloc().is_none(), "an empty keg handed out an item");
            let slabs: Vec<NonNull<u8>> = (0..3).map(|_| host_slab(slab)).collect();
            for &s in &slabs {
                // SAFETY: fresh, aligned, the keg's until taken back.
                unsafe { k.add_slab(s) };
            }
            let items: Vec<NonNull<u8>> = (0..3 * per).map(|_| k.alloc().unwrap()).collect();
            assert!(k.alloc().is_none(), "a full keg handed out an item");
            let align = 1usize << k.item_size().trailing_zeros();
            let mut addrs: Vec<usize> = items.iter().map(|p| p.as_ptr() as usize).collect();
            for &a in &addrs {
                assert_eq!(a % align.min(slab), 0, "item of {item} bytes misaligned");
                let base = a & !(slab - 1);
                assert!(slabs.iter().any(|s| s.as_ptr() as usize == base));
                assert!(a + k.item_size() <= base + slab - SLAB_HEADER, "an item over the header");
            }
            addrs.sort();
            addrs.dedup();
            assert_eq!(addrs.len(), items.len(), "an item was handed out twice");
            assert_eq!((k.in_use(), k.slabs(), k.empty_slabs()), (3 * per, 3, 0));
            let mut emptied = 0;
            for it in items {
                // SAFETY: allocated above, freed once.
                emptied += unsafe { k.free(it) } as usize;
            }
            assert_eq!(emptied, 3);
            assert_eq!((k.in_use(), k.empty_slabs()), (0, 3));
            assert!(k.take_empty(3).is_none());
            let mut back: Vec<usize> = (0..3).map(|_| k.take_empty(0).unwrap().as_ptr() as usize).collect();
            assert!(k.take_empty(0).is_none());
            back.sort();
            let mut given: Vec<usize> = slabs.iter().map(|s| s.as_ptr() as usize).collect();
            given.sort();
            assert_eq!(back, given, "the slabs did not come back whole");
            assert_eq!(k.slabs(), 0);
            for s in slabs {
                // SAFETY: allocated by host_slab with this layout.
                unsafe { dealloc(s.as_ptr(), Layout::from_size_align(slab, slab).unwrap()) };
            }
        }
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
