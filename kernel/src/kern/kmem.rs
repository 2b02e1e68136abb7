//! Kernel virtual memory: a region of the kernel's half of the address
//! space where pages taken one by one from the page allocator are mapped at
//! consecutive addresses (FreeBSD's `kva_alloc` + `kmem_back` over the
//! kernel map). Two users:
//!
//! - kernel thread stacks ([`KStack`]), each with an unmapped guard page
//!   below it, so that a thread that runs off its stack faults on the guard
//!   (reported as a kernel stack overflow by the trap code) instead of
//!   writing over whatever lies below;
//! - large buffers ([`KBuf`]): a program handed in by the host, an exec
//!   argument block. They need virtually contiguous bytes, not physically
//!   contiguous frames, so they are not limited by the buddy allocator's
//!   largest block nor by fragmentation, and they do not sit in the heap.
//!
//! The region is one top-level (PML4) slot of 512 GiB, chosen at boot
//! among the kernel half's empty ones; its page-directory-pointer table is
//! allocated then and never freed, so every address space (which copies the
//! kernel half of the PML4 at creation) sees the same mappings below it.
//! Page directories and page tables under it are allocated as mappings need
//! them and freed when they empty. Address ranges are handed out first fit
//! from a table of free extents.
//!
//! ```text
//!   a KStack:   | guard (unmapped) | stack pages ...          | <- top
//!   a KBuf:     | pages mapped up to `mapped` | reserved, unmapped |
//! ```
//!
//! Pages are unmanaged ("no object"), ordinary allocations that leave the
//! pageout daemon's reserve alone, except a stack's, which may take from it
//! when nothing else is free (see [`KStack::new`]), and the page tables
//! under the region, which may too.
//!
//! Locking: one plain lock ([`vm::sync::Mutex`], taken with interrupts on
//! only) over the free extents and the page tables of the region; under it
//! only the page allocator's locks. Mapping needs no flush (the entries
//! were not present); unmapping takes the entries down under the lock,
//! lets it go while every CPU invalidates the range
//! (`arch::tlb::shootdown_kernel`), and only then, under the lock again,
//! frees the pages and unlinks the tables that emptied, which are freed
//! after a full flush on every CPU.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use spin::Once;
use vm::phys::AllocFlags;
use vm::sync::Mutex;
use x86_64::registers::control::Cr3;

use crate::arch::direct_map::phys_to_virt;

const PAGE: u64 = vm::PAGE_SIZE as u64;
const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const NX: u64 = 1 << 63;
/// In a non-present entry, between an unmapping's two passes: the page it
/// mapped waits for the shootdown before it is freed.
const DYING: u64 = 1 << 9;
const ADDR: u64 = 0x000F_FFFF_FFFF_F000;
/// Bytes one PML4 slot maps.
const SLOT: u64 = 1 << 39;
/// Free extents the table holds; a free that finds it full leaves its
/// range unused (counted in [`LOST`]).
const MAX_EXTENTS: usize = 256;

/// Why a kernel mapping could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KmemError {
    /// No address range of that size is free.
    NoSpace,
    /// No page (for the memory or a page table) could be had.
    NoMemory,
}

/// The region and what its lock protects. (K: the lock, every field.)
struct Region {
    /// Physical address of the region's page-directory-pointer table. (C)
    pdpt: u64,
    /// Free address ranges (start, bytes), sorted by start, not adjacent.
    free: [(u64, u64); MAX_EXTENTS],
    nfree: usize,
}

/// The region's first address. (C, set once by [`init`].)
static BASE: Once<u64> = Once::new();
static REGION: Mutex<Region> =
    Mutex::ranked(Region { pdpt: 0, free: [(0, 0); MAX_EXTENTS], nfree: 0 }, &vm::witness::order::KMEM);

/// Pages mapped in the region (stacks and buffers), and page-table pages
/// under it. (A)
pub static PAGES: AtomicUsize = AtomicUsize::new(0);
pub static TABLES: AtomicUsize = AtomicUsize::new(0);
/// Bytes of address space lost to a full extent table. (A)
pub static LOST: AtomicU64 = AtomicU64::new(0);

