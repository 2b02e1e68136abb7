//! The page record: one per physical frame, and the small state machines in it.
//!
//! Every 4 KiB frame the VM manages has a [`Page`] in the page array
//! ([`crate::phys`]). A page's state is the product of several independent
//! machines, each with its own synchronisation. Lock legend for the fields
//! (as in FreeBSD's `vm_page.h`; two tags mean "either to read, both to write"):
//!
//! - (A) atomic: changed only by atomic read-modify-write;
//! - (B) page busy: the holder of the busy lock;
//! - (C) constant after the page array is built;
//! - (F) the free-list lock of the physical allocator;
//! - (O) the lock of the object the page belongs to;
//! - (P) the pmap lock;
//! - (Q) the page-queue lock.
//!
//! Atomics are used for every field, even the lock-protected ones, so that a
//! record can be read without the lock (by the invariant checker, by gdb) with
//! no undefined behaviour; the tags say which lock makes a *change* legal.
//!
//! ## Busy
//!
//! A per-page reader/writer lock for pages "in transition" (being read in,
//! written out, copied), held across the times the object lock is dropped:
//!
//! ```text
//!            try_xbusy                      try_sbusy (n times)
//!  UNBUSIED ───────────► EXCLUSIVE   UNBUSIED ──────────────────► SHARED(n)
//!      ▲      xunbusy        │            ▲      sunbusy (n times)     │
//!      └─────────────────────┘            └────────────────────────────┘
//!  EXCLUSIVE ──xbusy_downgrade──► SHARED(1) ──try_upgrade──► EXCLUSIVE
//! ```
//!
//! Waiting for a busy page is one function, [`busy_wait`]: a sleep on the
//! page with the waiters bit set, which the releaser sees and wakes (a spin
//! on the host, where no sleep is installed). Debug builds record where the
//! exclusive holder took the lock.
//!
//! ## Wiring
//!
//! `wire_count` counts references that forbid reclaiming the page. 0 → 1 takes
//! the page off its paging queue's reach; the last unwire puts it back on a
//! queue (managed page in an object), frees it (page in no object: rule 5), or
//! leaves it to the caller (`unwire_noq`, unmanaged pages).
//!
//! ## Valid and dirty
//!
//! One bit per 512-byte block of the page (8 bits). Valid bits are set by the
//! busy holder once the data is in; an invalid page is never mapped (rule 2).
//!
//! ## Queues
//!
//! A managed page in an object that is neither wired nor busy must be on one of
//! the paging queues, or the pageout daemon can never reclaim it (rule 4):
//!
//! ```text
//!  NONE ──activate──► ACTIVE ──deactivate──► INACTIVE ──launder──► LAUNDRY
//!    ▲                   ▲                      │                    │
//!    └────dequeue────────┴──────activate────────┴─────activate───────┘
//! ```

use crate::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use bitflags::bitflags;

use crate::PAGE_SIZE;

mod busy;

pub use busy::busy_wait;
use busy::busy_wakeup;
#[cfg(test)]
pub(crate) use busy::{on_next_busy_wait, woken_here};

/// Index of a page in the page array.
pub type PageIndex = u32;

/// "No page": the end of a list.
pub const NIL: PageIndex = u32::MAX;

/// Bytes covered by one valid/dirty bit.
pub const BLOCK_SIZE: usize = 512;
/// All eight blocks of a page.
pub const ALL_BLOCKS: u8 = 0xFF;

bitflags! {
    /// Page flags. Each has one fixed meaning and its own rule for changes.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct PageFlags: u16 {
        /// The page is known to be all zeroes. (F) Set or cleared only between
        /// allocation and free; once the page is valid it means nothing (rule 13).
        const ZERO = 1 << 0;
        /// Accessed since the pageout daemon last looked. (A)
        const REFERENCED = 1 << 1;
        /// Not managed by the paging queues and never mapped through PV
        /// entries: page-table pages, kernel heap, boot memory. (C while
        /// allocated; set by the allocator.)
        const UNMANAGED = 1 << 2;
        /// Reserved for the kernel itself (boot memory, the page array, the
        /// heap): never on a free list. (C)
        const RESERVED = 1 << 3;
        /// Being written by the pageout daemon; free it when the write
        /// completes (rule 16). (B)
        const FREE_AFTER_WRITE = 1 << 4;
        /// The page is free: in a buddy block or the order-0 cache. (F)
        const FREE = 1 << 5;
        /// Its owner gave the contents up (`MADV_FREE`): clean, it may be
        /// freed with no copy anywhere, the one exception to rule 14 for a
        /// swap object's page (a later fault finds zeros). A write before
        /// the page daemon takes it keeps it: the page is dirty again, and
        /// the mark goes at the write fault or when the page is written to
        /// swap. (B)
        const DISCARDABLE = 1 << 6;
    }
}

/// Which paging queue a page is on. (Q)
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Queue {
    None = 0,
    Active = 1,
    Inactive = 2,
    Laundry = 3,
}

impl Queue {
    pub const PAGING: [Queue; 3] = [Queue::Active, Queue::Inactive, Queue::Laundry];

    pub(crate) fn from_u8(v: u8) -> Queue {
        match v {
            1 => Queue::Active,
            2 => Queue::Inactive,
            3 => Queue::Laundry,
            _ => Queue::None,
        }
    }
}

/// Sentinel for `order`: the page does not head a free block.
pub const NOT_FREE_HEAD: u8 = 0xFF;

// Busy word layout: bit 0 exclusive, bit 1 waiters, bits 2.. shared count.
const BUSY_EXCLUSIVE: u32 = 1 << 0;
const BUSY_WAITERS: u32 = 1 << 1;
const BUSY_SHARER: u32 = 1 << 2;
const BUSY_UNBUSIED: u32 = 0;

/// The wire word's top bit: the page is in an object. Set and cleared with
/// the owner, beside the count of wirings, so that removing a page from its
/// object and dropping its last wiring are decided on one word: of the two,
/// whichever comes second sees the other and frees the page (rule 5). With
/// two words each side could miss the other's change and leave the page to
/// it (the `wire` models, vm/MODELS.md, find that interleaving).
pub const WIRE_OBJREF: u32 = 1 << 31;
/// The wire word's count of wirings.
pub const WIRE_COUNT: u32 = WIRE_OBJREF - 1;

/// The valid bits of a whole page, the busy-word layout, the list and
/// order sentinels and the flag bits, for debuggers ([`crate::DebugConstant`]).
#[used]
pub static DEBUG_CONSTANTS: [crate::DebugConstant; 15] = [
    ("ALL_BLOCKS", ALL_BLOCKS as u64),
    ("WIRE_OBJREF", WIRE_OBJREF as u64),
    ("WIRE_COUNT", WIRE_COUNT as u64),
    ("BUSY_EXCLUSIVE", BUSY_EXCLUSIVE as u64),
    ("BUSY_WAITERS", BUSY_WAITERS as u64),
    ("BUSY_SHARER", BUSY_SHARER as u64),
    ("NIL", NIL as u64),
    ("NOT_FREE_HEAD", NOT_FREE_HEAD as u64),
    ("PageFlags::ZERO", PageFlags::ZERO.bits() as u64),
    ("PageFlags::REFERENCED", PageFlags::REFERENCED.bits() as u64),
    ("PageFlags::UNMANAGED", PageFlags::UNMANAGED.bits() as u64),
    ("PageFlags::RESERVED", PageFlags::RESERVED.bits() as u64),
    ("PageFlags::FREE_AFTER_WRITE", PageFlags::FREE_AFTER_WRITE.bits() as u64),
    ("PageFlags::FREE", PageFlags::FREE.bits() as u64),
    ("PageFlags::DISCARDABLE", PageFlags::DISCARDABLE.bits() as u64),
];