fn table(phys: u64) -> &'static [AtomicU64; 512] {
    // SAFETY: `phys` is a page-table page of the region (or the kernel's
    // PML4), reached through the direct map; entries are only accessed as
    // atomics here (and by the MMU).
    unsafe { &*(phys_to_virt(phys) as *const [AtomicU64; 512]) }
}

fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * level)) & 0x1FF) as usize
}

/// Claims an empty slot of the kernel half of the PML4 for the region and
/// gives it its page-directory-pointer table. Called once at boot, after
/// the page allocator and before the first address space or thread.
pub fn init() -> Result<(), KmemError> {
    let pml4 = table(Cr3::read_raw().0.start_address().as_u64());
    // The highest empty slot below the kernel image's (511).
    let slot = (256..511).rev().find(|&i| pml4[i].load(Ordering::Relaxed) & P == 0).ok_or(KmemError::NoSpace)?;
    let pm = vm::global();
    let pdpt = pm.alloc(AllocFlags::UNMANAGED | AllocFlags::ZERO).ok_or(KmemError::NoMemory)?;
    pml4[slot].store(pdpt.phys() | P | RW, Ordering::Relaxed);
    let base = 0xFFFF_0000_0000_0000 | ((slot as u64) << 39);
    REGION_PDPT.store(pdpt.phys(), Ordering::Relaxed);
    BASE.call_once(|| base);
    let mut r = REGION.lock();
    r.pdpt = pdpt.phys();
    // The first page stays unused: no range starts at the slot's edge.
    r.free[0] = (base + PAGE, SLOT - PAGE);
    r.nfree = 1;
    log::info!("kmem: {} GiB of kernel address space at {base:#x} (PML4 slot {slot})", SLOT >> 30);
    Ok(())
}

/// Whether `va` lies in the region.
pub fn contains(va: u64) -> bool {
    BASE.get().is_some_and(|&b| (b..b + SLOT).contains(&va))
}

impl Region {
    /// First fit: a range of `len` bytes (page multiple).
    fn alloc_va(&mut self, len: u64) -> Option<u64> {
        let i = (0..self.nfree).find(|&i| self.free[i].1 >= len)?;
        let (start, size) = self.free[i];
        if size == len {
            self.free.copy_within(i + 1..self.nfree, i);
            self.nfree -= 1;
        } else {
            self.free[i] = (start + len, size - len);
        }
        Some(start)
    }

    /// Gives a range back, merged with its neighbours.
    fn free_va(&mut self, start: u64, len: u64) {
        let i = (0..self.nfree).find(|&i| self.free[i].0 > start).unwrap_or(self.nfree);
        let joins_prev = i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == start;
        let joins_next = i < self.nfree && start + len == self.free[i].0;
        match (joins_prev, joins_next) {
            (true, true) => {
                self.free[i - 1].1 += len + self.free[i].1;
                self.free.copy_within(i + 1..self.nfree, i);
                self.nfree -= 1;
            }
            (true, false) => self.free[i - 1].1 += len,
            (false, true) => self.free[i] = (start, len + self.free[i].1),
            (false, false) => {
                if self.nfree == MAX_EXTENTS {
                    LOST.fetch_add(len, Ordering::Relaxed);
                    return;
                }
                self.free.copy_within(i..self.nfree, i + 1);
                self.free[i] = (start, len);
                self.nfree += 1;
            }
        }
    }