/// The metadata record of one physical page.
///
/// Size: 64 bytes at most (checked below): 1.6 % of the memory it describes.
#[derive(Debug)]
pub struct Page {
    /// Physical address of the frame. (C)
    phys: u64,
    /// Owning object (an opaque non-zero handle), 0 for none. (O,B)
    pub(crate) object: AtomicUsize,
    /// Index of the page within its object. (O,B)
    pub(crate) pindex: AtomicU64,
    /// Next/previous page on the list this page is on: a free list (F) or a
    /// paging queue (Q). A page is on at most one list. NIL-terminated.
    pub(crate) next: AtomicU32,
    pub(crate) prev: AtomicU32,
    /// The busy lock word. (A)
    busy: AtomicU32,
    /// Wirings, and whether the page is in an object ([`WIRE_OBJREF`]).
    /// (A)
    wire_word: AtomicU32,
    /// Managed mappings of this page (PV entries). (P)
    pub(crate) mappings: AtomicU16,
    /// [`PageFlags`]; each flag documents its own rule.
    flags: AtomicU16,
    /// Valid 512-byte blocks. (B)
    valid: AtomicU8,
    /// Dirty 512-byte blocks. (B,O)
    dirty: AtomicU8,
    /// [`Queue`] the page is on, with `queue::batch::PENDING` while it
    /// waits in a CPU's batch for that queue. (Q; the mark set by the
    /// busy holder, see `queue::batch`)
    pub(crate) queue: AtomicU8,
    /// Buddy order if this page heads a free block, else NOT_FREE_HEAD. (F)
    pub(crate) order: AtomicU8,
    /// Physical segment the page belongs to. (C)
    pub(crate) segment: u8,
    /// Where the exclusive busy holder took the lock (debug builds). (B)
    #[cfg(debug_assertions)]
    busy_owner: AtomicUsize,
}

// (loom's atomics are larger: not in model builds.)
#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<Page>() <= 64);

/// Where the exclusive busy lock of a page was taken (debug builds).
pub type BusyOwner = Option<&'static core::panic::Location<'static>>;

/// A `Location` by value, for debuggers: the precompiled `core` carries no
/// description of the type, and this static brings its layout into the
/// debug information, so that a debugger can decode a page's busy owner.
#[used]
pub static DEBUG_LOCATION: core::panic::Location<'static> = *core::panic::Location::caller();

impl Page {
    /// A record for the frame at `phys` in segment `segment`: reserved (not
    /// free, not managed) until the allocator frees it into its lists.
    pub fn new(phys: u64, segment: u8) -> Page {
        Page {
            phys,
            object: AtomicUsize::new(0),
            pindex: AtomicU64::new(0),
            next: AtomicU32::new(NIL),
            prev: AtomicU32::new(NIL),
            busy: AtomicU32::new(BUSY_UNBUSIED),
            wire_word: AtomicU32::new(0),
            mappings: AtomicU16::new(0),
            flags: AtomicU16::new((PageFlags::RESERVED | PageFlags::UNMANAGED).bits()),
            valid: AtomicU8::new(0),
            dirty: AtomicU8::new(0),
            queue: AtomicU8::new(Queue::None as u8),
            order: AtomicU8::new(NOT_FREE_HEAD),
            segment,
            #[cfg(debug_assertions)]
            busy_owner: AtomicUsize::new(0),
        }
    }

    /// Physical address of the frame.
    #[inline]
    pub fn phys(&self) -> u64 {
        self.phys
    }

    // ---- flags ----------------------------------------------------------

    #[inline]
    pub fn flags(&self) -> PageFlags {
        PageFlags::from_bits_retain(self.flags.load(Ordering::Acquire))
    }

    #[inline]
    pub(crate) fn set_flags(&self, f: PageFlags) {
        self.check_zero_flag_change(f);
        self.flags.fetch_or(f.bits(), Ordering::AcqRel);
    }

    #[inline]
    pub(crate) fn clear_flags(&self, f: PageFlags) {
        self.check_zero_flag_change(f);
        self.flags.fetch_and(!f.bits(), Ordering::AcqRel);
    }

    /// Rule 13: the zero flag describes the contents of a page nobody uses
    /// yet. It changes only on a free page or one being handed out (in no
    /// object, nothing valid); on a page in use it would be stale at once.
    #[inline]
    fn check_zero_flag_change(&self, f: PageFlags) {
        debug_assert!(
            !f.contains(PageFlags::ZERO)
                || self.flags().contains(PageFlags::FREE)
                || (self.object().is_none() && self.valid() == 0),
            "page {:#x}: zero flag changed on a page in use (rule 13)",
            self.phys
        );
    }

    #[inline]
    pub fn is_managed(&self) -> bool {
        !self.flags().contains(PageFlags::UNMANAGED)
    }

    /// Marks the page referenced (an access was seen).
    #[inline]
    pub fn reference(&self) {
        self.set_flags(PageFlags::REFERENCED);
    }

    // ---- object membership --------------------------------------------------

    /// The owning object's handle, if any.
    #[inline]
    pub fn object(&self) -> Option<usize> {
        match self.object.load(Ordering::Acquire) {
            0 => None,
            o => Some(o),
        }
    }

    #[inline]
    pub fn pindex(&self) -> u64 {
        self.pindex.load(Ordering::Acquire)
    }

    /// For an unmanaged page that is a page table: the first address its
    /// entries map (FreeBSD keeps a page-table page's place in its
    /// `pindex` too), set when the table is made or moved and cleared
    /// before it is freed, under its address space's lock. The PV entries
    /// name the leaf entry, not the address, so a table moved whole
    /// (`mremap`) takes its pages' addresses with it.
    #[inline]
    pub fn set_table_base(&self, va: u64) {
        debug_assert!(!self.is_managed(), "page {:#x}: a managed page is not a page table", self.phys);
        self.pindex.store(va, Ordering::Relaxed);
    }

    /// The address set by [`Page::set_table_base`].
    #[inline]
    pub fn table_base(&self) -> u64 {
        self.pindex.load(Ordering::Relaxed)
    }

    /// Records that the page caches page `pindex` of `object`. The object
    /// code calls this with the object locked and the page exclusively busy.
    #[inline]
    pub fn set_owner(&self, object: usize, pindex: u64) {
        assert!(object != 0, "object handle 0 means no object");
        assert!(self.is_managed(), "page {:#x}: an unmanaged page cannot join an object (rule 11)", self.phys);
        assert!(self.xbusied(), "page {:#x}: owner set without the exclusive busy lock", self.phys);
        assert!(self.object().is_none(), "page {:#x}: already in object {:#x}", self.phys, self.object.load(Ordering::Relaxed));
        self.pindex.store(pindex, Ordering::Release);
        self.object.store(object, Ordering::Release);
        // (AcqRel: the object's reference is an edge of the hand-off below.)
        self.wire_word.fetch_or(WIRE_OBJREF, Ordering::AcqRel);
    }

    /// Clears object membership. Returns whether the caller may free the page:
    /// true unless it is wired, in which case the last unwire frees it (rule 5).
    #[inline]
    pub fn clear_owner(&self) -> bool {
        self.object.store(0, Ordering::Release);
        self.pindex.store(0, Ordering::Release);
        // AcqRel, on the word the unwirer changes too: an unwire before
        // this is seen (its queueing included, done before its decrement,
        // which releases), and one after sees the bit gone.
        let old = self.wire_word.fetch_and(!WIRE_OBJREF, Ordering::AcqRel);
        #[cfg(loom)]
        if crate::sync::model::broken(crate::sync::model::Break::OwnerAndWiringApart) {
            return !self.wired();
        }
        old & WIRE_COUNT == 0
    }

    /// The wire word: the count and [`WIRE_OBJREF`].
    #[inline]
    pub fn wire_word(&self) -> u32 {
        self.wire_word.load(Ordering::Acquire)
    }

    /// Drops one wiring if the wire word is still `old`; else returns the
    /// word now (the last unwire's step, `phys::PhysMem::unwire`).
    #[inline]
    pub(crate) fn unwire_from(&self, old: u32) -> Result<u32, u32> {
        assert!(old & WIRE_COUNT > 0, "page {:#x}: unwire of a page that is not wired", self.phys);
        // AcqRel pairs with clear_owner's fetch_and: whoever of the two
        // changes the word second sees the first's change.
        self.wire_word.compare_exchange(old, old - 1, Ordering::AcqRel, Ordering::Acquire)
    }

    /// Number of managed mappings (maintained by the pmap).
    #[inline]
    pub fn mapping_count(&self) -> u16 {
        self.mappings.load(Ordering::Acquire)
    }

    /// Called by the pmap when it adds or removes a managed mapping.
    #[inline]
    pub fn add_mapping(&self) {
        debug_assert!(self.valid() != 0, "page {:#x}: an invalid page is never mapped (rule 2)", self.phys);
        self.mappings.fetch_add(1, Ordering::AcqRel);
    }

    #[inline]
    pub fn remove_mapping(&self) {
        let old = self.mappings.fetch_sub(1, Ordering::AcqRel);
        assert!(old > 0, "page {:#x}: mapping count underflow", self.phys);
    }

    // ---- wiring ---------------------------------------------------------