    /// The leaf entry of `va`, with the tables above it made if `create`.
    fn leaf(&mut self, va: u64, create: bool) -> Result<Option<&'static AtomicU64>, KmemError> {
        let mut t = self.pdpt;
        for level in (1..3).rev() {
            let e = &table(t)[index(va, level)];
            let v = e.load(Ordering::Relaxed);
            if v & P != 0 {
                t = v & ADDR;
                continue;
            }
            if !create {
                return Ok(None);
            }
            // A table is one page for up to 2 MiB of mappings: it may come
            // from the reserve.
            let pm = vm::global();
            let flags = AllocFlags::UNMANAGED | AllocFlags::ZERO;
            let page = pm.alloc(flags).or_else(|| pm.alloc(flags | AllocFlags::SYSTEM)).ok_or(KmemError::NoMemory)?;
            TABLES.fetch_add(1, Ordering::Relaxed);
            e.store(page.phys() | P | RW, Ordering::Relaxed);
            t = page.phys();
        }
        Ok(Some(&table(t)[index(va, 0)]))
    }

    /// Maps a fresh page at `va` (not mapped); with `reserve`, one of the
    /// pageout daemon's reserve if no other can be had.
    fn map_new(&mut self, va: u64, reserve: bool) -> Result<(), KmemError> {
        let e = self.leaf(va, true)?.expect("created");
        let pm = vm::global();
        let flags = AllocFlags::UNMANAGED | AllocFlags::ZERO;
        let page = pm
            .alloc(flags)
            .or_else(|| if reserve { pm.alloc(flags | AllocFlags::SYSTEM) } else { None })
            .ok_or(KmemError::NoMemory)?;
        debug_assert_eq!(e.load(Ordering::Relaxed) & P, 0, "kmem: {va:#x} mapped twice");
        e.store(page.phys() | P | RW | NX, Ordering::Relaxed);
        PAGES.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Takes down the entries of `[start, end)`: each becomes DYING, its
    /// page's address kept, until [`Region::free_dying`] frees the page
    /// once the range has been shot down. Returns whether any was mapped.
    fn take_down(&mut self, start: u64, end: u64) -> bool {
        let mut any = false;
        let mut va = start;
        while va < end {
            if let Ok(Some(e)) = self.leaf(va, false) {
                let v = e.load(Ordering::Relaxed);
                if v & P != 0 {
                    e.store((v & ADDR) | DYING, Ordering::Relaxed);
                    any = true;
                }
            }
            va += PAGE;
        }
        any
    }

    /// Frees the pages [`Region::take_down`] left DYING in `[start, end)`
    /// (the range has been shot down since), then unlinks the page tables
    /// and directories that emptied, chaining them through their first
    /// word for [`free_tables`] after a full flush. Returns the chain.
    fn free_dying(&mut self, start: u64, end: u64) -> u64 {
        let pm = vm::global();
        let mut va = start;
        while va < end {
            if let Ok(Some(e)) = self.leaf(va, false) {
                let v = e.load(Ordering::Relaxed);
                if v & DYING != 0 {
                    e.store(0, Ordering::Relaxed);
                    pm.free(pm.page_of(v & ADDR).expect("kmem page outside the page array"));
                    PAGES.fetch_sub(1, Ordering::Relaxed);
                }
            }
            va += PAGE;
        }
        // Page tables, then directories, whose range the unmapping touched.
        let mut chain = 0;
        for level in 1..3 {
            let span = 1u64 << (12 + 9 * level);
            let mut at = start & !(span - 1);
            while at < end {
                self.unlink_table_if_empty(at, level, &mut chain);
                at += span;
            }
        }
        chain
    }

    /// Unlinks the table of `level` (1: page table, 2: directory) covering
    /// `va` if it maps nothing, and chains it onto `chain` (through its
    /// first word, which is 0: the table is empty) to be freed after a
    /// full flush.
    fn unlink_table_if_empty(&mut self, va: u64, level: u32, chain: &mut u64) {
        let mut t = self.pdpt;
        for l in (level + 1..3).rev() {
            let v = table(t)[index(va, l)].load(Ordering::Relaxed);
            if v & P == 0 {
                return;
            }
            t = v & ADDR;
        }
        let parent = &table(t)[index(va, level)];
        let v = parent.load(Ordering::Relaxed);
        // An entry another unmapping took down and has not freed yet
        // (DYING, between its two passes) still holds its page: the table
        // is in use.
        if v & P == 0 || table(v & ADDR).iter().any(|e| e.load(Ordering::Relaxed) & (P | DYING) != 0) {
            return;
        }
        parent.store(0, Ordering::Relaxed);
        table(v & ADDR)[0].store(*chain, Ordering::Relaxed);
        *chain = v & ADDR;
    }
}

/// Frees the page tables chained by [`Region::free_dying`], once a full
/// flush on every CPU has dropped the walks' cached entries through them.
fn free_tables(chain: u64) {
    if chain == 0 {
        return;
    }
    crate::arch::tlb::shootdown_kernel(0, crate::arch::tlb::ALL);
    let n = crate::arch::pmap::free_tables(chain);
    TABLES.fetch_sub(n as usize, Ordering::Relaxed);
}