    #[inline]
    pub fn wire_count(&self) -> u32 {
        self.wire_word() & WIRE_COUNT
    }

    #[inline]
    pub fn wired(&self) -> bool {
        self.wire_count() > 0
    }

    /// Adds a wiring. A managed page of an object is wired only by a holder
    /// of its busy lock, so that whoever holds it exclusively (and has
    /// removed its mappings) sees the count only fall (rule 3). A page in no
    /// object is the caller's own (just allocated, or unmanaged).
    #[inline]
    pub fn wire(&self) {
        debug_assert!(
            !self.is_managed() || self.object().is_none() || self.busied(),
            "page {:#x}: wired without its busy lock (rule 3)",
            self.phys
        );
        let old = self.wire_word.fetch_add(1, Ordering::AcqRel);
        assert!(old & WIRE_COUNT != WIRE_COUNT, "page {:#x}: wire count overflow", self.phys);
    }

    /// Drops a wiring and returns true if it was the last. The page is not
    /// queued: this is for unmanaged pages, or callers that then queue or free
    /// the page themselves (see `phys::PhysMem::unwire`).
    #[inline]
    pub fn unwire_noq(&self) -> bool {
        let old = self.wire_word.fetch_sub(1, Ordering::AcqRel);
        assert!(old & WIRE_COUNT > 0, "page {:#x}: unwire of a page that is not wired", self.phys);
        old & WIRE_COUNT == 1
    }

    // ---- valid and dirty ----------------------------------------------------

    /// Bitmap of the 512-byte blocks covering `[offset, offset + len)`.
    #[inline]
    pub fn block_mask(offset: usize, len: usize) -> u8 {
        assert!(offset + len <= PAGE_SIZE, "range {offset}+{len} runs off the page");
        if len == 0 {
            return 0;
        }
        let first = offset / BLOCK_SIZE;
        let last = (offset + len - 1) / BLOCK_SIZE;
        ((0xFFu16 << first) & (0xFFu16 >> (7 - last))) as u8
    }

    #[inline]
    pub fn valid(&self) -> u8 {
        self.valid.load(Ordering::Acquire)
    }

    #[inline]
    pub fn dirty(&self) -> u8 {
        self.dirty.load(Ordering::Acquire)
    }

    #[inline]
    pub fn all_valid(&self) -> bool {
        self.valid() == ALL_BLOCKS
    }

    /// True if every block of `[offset, offset + len)` is valid.
    #[inline]
    pub fn is_valid_range(&self, offset: usize, len: usize) -> bool {
        let m = Page::block_mask(offset, len);
        self.valid() & m == m
    }

    /// Marks blocks valid. The caller holds the exclusive busy lock (B):
    /// valid bits change only where nobody else can be reading the page.
    #[inline]
    pub fn set_valid_range(&self, offset: usize, len: usize) {
        debug_assert!(self.xbusied(), "page {:#x}: valid bits changed without the exclusive busy lock", self.phys);
        self.valid.fetch_or(Page::block_mask(offset, len), Ordering::AcqRel);
    }

    /// Marks the whole page valid (busy held).
    #[inline]
    pub fn set_all_valid(&self) {
        self.set_valid_range(0, PAGE_SIZE);
    }

    /// Marks the whole page invalid and clean (busy held).
    #[inline]
    pub fn invalidate(&self) {
        debug_assert!(self.busied(), "page {:#x}: invalidated without the busy lock", self.phys);
        debug_assert!(self.mapping_count() == 0, "page {:#x}: invalidated while mapped", self.phys);
        self.valid.store(0, Ordering::Release);
        self.dirty.store(0, Ordering::Release);
    }

    /// Marks blocks dirty. Only valid blocks can be dirty.
    #[inline]
    pub fn set_dirty_range(&self, offset: usize, len: usize) {
        let m = Page::block_mask(offset, len);
        assert!(self.valid() & m == m, "page {:#x}: dirtying invalid blocks", self.phys);
        self.dirty.fetch_or(m, Ordering::AcqRel);
    }

    #[inline]
    pub fn set_all_dirty(&self) {
        self.set_dirty_range(0, PAGE_SIZE);
    }

    /// Clears the dirty bits (after the data reached its backing store).
    #[inline]
    pub fn undirty(&self) {
        self.dirty.store(0, Ordering::Release);
    }

    // ---- queues ---------------------------------------------------------------

    /// The queue the page is on, or bound for while it waits in a CPU's
    /// batch (`queue::batch`).
    #[inline]
    pub fn queue(&self) -> Queue {
        Queue::from_u8(self.queue.load(Ordering::Acquire) & !crate::queue::batch::PENDING)
    }

    /// Whether the page waits in a CPU's batch for its queue.
    pub fn queue_pending(&self) -> bool {
        self.queue.load(Ordering::Acquire) & crate::queue::batch::PENDING != 0
    }

    /// The order of the free block this page heads, if it heads one.
    #[inline]
    pub(crate) fn free_order(&self) -> Option<u8> {
        match self.order.load(Ordering::Acquire) {
            NOT_FREE_HEAD => None,
            o => Some(o),
        }
    }

    /// Turns a free page into an allocated one with `flags` (the ZERO flag
    /// carries over: it describes the contents, which did not change).
    #[inline]
    pub(crate) fn take_from_free(&self, flags: PageFlags) {
        debug_assert!(self.flags().contains(PageFlags::FREE), "page {:#x}: allocated but not free", self.phys);
        self.valid.store(0, Ordering::Relaxed);
        self.dirty.store(0, Ordering::Relaxed);
        let zero = self.flags() & PageFlags::ZERO;
        self.flags.store((zero | flags).bits(), Ordering::Release);
    }