/// Takes an address range of `len` bytes (a page multiple), mapping pages
/// over `[start + skip, start + skip + map)` of it (from the reserve if need
/// be, with `reserve`). Returns its start.
fn take(len: u64, skip: u64, map: u64, reserve: bool) -> Result<u64, KmemError> {
    let mut r = REGION.lock();
    let start = r.alloc_va(len).ok_or(KmemError::NoSpace)?;
    let mut va = start + skip;
    while va < start + skip + map {
        if let Err(e) = r.map_new(va, reserve) {
            drop(r);
            give_back(start, len);
            return Err(e);
        }
        va += PAGE;
    }
    Ok(start)
}

/// Unmaps and frees the pages of `[start, start + len)` and gives the range
/// back. The shootdowns are done with the lock let go: each waits for every
/// other CPU to acknowledge, which under emulation, with more virtual CPUs
/// than host cores, can take milliseconds, and a CPU that wants the lock
/// meanwhile (a fork making a stack) would spin all that time. The range
/// stays taken until the second pass, so no one maps into it meanwhile.
fn give_back(start: u64, len: u64) {
    let end = start + len;
    if REGION.lock().take_down(start, end) {
        crate::arch::tlb::shootdown_kernel(start, end);
    }
    let chain = {
        let mut r = REGION.lock();
        let chain = r.free_dying(start, end);
        r.free_va(start, len);
        chain
    };
    free_tables(chain);
}

/// A kernel thread's stack: pages mapped under its top, an unmapped guard
/// page below them.
pub struct KStack {
    /// The guard page's address (the range's start). (C)
    base: u64,
    /// Bytes of stack above the guard. (C)
    size: u64,
}

impl KStack {
    /// A stack of `size` bytes (rounded up to pages) above a guard page.
    /// Its pages may come from the pageout daemon's reserve when no other
    /// can be had: a thread is how memory gets freed (a helper that gives
    /// pages back, a process that exits), and a stack is a few pages.
    pub fn new(size: usize) -> Result<KStack, KmemError> {
        let size = (size as u64).next_multiple_of(PAGE);
        let base = take(size + PAGE, PAGE, size, true)?;
        Ok(KStack { base, size })
    }

    /// The address above the stack's last byte (the initial stack pointer).
    pub fn top(&self) -> u64 {
        self.base + PAGE + self.size
    }

    /// The lowest byte of the stack (just above the guard).
    pub fn bottom(&self) -> u64 {
        self.base + PAGE
    }

    /// The guard page's range.
    pub fn guard(&self) -> core::ops::Range<u64> {
        self.base..self.base + PAGE
    }
}

impl Drop for KStack {
    fn drop(&mut self) {
        give_back(self.base, self.size + PAGE);
    }
}

/// Whether `va` lies in the guard page of a kernel stack: a page of the
/// region that is not mapped, directly below a mapped one. (Reads the
/// region's tables without its lock: for the fault report, where the lock
/// may be held by the thread that faulted; a stale answer only changes the
/// wording of the report.)
pub fn is_stack_guard(va: u64) -> bool {
    if !contains(va) {
        return false;
    }
    let Some(pdpt) = BASE.get().map(|_| REGION_PDPT.load(Ordering::Relaxed)) else { return false };
    let mapped = |va: u64| {
        let mut t = pdpt;
        for level in (1..3).rev() {
            let v = table(t)[index(va, level)].load(Ordering::Relaxed);
            if v & P == 0 {
                return false;
            }
            t = v & ADDR;
        }
        table(t)[index(va, 0)].load(Ordering::Relaxed) & P != 0
    };
    let page = va & !(PAGE - 1);
    !mapped(page) && mapped(page + PAGE)
}

/// The region's page-directory-pointer table, readable without the lock
/// (for [`is_stack_guard`]). (C once set)
static REGION_PDPT: AtomicU64 = AtomicU64::new(0);

/// A buffer of kernel memory: pages mapped at consecutive addresses, up to
/// a capacity reserved at creation. The bytes up to [`KBuf::len`] are mapped
/// (zeroed when mapped); the buffer grows by mapping more pages, never
/// moving.
pub struct KBuf {
    /// The range's start. (C)
    base: u64,
    /// Bytes of address space reserved. (C)
    cap: u64,
    /// Bytes mapped, a page multiple.
    mapped: u64,
    /// Bytes the owner uses.
    len: usize,
}