    /// Turns an allocated page into a free one; `zero` says if its contents
    /// are known to be zero.
    #[inline]
    pub(crate) fn make_free(&self, zero: bool) {
        // Like FreeBSD's vm_page_busy_free: whoever sleeps on the busy page
        // is woken (to look the index up again), or it would sleep on a
        // free page for ever.
        let old = self.busy.swap(BUSY_UNBUSIED, Ordering::Release);
        #[cfg(loom)]
        let old = if crate::sync::model::broken(crate::sync::model::Break::FreeWithoutWakeup) { 0 } else { old };
        if old & BUSY_WAITERS != 0 {
            busy_wakeup(self);
        }
        self.clear_owner_note();
        self.valid.store(0, Ordering::Relaxed);
        self.dirty.store(0, Ordering::Relaxed);
        let f = if zero { PageFlags::FREE | PageFlags::ZERO } else { PageFlags::FREE };
        self.flags.store(f.bits(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Page {
        Page::new(0x1000, 0)
    }

    /// A record as the allocator hands out a managed page: neither reserved
    /// nor unmanaged.
    fn managed_page() -> Page {
        let p = page();
        p.clear_flags(PageFlags::RESERVED | PageFlags::UNMANAGED);
        p
    }

    #[test]
    fn debug_constants_name_every_flag() {
        crate::tests::assert_names_every_flag::<PageFlags>("PageFlags", &DEBUG_CONSTANTS);
    }

    #[test]
    fn exclusive_busy_excludes_everyone() {
        let p = page();
        assert!(p.try_xbusy());
        assert!(!p.try_xbusy());
        assert!(!p.try_sbusy());
        assert!(p.xbusied() && p.busied());
        assert!(p.busy_owner().is_some() == cfg!(debug_assertions));
        p.xunbusy();
        assert!(!p.busied());
        assert!(p.busy_owner().is_none());
    }

    #[test]
    fn shared_busy_counts_holders() {
        let p = page();
        assert!(p.try_sbusy());
        assert!(p.try_sbusy());
        assert_eq!(p.sbusy_count(), 2);
        assert!(!p.try_xbusy());
        assert!(!p.try_upgrade(), "two sharers cannot upgrade");
        p.sunbusy();
        assert!(p.try_upgrade());
        assert!(p.xbusied());
        p.xbusy_downgrade();
        assert_eq!(p.sbusy_count(), 1);
        p.sunbusy();
        assert!(!p.busied());
    }

    /// Freeing a busy page that has sleepers wakes them (they would sleep
    /// on a free page for ever otherwise); without sleepers, no wakeup.
    #[test]
    fn freeing_a_busy_page_wakes_its_sleepers() {
        let p = Page::new(0x777_7000, 0);
        assert!(p.try_xbusy());
        assert!(p.set_busy_waiters());
        p.make_free(false);
        assert!(!p.busied());
        let q = Page::new(0x777_8000, 0);
        assert!(q.try_xbusy());
        q.make_free(false);
        let woken = woken_here();
        assert!(woken.contains(&0x777_7000), "the sleeper on the freed page was not woken");
        assert!(!woken.contains(&0x777_8000), "a wakeup with nobody asleep");
    }

    #[test]
    #[should_panic(expected = "xunbusy of a page not exclusively busy")]
    fn xunbusy_without_lock_is_caught() {
        page().xunbusy();
    }

    #[test]
    #[should_panic(expected = "sunbusy of a page not shared-busy")]
    fn sunbusy_of_xbusy_is_caught() {
        let p = page();
        p.xbusy();
        p.sunbusy();
    }

    #[test]
    fn block_masks() {
        assert_eq!(Page::block_mask(0, PAGE_SIZE), 0xFF);
        assert_eq!(Page::block_mask(0, 1), 0x01);
        assert_eq!(Page::block_mask(511, 2), 0x03);
        assert_eq!(Page::block_mask(4095, 1), 0x80);
        assert_eq!(Page::block_mask(1024, 1024), 0x0C);
        assert_eq!(Page::block_mask(100, 0), 0);
    }

    #[test]
    fn valid_and_dirty() {
        let p = page();
        p.xbusy();
        p.set_valid_range(512, 1024);
        assert!(p.is_valid_range(600, 900));
        assert!(!p.is_valid_range(0, 600));
        p.set_dirty_range(512, 512);
        assert_eq!(p.dirty(), 0x02);
        p.set_all_valid();
        assert!(p.all_valid());
        p.invalidate();
        assert_eq!((p.valid(), p.dirty()), (0, 0));
        p.xunbusy();
    }

    #[test]
    #[should_panic(expected = "dirtying invalid blocks")]
    fn dirty_needs_valid() {
        page().set_dirty_range(0, 512);
    }

    #[test]
    fn wiring_counts() {
        let p = page();
        p.wire();
        p.wire();
        assert!(!p.unwire_noq());
        assert!(p.unwire_noq());
        assert!(!p.wired());
    }

    #[test]
    #[should_panic(expected = "unwire of a page that is not wired")]
    fn unwire_underflow_is_caught() {
        page().unwire_noq();
    }

    #[test]
    fn owner_needs_xbusy_and_remove_reports_wiring() {
        let p = managed_page();
        p.xbusy();
        p.set_owner(0xABC, 7);
        assert_eq!((p.object(), p.pindex()), (Some(0xABC), 7));
        p.wire();
        assert!(!p.clear_owner(), "a wired page is freed by its last unwire, not here");
        assert!(p.object().is_none());
        assert!(p.unwire_noq());
        p.xunbusy();
    }

    /// Rule 3: a page of an object gains a wiring only from a busy holder,
    /// so an exclusive holder that has unmapped it only races with unwiring.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "wired without its busy lock (rule 3)")]
    fn wiring_a_page_of_an_object_needs_its_busy_lock() {
        let p = managed_page();
        p.xbusy();
        p.set_owner(0xABC, 1);
        p.wire();
        p.xunbusy();
        assert!(p.unwire_noq(), "the busy holder's wiring was counted");
        // Nobody holds the busy lock now: a wiring is a protocol violation.
        p.wire();
    }

    /// Rule 11: the pages the machine layer takes for itself (page tables,
    /// heap, DMA buffers) are unmanaged and never join an object.
    #[test]
    #[should_panic(expected = "an unmanaged page cannot join an object (rule 11)")]
    fn an_unmanaged_page_never_joins_an_object() {
        let p = page();
        p.xbusy();
        p.set_owner(0xABC, 1);
    }

    /// Rule 13: the zero flag changes on free or just-allocated pages only;
    /// once the page holds data of an object the flag is frozen.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "zero flag changed on a page in use (rule 13)")]
    fn the_zero_flag_is_fixed_while_the_page_is_in_use() {
        let p = managed_page();
        p.set_flags(PageFlags::ZERO);
        p.clear_flags(PageFlags::ZERO);
        p.xbusy();
        p.set_all_valid();
        p.set_flags(PageFlags::ZERO);
    }

    /// Rule 2 at the page: a mapping of an invalid page is refused.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "an invalid page is never mapped (rule 2)")]
    fn an_invalid_page_gets_no_mapping() {
        managed_page().add_mapping();
    }
}