impl KBuf {
    /// A buffer of `cap` bytes of address space with nothing mapped.
    pub fn with_capacity(cap: usize) -> Result<KBuf, KmemError> {
        let cap = (cap.max(1) as u64).next_multiple_of(PAGE);
        let base = take(cap, 0, 0, false)?;
        Ok(KBuf { base, cap, mapped: 0, len: 0 })
    }

    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> Result<KBuf, KmemError> {
        let mut b = KBuf::with_capacity(len)?;
        b.resize(len)?;
        Ok(b)
    }

    /// Makes the buffer `len` bytes long, mapping (zeroed) pages as needed;
    /// bytes past the old length that were mapped before keep what they
    /// held. Fails past the capacity or when pages are short (then the
    /// buffer is as it was, possibly with more pages mapped).
    pub fn resize(&mut self, len: usize) -> Result<(), KmemError> {
        let need = (len as u64).next_multiple_of(PAGE);
        if need > self.cap {
            return Err(KmemError::NoSpace);
        }
        if need > self.mapped {
            let mut r = REGION.lock();
            while self.mapped < need {
                r.map_new(self.base + self.mapped, false)?;
                self.mapped += PAGE;
            }
        }
        self.len = len;
        Ok(())
    }

    /// Appends `bytes`, growing the mapping as needed.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) -> Result<(), KmemError> {
        let at = self.len;
        self.resize(at.checked_add(bytes.len()).ok_or(KmemError::NoSpace)?)?;
        self.as_mut_slice()[at..].copy_from_slice(bytes);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `[base, base + mapped)` is mapped, writable, ours alone;
        // len <= mapped; the region's pages are 4096-byte aligned.
        unsafe { core::slice::from_raw_parts(self.base as *const u8, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in as_slice, exclusively (`&mut self`).
        unsafe { core::slice::from_raw_parts_mut(self.base as *mut u8, self.len) }
    }

    /// Keeps the bytes mapped for the rest of the kernel's life.
    pub fn leak(self) -> &'static [u8] {
        let b = core::mem::ManuallyDrop::new(self);
        // SAFETY: as in as_slice; the mapping is never removed.
        unsafe { core::slice::from_raw_parts(b.base as *const u8, b.len) }
    }
}

impl Drop for KBuf {
    fn drop(&mut self) {
        give_back(self.base, self.cap);
    }
}

mod tests {
    use ktest::ktest;

    use super::{KBuf, KStack, is_stack_guard};

    /// A buffer far larger than the buddy allocator's largest block (4 MiB)
    /// maps pages one by one, holds what is written, and gives every page
    /// (and page table) back when dropped: the runner checks the free-page
    /// count after the test.
    #[ktest]
    fn a_buffer_larger_than_any_block() {
        let pm = vm::global();
        let free0 = pm.free_count();
        let mut b = KBuf::with_capacity(16 << 20).unwrap();
        assert_eq!(pm.free_count(), free0, "a reservation took pages");
        for i in 0..(12 << 20) / 4096 {
            b.extend_from_slice(&[i as u8; 4096]).unwrap();
        }
        assert!(pm.free_count() + 3072 <= free0);
        assert!(b.as_slice().chunks(4096).enumerate().all(|(i, c)| c.iter().all(|&x| x == i as u8)));
        assert!(b.resize(17 << 20).is_err(), "grew past its capacity");
        drop(b);
        vm::drain_caches();
        assert_eq!(pm.free_count(), free0);
    }

    /// A stack's pages are mapped and writable, the page below is its guard.
    #[ktest]
    fn a_stack_has_a_guard_page_below_it() {
        let s = KStack::new(32 << 10).unwrap();
        assert_eq!(s.top() - s.bottom(), 32 << 10);
        assert!(crate::arch::paging::is_mapped(s.bottom(), 32 << 10));
        assert!(crate::arch::paging::translate(s.guard().start).is_none());
        assert!(is_stack_guard(s.guard().start + 100));
        assert!(!is_stack_guard(s.bottom()));
        // SAFETY: the stack's pages are ours, mapped and writable.
        unsafe { core::ptr::write_bytes(s.bottom() as *mut u8, 0xAB, 32 << 10) };
    }
}
