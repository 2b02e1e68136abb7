//! The x86_64 pmap: `vm::pmap::Pmap` over 4-level page tables, and
//! `vm::pmap::PageMappings` over PV entries.
//!
//! ```text
//!  leaf entry (4 KiB page)
//!  63  62..52   51..12          11 10  9   8  7   6  5  4   3   2   1  0
//!  NX  ignored  physical frame   -  M   W  G  PAT D  A  PCD PWT U  RW P
//!                                   \   \_ software: wired mapping
//!                                    \_ software: managed page (has a PV entry)
//! ```
//!
//! Every address space has its own top-level table (PML4). Its upper half
//! (entries 256..511) is copied from the kernel's at creation, so the kernel
//! is mapped the same in all of them; the lower half belongs to the space.
//! Page-table pages are unmanaged pages from the allocator (rule 11), zeroed
//! when taken and freed when a removal leaves them empty.
//!
//! PV entries (one per mapping of a managed page) come from pages of
//! entries owned by the mapping's pmap (`pv_chunk.rs`); each page has a
//! list head in a side array indexed by its page-array index. They are
//! what `remove_all`, `is_modified`, `clear_modify` and `ts_referenced` walk.
//! A PV entry names the leaf entry that maps the page (its physical
//! address), not the virtual address: the walks reach the entry without
//! a walk down the tables, and a leaf table moved whole to other
//! addresses (`mremap`, `moves.rs`) keeps its pages' PV entries as they
//! are. The address is the table's base ([`Page::table_base`] of the
//! table's page) plus the entry's index.
//!
//! Locking (FreeBSD's amd64 shape): each pmap has its own lock (the pmap
//! lock, `X86Pmap::lock`), which covers its page tables, its leaf hint and
//! its counts; the PV lists are covered by [`PV_BUCKETS`] PV-list locks, a
//! page's being its bucket's (`Globals::buckets`, by page-array index).
//! The order is the pmap lock, then a PV-list lock: `enter` and `remove`
//! take their pmap's lock and, for each page whose list they change, that
//! page's PV-list lock. The PV walks go the other way (from a page's list
//! to each pmap that maps it), so they hold the page's PV-list lock and
//! only *try* each pmap's lock; when that fails they let the list go,
//! wait for the pmap's lock, take the list again, and go on only if the
//! bucket's generation says no list of it changed meanwhile (else they
//! start over). Two processes faulting, or one faulting while page-out
//! walks another's pages, no longer wait for one lock. Both are leaves in
//! the lock order but for the page allocator's and the zones' locks:
//! taken under the map, object and page busy locks.
//!
//! TLB: a change to a live translation returns a `TlbFlush`; flushing it
//! invalidates the range on every CPU that has the space loaded
//! ([`X86Pmap::cpus`], `arch::tlb`): `invlpg` for a few pages, a reload of
//! CR3 beyond that, and an IPI to each other CPU in the set. The PV walks
//! (`remove_all` and the like, `pv_walk.rs`) flush what they changed after
//! they let go of the pmap lock and before they return, holding each pmap
//! they flush alive meanwhile (`X86Pmap::walkers`).

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use spin::Once;
use vm::PAGE_SIZE;
use vm::page::Page;
use vm::phys::{AllocFlags, PhysMem};
use vm::pmap::{Pmap, PmapError, Prot, TlbFlush};
use vm::sync::Mutex;
use x86_64::registers::control::Cr3;
use x86_64::registers::model_specific::{Efer, EferFlags};

use crate::arch::direct_map::phys_to_virt;

mod moves;
mod pv_chunk;
mod pv_walk;
mod scan;
mod tests;
mod walk;

use pv_chunk::Chunks;

pub use walk::free_tables;
use walk::{first_used, leaf_at, leaf_phys, leaf_va, walk_range};

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const A: u64 = 1 << 5;
const D: u64 = 1 << 6;
const PS: u64 = 1 << 7;
const SW_WIRED: u64 = 1 << 9;
const SW_MANAGED: u64 = 1 << 10;
/// In a non-present entry: the wiring of a page that left its object while
/// this wired mapping held it (`orphan_wired`); the address bits name it.
const SW_ORPHAN: u64 = 1 << 11;
const NX: u64 = 1 << 63;
const ADDR: u64 = 0x000F_FFFF_FFFF_F000;

/// The entry bits, the kernel's software bits among them, for debuggers
/// that walk the tables (`vm::DebugConstant`).
#[used]
pub static DEBUG_CONSTANTS: [vm::DebugConstant; 12] = [
    ("P", P),
    ("RW", RW),
    ("US", US),
    ("A", A),
    ("D", D),
    ("PS", PS),
    ("SW_WIRED", SW_WIRED),
    ("SW_MANAGED", SW_MANAGED),
    ("SW_ORPHAN", SW_ORPHAN),
    ("NX", NX),
    ("ADDR", ADDR),
    ("USER_END", USER_END),
];

/// The lower (user) half of every address space.
pub const USER_END: u64 = 0x0000_8000_0000_0000;

/// A PV entry: one mapping of a managed page.
struct Pv {
    /// The next mapping of the same page. (B)
    next: *mut Pv,
    /// Where the page is mapped: the address space, and the physical
    /// address of the leaf entry in one of its tables ([`leaf_va`] gives
    /// the virtual address). (B)
    pmap: *const X86Pmap,
    leaf: u64,
}

/// The addresses one leaf table maps.
const LEAF_SPAN: u64 = 1 << 21;

/// PV-list locks: a page's PV list is covered by the lock of bucket
/// `index % PV_BUCKETS` (its page-array index). Consecutive pages fall in
/// different buckets, so CPUs faulting their own pages rarely meet.
const PV_BUCKETS: usize = 64;

/// One PV-list lock and its generation, on a cache line of its own.
#[repr(align(64))]
struct PvBucket {
    lock: Mutex<()>,
    /// Changes to the lists of the bucket's pages, raised under the lock:
    /// a PV walk that let the lock go (to wait for a pmap's lock) sees
    /// here whether its list may have changed meanwhile. (B)
    generation: AtomicU64,
}

struct Globals {
    /// The page allocator. (C)
    pm: &'static PhysMem,
    /// PV list head per page-array index (0: none): the address of its
    /// first `Pv`. (B: the page's bucket's lock; the atomics are loaded
    /// and stored Relaxed under it, and read by the debugger.)
    heads: Heads,
    /// The PV-list locks (see [`PV_BUCKETS`]).
    buckets: [PvBucket; PV_BUCKETS],
    /// Whether the CPU has no-execute. (C)
    nx: bool,
    /// The kernel's PML4 (the bootloader's), whose upper half every space
    /// copies. (C)
    kernel_pml4: u64,
}

static GLOBALS: Once<Globals> = Once::new();

/// The machine's mappings view (PV lists), for `vm::set_mappings`.
pub struct X86Mappings;
pub static MAPPINGS: X86Mappings = X86Mappings;

fn g() -> &'static Globals {
    GLOBALS.get().expect("pmap used before pmap::init")
}

/// Sets up PV lists for every page and installs the mappings view.
pub fn init() -> Result<(), PmapError> {
    let pm = vm::global();
    let heads = Heads::new(pm, pm.pages().len())?;
    let nx = Efer::read().contains(EferFlags::NO_EXECUTE_ENABLE);
    GLOBALS.call_once(|| Globals {
        pm,
        heads,
        buckets: core::array::from_fn(|_| PvBucket {
            lock: Mutex::ranked((), &vm::witness::order::PV),
            generation: AtomicU64::new(0),
        }),
        nx,
        kernel_pml4: Cr3::read_raw().0.start_address().as_u64(),
    });
    vm::set_mappings(&MAPPINGS);
    log::info!("pmap: {} PV list heads, NX {}", pm.pages().len(), if nx { "on" } else { "off" });
    Ok(())
}

/// A page table's entries, through the direct map.
fn table(phys: u64) -> &'static [AtomicU64; 512] {
    // SAFETY: `phys` is a page-table page (a PML4 of ours or a table found in
    // a present entry); the direct map covers it; its entries are 8-byte
    // aligned u64s, read and written only as atomics here (and by the MMU).
    unsafe { &*(phys_to_virt(phys) as *const [AtomicU64; 512]) }
}

fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * level)) & 0x1FF) as usize
}

/// A `TlbFlush`'s flusher: `[start, end)` of pmap `space` on the CPUs that
/// have it loaded.
fn flush_range(space: usize, start: u64, end: u64) {
    // SAFETY: a `TlbFlush` names the pmap that made it, which its caller
    // holds while it flushes.
    let pmap = unsafe { &*(space as *const X86Pmap) };
    pmap.flush(start, end);
}

/// One address space's tables.
pub struct X86Pmap {
    /// The pmap lock: covers the tables, the leaf hint, the counts and
    /// the pages of PV entries (see the module docs for its order with the
    /// PV-list locks).
    lock: Mutex<Chunks>,
    /// Physical address of the PML4. (C)
    pml4: u64,
    /// Wired mappings. (P)
    wired: AtomicUsize,
    /// Mappings of managed pages: the resident set, for the OOM killer's
    /// choice. (P; a plain load and store under it)
    resident: AtomicUsize,
    /// The leaf table `walk` reached last: the 2 MiB it maps (`va >> 21`,
    /// plus one; 0: none) and its physical address, so that the next walk
    /// in the same 2 MiB (a sequential run of faults) goes straight there
    /// (FreeBSD's amd64 pmap reaches the leaf table through its recursive
    /// mapping in one step; this is the same for the common case).
    /// Cleared whenever page tables are freed. (P)
    leaf_hint: AtomicU64,
    leaf_hint_table: AtomicU64,
    /// The CPUs that have this space loaded, and so may cache its
    /// translations (bit n: CPU n). Kept by the switch
    /// (`arch::tlb::switch_space`), read by every flush.
    cpus: AtomicU64,
    /// PV walks that changed entries of this space under the pmap lock and
    /// flush them after it, or that wait for the pmap lock with the PV
    /// list let go (`pv_walk.rs`): `Drop` waits for them. (A; raised under
    /// the pmap lock or under the PV-list lock of a page the space maps)
    walkers: AtomicU32,
}

impl X86Pmap {
    /// A new address space: empty lower half, the kernel's upper half.
    pub fn new() -> Result<Arc<X86Pmap>, PmapError> {
        let gl = g();
        let top = gl.pm.alloc(AllocFlags::UNMANAGED | AllocFlags::ZERO).ok_or(PmapError::NoMemory)?;
        let pml4 = top.phys();
        let kernel = table(gl.kernel_pml4);
        for (new, old) in table(pml4)[256..].iter().zip(&kernel[256..]) {
            new.store(old.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        Ok(Arc::new(X86Pmap {
            lock: Mutex::ranked(Chunks::new(), &vm::witness::order::PMAP),
            pml4,
            wired: AtomicUsize::new(0),
            resident: AtomicUsize::new(0),
            leaf_hint: AtomicU64::new(0),
            leaf_hint_table: AtomicU64::new(0),
            cpus: AtomicU64::new(0),
            walkers: AtomicU32::new(0),
        }))
    }

    /// Physical address of the top-level table (for CR3).
    pub fn root(&self) -> u64 {
        self.pml4
    }

    /// The CPUs that have this space loaded (see the field).
    pub fn cpus(&self) -> &AtomicU64 {
        &self.cpus
    }

    /// Invalidates `[start, end)` of this space on every CPU that may cache
    /// it, and returns when each has.
    fn flush(&self, start: u64, end: u64) {
        crate::arch::tlb::fence_before_read();
        crate::arch::tlb::shootdown(self.cpus.load(Ordering::Relaxed), start, end);
    }

    /// A `TlbFlush` of `[start, end)` of this space.
    fn owe(&self, start: u64, end: u64) -> TlbFlush {
        TlbFlush::range(self as *const X86Pmap as usize, start, end, flush_range)
    }

    /// The entries the MMU reads to translate `va`, top level first: PML4,
    /// PDPT, PD, PT entry, as far as the walk goes (it stops at the first
    /// entry that is not present). For reports and the debugger's tests.
    pub fn walk_entries(&self, va: u64) -> Vec<u64> {
        let _pmap = self.lock.lock();
        let mut out = Vec::new();
        let mut t = self.pml4;
        for level in (0..4).rev() {
            let v = table(t)[index(va, level)].load(Ordering::Acquire);
            out.push(v);
            if v & P == 0 || (level > 0 && v & PS != 0) {
                break;
            }
            t = v & ADDR;
        }
        out
    }

    /// The leaf entry of `va`, allocating tables on the way if `create`.
    /// Under the pmap lock (it reads and sets the leaf hint). The hint's
    /// hit is inlined into the callers; the walk itself is not.
    #[inline(always)]
    fn walk(&self, va: u64, create: bool) -> Result<Option<&'static AtomicU64>, PmapError> {
        assert!(va < USER_END, "pmap: {va:#x} is not in the user half");
        if self.leaf_hint.load(Ordering::Relaxed) == (va >> 21) + 1 {
            return Ok(Some(&table(self.leaf_hint_table.load(Ordering::Relaxed))[index(va, 0)]));
        }
        self.walk_tables(va, create)
    }

    /// [`X86Pmap::walk`] past the hint: down the four levels. A new
    /// leaf table is given its base ([`Page::set_table_base`]).
    #[inline(never)]
    fn walk_tables(&self, va: u64, create: bool) -> Result<Option<&'static AtomicU64>, PmapError> {
        let key = (va >> 21) + 1;
        let Some(pde) = self.pde(va, create)? else { return Ok(None) };
        let v = pde.load(Ordering::Acquire);
        let t = if v & P == 0 {
            if !create {
                return Ok(None);
            }
            let page = g().pm.alloc(AllocFlags::UNMANAGED | AllocFlags::ZERO).ok_or(PmapError::NoMemory)?;
            page.set_table_base(va & !(LEAF_SPAN - 1));
            // Intermediate entries allow everything; the leaf decides.
            pde.store(page.phys() | P | RW | US, Ordering::Release);
            page.phys()
        } else {
            assert!(v & PS == 0, "pmap: huge page in a user address space");
            v & ADDR
        };
        self.leaf_hint.store(key, Ordering::Relaxed);
        self.leaf_hint_table.store(t, Ordering::Relaxed);
        Ok(Some(&table(t)[index(va, 0)]))
    }

    /// The page-directory entry of `va` (the one that points to its leaf
    /// table), making the tables above it on the way if `create`. Under
    /// the pmap lock.
    fn pde(&self, va: u64, create: bool) -> Result<Option<&'static AtomicU64>, PmapError> {
        assert!(va < USER_END, "pmap: {va:#x} is not in the user half");
        let mut t = self.pml4;
        for level in (2..4).rev() {
            let e = &table(t)[index(va, level)];
            let v = e.load(Ordering::Acquire);
            if v & P == 0 {
                if !create {
                    return Ok(None);
                }
                let page = g().pm.alloc(AllocFlags::UNMANAGED | AllocFlags::ZERO).ok_or(PmapError::NoMemory)?;
                e.store(page.phys() | P | RW | US, Ordering::Release);
                t = page.phys();
            } else {
                assert!(v & PS == 0, "pmap: huge page in a user address space");
                t = v & ADDR;
            }
        }
        Ok(Some(&table(t)[index(va, 1)]))
    }

    /// Benchmark support (`bench::faults`, the null fault): clears the
    /// present bit of every leaf in `[start, end)`, keeping the rest of each
    /// entry, so that touching the page faults. The space must not be
    /// loaded (no TLB flush is done) and must be given back with [`unhide`]
    /// on each page before its mappings are removed.
    ///
    /// [`unhide`]: X86Pmap::unhide
    pub fn hide(&self, start: u64, end: u64) {
        let _pmap = self.lock.lock();
        self.for_each_leaf(start, end, None, |_, e| {
            e.fetch_and(!P, Ordering::AcqRel);
        });
    }

    /// Sets the present bit again on the hidden leaf of `va`: the least a
    /// page-fault handler can do to resolve a fault. Returns false if `va`
    /// has no hidden leaf.
    pub fn unhide(&self, va: u64) -> bool {
        let _pmap = self.lock.lock();
        match self.walk(va & !(PAGE_SIZE as u64 - 1), false) {
            Ok(Some(e)) => {
                let v = e.load(Ordering::Acquire);
                if v & P == 0 && v & ADDR != 0 {
                    e.store(v | P, Ordering::Release);
                    return true;
                }
                false
            }
            _ => false,
        }
    }

    /// Clears one leaf entry and its PV entry; harvests the dirty and
    /// accessed bits into the page. Returns the old entry. Under the pmap
    /// lock; `list_held` says the caller holds the PV-list lock of the
    /// mapped page already (a PV walk), else it is taken here.
    fn clear_leaf(&self, chunks: &mut Chunks, e: &AtomicU64, list_held: bool) -> u64 {
        let old = e.swap(0, Ordering::AcqRel);
        if old & P == 0 {
            return old;
        }
        if old & SW_WIRED != 0 {
            self.wired.fetch_sub(1, Ordering::Relaxed);
        }
        if old & SW_MANAGED != 0 {
            let page = g().pm.page_of(old & ADDR).expect("managed mapping of an unknown frame");
            if old & D != 0 {
                page.set_all_dirty();
            }
            if old & A != 0 {
                page.reference();
            }
            pv_remove(chunks, page, self, leaf_phys(e), list_held);
            page.remove_mapping();
            self.resident.store(self.resident.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
        }
        old
    }

    /// `remove`, with the pmap lock held by the caller.
    ///
    /// Page tables it empties are unlinked at once but freed only after the
    /// range is flushed on every CPU that has the space loaded (here, then,
    /// rather than by the caller): until then another CPU's walk may still
    /// go through a cached pointer to one of them.
    fn remove_locked(&self, chunks: &mut Chunks, start: u64, end: u64) -> TlbFlush {
        let mut any = false;
        let mut emptied = 0;
        self.for_each_leaf(start, end, Some(&mut emptied), |_, e| {
            self.clear_leaf(chunks, e, false);
            any = true;
        });
        if emptied != 0 {
            self.flush(start, end.min(USER_END));
            free_tables(emptied);
            return TlbFlush::none();
        }
        if any { self.owe(start, end.min(USER_END)) } else { TlbFlush::none() }
    }

    /// `protect`, with the pmap lock held by the caller.
    fn protect_locked(&self, start: u64, end: u64, prot: Prot) -> TlbFlush {
        let gl = g();
        let mut any = false;
        self.for_each_leaf(start, end, None, |_, e| {
            let old = e.load(Ordering::Acquire);
            let mut new = old;
            if !prot.contains(Prot::WRITE) {
                new &= !RW;
            }
            if !prot.contains(Prot::EXEC) && gl.nx {
                new |= NX;
            }
            if new != old {
                let was = e.swap(new & !D, Ordering::AcqRel);
                if was & D != 0
                    && was & SW_MANAGED != 0
                    && let Some(p) = gl.pm.page_of(was & ADDR)
                {
                    p.set_all_dirty();
                }
                any = true;
            }
        });
        if any { self.owe(start, end.min(USER_END)) } else { TlbFlush::none() }
    }

    /// Calls `f` for every present leaf in `[start, end)`, descending only
    /// into present tables. With `emptied`, page tables left with no
    /// entries are unlinked on the way back up (rule 11) and chained onto
    /// it, for [`free_tables`] once the TLBs no longer reach them.
    fn for_each_leaf(&self, start: u64, end: u64, emptied: Option<&mut u64>, mut f: impl FnMut(u64, &'static AtomicU64)) {
        let end = end.min(USER_END);
        let unlink = emptied.is_some();
        let mut chain = 0;
        if start < end {
            walk_range(self.pml4, 3, 0, start, end, unlink.then_some(&mut chain), &mut f);
        }
        if let Some(out) = emptied {
            *out = chain;
            // The hinted leaf table may be among the unlinked ones.
            self.leaf_hint.store(0, Ordering::Relaxed);
        }
    }
}

/// The PV list heads, one word per page-array index, in whole pages of
/// [`HEADS_PER_PAGE`] taken from the page allocator at boot: a 4 GiB
/// machine needs 8 MiB of them, more than the boot heap holds (the heap
/// cannot take pages before interrupts are on) and more than the
/// allocator's largest contiguous block.
struct Heads {
    /// The direct-map address of each page of heads. (C)
    pages: Vec<usize>,
}

/// Heads in one page.
const HEADS_PER_PAGE: usize = PAGE_SIZE / core::mem::size_of::<AtomicUsize>();

impl Heads {
    fn new(pm: &'static PhysMem, n: usize) -> Result<Heads, PmapError> {
        let mut pages = Vec::new();
        pages.try_reserve_exact(n.div_ceil(HEADS_PER_PAGE)).map_err(|_| PmapError::NoMemory)?;
        for _ in 0..n.div_ceil(HEADS_PER_PAGE) {
            let page = pm.alloc(AllocFlags::UNMANAGED | AllocFlags::ZERO).ok_or(PmapError::NoMemory)?;
            pages.push(phys_to_virt(page.phys()) as usize);
        }
        Ok(Heads { pages })
    }

    /// The head of the list of the page at page-array index `i`.
    fn at(&self, i: usize) -> &AtomicUsize {
        let page = self.pages[i / HEADS_PER_PAGE] as *const AtomicUsize;
        // SAFETY: a zeroed page of ours (never freed), through the direct
        // map; an all-zero AtomicUsize is a valid 0, and the page holds
        // HEADS_PER_PAGE of them.
        unsafe { &*page.add(i % HEADS_PER_PAGE) }
    }
}

impl Globals {
    /// The PV-list lock of the page at page-array index `i`.
    fn bucket(&self, i: usize) -> &PvBucket {
        &self.buckets[i % PV_BUCKETS]
    }
}

/// Puts `entry` at the head of `page`'s PV list, under its PV-list lock.
fn pv_insert(gl: &Globals, page: &Page, entry: *mut Pv) {
    let i = gl.pm.index_of(page) as usize;
    let b = gl.bucket(i);
    let _list = b.lock.lock();
    // SAFETY: `entry` is a live PV item we own, not yet listed.
    unsafe { (*entry).next = gl.heads.at(i).load(Ordering::Relaxed) as *mut Pv };
    gl.heads.at(i).store(entry as usize, Ordering::Relaxed);
    b.generation.fetch_add(1, Ordering::Relaxed);
}

/// Unlinks the PV entry of `(pmap, leaf)` from `page`'s list, taking its
/// PV-list lock unless `list_held`, and gives it back to the pmap's
/// `chunks` (under the pmap lock).
fn pv_remove(chunks: &mut Chunks, page: &Page, pmap: &X86Pmap, leaf: u64, list_held: bool) {
    let gl = g();
    let i = gl.pm.index_of(page) as usize;
    let b = gl.bucket(i);
    let _list = (!list_held).then(|| b.lock.lock());
    debug_assert!(b.lock.is_locked());
    let mut link: &AtomicUsize = gl.heads.at(i);
    // SAFETY: the list links are live PV items, followed under the list's
    // lock; the found item is unlinked before it is freed.
    unsafe {
        loop {
            let cur = link.load(Ordering::Relaxed) as *mut Pv;
            if cur.is_null() {
                break;
            }
            if core::ptr::eq((*cur).pmap, pmap) && (*cur).leaf == leaf {
                link.store((*cur).next as usize, Ordering::Relaxed);
                b.generation.fetch_add(1, Ordering::Relaxed);
                chunks.free(cur);
                return;
            }
            link = AtomicUsize::from_ptr(&raw mut (*cur).next as *mut usize);
        }
    }
    panic!("pmap: no PV entry for page {:#x} at {:#x} (leaf entry {leaf:#x})", page.phys(), leaf_va(leaf));
}

impl X86Pmap {
    /// `enter`, with `bits` (accessed, modified) set in the new entry.
    #[inline(always)]
    fn enter_with(&self, va: u64, page: &'static Page, prot: Prot, wired: bool, bits: u64) -> Result<TlbFlush, PmapError> {
        assert!(page.valid() != 0, "page {:#x}: an invalid page is never mapped (rule 2)", page.phys());
        let gl = g();
        let mut chunks = self.lock.lock();
        let e = self.walk(va, true)?.expect("walk with create returns an entry");
        self.set_leaf(gl, &mut chunks, e, va, page, prot, wired, bits)
    }

    /// The rest of `enter` once the leaf entry `e` of `va` is found, under
    /// the pmap lock. (The new PV entry is listed before the entry is
    /// stored: a PV walk that finds it waits for the pmap lock, and so for
    /// the store.)
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn set_leaf(
        &self,
        gl: &Globals,
        chunks: &mut Chunks,
        e: &AtomicU64,
        va: u64,
        page: &'static Page,
        prot: Prot,
        wired: bool,
        bits: u64,
    ) -> Result<TlbFlush, PmapError> {
        let managed = page.is_managed();
        let mut new = page.phys() | P | US | bits;
        if prot.contains(Prot::WRITE) {
            new |= RW;
        }
        if !prot.contains(Prot::EXEC) && gl.nx {
            new |= NX;
        }
        if wired {
            new |= SW_WIRED;
        }
        if managed {
            new |= SW_MANAGED;
        }
        let old = e.load(Ordering::Acquire);
        let same_page = old & P != 0 && old & ADDR == page.phys();
        let entry = if managed && !same_page { Some(chunks.alloc(self, leaf_phys(e))?) } else { None };
        if old & P != 0 && !same_page {
            self.clear_leaf(chunks, e, false);
        }
        if same_page {
            // Keep the hardware's dirty and accessed bits of the old entry.
            new |= old & (D | A);
            if old & SW_WIRED != 0 {
                self.wired.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if let Some(entry) = entry {
            pv_insert(gl, page, entry);
            page.add_mapping();
            self.resident.store(self.resident.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
        if wired {
            self.wired.fetch_add(1, Ordering::Relaxed);
        }
        e.store(new, Ordering::Release);
        Ok(if old & P != 0 { self.owe(va, va + PAGE_SIZE as u64) } else { TlbFlush::none() })
    }
}

impl Pmap for X86Pmap {
    fn enter(&self, va: u64, page: &'static Page, prot: Prot, wired: bool) -> Result<TlbFlush, PmapError> {
        self.enter_with(va, page, prot, wired, 0)
    }

    /// One lock and one walk, where `extract` then `enter` took two.
    fn enter_quick(&self, va: u64, page: &'static Page, prot: Prot) -> Result<bool, PmapError> {
        assert!(page.valid() != 0, "page {:#x}: an invalid page is never mapped (rule 2)", page.phys());
        let gl = g();
        let mut chunks = self.lock.lock();
        let e = self.walk(va, true)?.expect("walk with create returns an entry");
        if e.load(Ordering::Acquire) & P != 0 {
            return Ok(false);
        }
        let flush = self.set_leaf(gl, &mut chunks, e, va, page, prot, false, 0)?;
        debug_assert!(flush.is_empty(), "nothing was mapped, yet a flush is owed");
        flush.skip_not_loaded();
        Ok(true)
    }

    /// The new entry is marked accessed, and modified for a write (whose
    /// page the caller has dirtied): the CPU would otherwise set the bits
    /// itself when the access is retried, with a locked update of the entry
    /// (under emulation, a write to guest memory in the middle of its page
    /// walk).
    fn enter_accessed(&self, va: u64, page: &'static Page, prot: Prot, access: Prot, wired: bool) -> Result<TlbFlush, PmapError> {
        debug_assert!(prot.contains(access), "access {access:?} beyond the mapping's {prot:?}");
        let bits = if access.contains(Prot::WRITE) {
            debug_assert!(page.dirty() == vm::page::ALL_BLOCKS, "page {:#x}: entered modified but not dirty", page.phys());
            A | D
        } else {
            A
        };
        self.enter_with(va, page, prot, wired, bits)
    }

    fn remove(&self, start: u64, end: u64) -> TlbFlush {
        let mut chunks = self.lock.lock();
        self.remove_locked(&mut chunks, start, end)
    }

    fn protect(&self, start: u64, end: u64, prot: Prot) -> TlbFlush {
        let _pmap = self.lock.lock();
        self.protect_locked(start, end, prot)
    }

    fn move_range(&self, from: u64, to: u64, len: u64) -> Result<TlbFlush, PmapError> {
        let mut chunks = self.lock.lock();
        self.move_locked(&mut chunks, from, to, len)
    }

    fn take_orphan(&self, va: u64) -> Option<u64> {
        let _pmap = self.lock.lock();
        let e = self.walk(va & !(PAGE_SIZE as u64 - 1), false).ok()??;
        let v = e.load(Ordering::Acquire);
        if v & P != 0 || v & SW_ORPHAN == 0 {
            return None;
        }
        e.store(0, Ordering::Release);
        Some(v & ADDR)
    }

    fn next_used(&self, start: u64, end: u64) -> Option<u64> {
        let _pmap = self.lock.lock();
        let end = end.min(USER_END);
        if start >= end {
            return None;
        }
        first_used(self.pml4, 3, 0, start, end)
    }

    fn wired_at(&self, va: u64) -> bool {
        let _pmap = self.lock.lock();
        match self.walk(va & !(PAGE_SIZE as u64 - 1), false) {
            Ok(Some(e)) => {
                let v = e.load(Ordering::Acquire);
                v & P != 0 && v & SW_WIRED != 0
            }
            _ => false,
        }
    }

    fn extract(&self, va: u64) -> Option<(u64, Prot)> {
        let _pmap = self.lock.lock();
        let e = self.walk(va & !(PAGE_SIZE as u64 - 1), false).ok()??;
        let v = e.load(Ordering::Acquire);
        if v & P == 0 {
            return None;
        }
        let mut prot = Prot::READ;
        if v & RW != 0 {
            prot |= Prot::WRITE;
        }
        if v & NX == 0 {
            prot |= Prot::EXEC;
        }
        Some(((v & ADDR) | (va & (PAGE_SIZE as u64 - 1)), prot))
    }

    fn unwire(&self, va: u64) {
        let _pmap = self.lock.lock();
        if let Ok(Some(e)) = self.walk(va, false) {
            let old = e.fetch_and(!SW_WIRED, Ordering::AcqRel);
            if old & SW_WIRED != 0 {
                self.wired.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn wired_count(&self) -> usize {
        self.wired.load(Ordering::Relaxed)
    }

    fn resident_count(&self) -> usize {
        self.resident.load(Ordering::Relaxed)
    }
}

impl Drop for X86Pmap {
    fn drop(&mut self) {
        assert!(self.cpus.load(Ordering::SeqCst) == 0, "dropping an address space loaded on a CPU");
        // Removing everything also frees every page table below the PML4
        // (tables left empty by a failed enter included).
        self.remove(0, USER_END).skip_not_loaded();
        // A PV walk that found a mapping of this space before the removal
        // may still be flushing it, or waiting for its lock (its count was
        // raised under a lock the removal took after it). Acquire pairs
        // with the walk's Release decrement.
        while self.walkers.load(Ordering::Acquire) != 0 {
            core::hint::spin_loop();
        }
        assert_eq!(self.lock.get_mut().count(), 0, "pages of PV entries left after every mapping was removed");
        let pm = g().pm;
        pm.free(pm.page_of(self.pml4).expect("PML4 not in the page array"));
    }
}

impl X86Mappings {
    /// Every mapping of `page` as its PV list holds them: the pmap's
    /// address and the virtual address, most recent first. For reports and
    /// the debugger's tests (an address read while its table moves may be
    /// either).
    pub fn mappings_of(&self, page: &'static Page) -> Vec<(usize, u64)> {
        let gl = g();
        let i = gl.pm.index_of(page) as usize;
        let _list = gl.bucket(i).lock.lock();
        let mut out = Vec::new();
        let mut cur = gl.heads.at(i).load(Ordering::Relaxed) as *const Pv;
        while !cur.is_null() {
            // SAFETY: live PV items, read under the list's lock.
            unsafe {
                out.push(((*cur).pmap as usize, leaf_va((*cur).leaf)));
                cur = (*cur).next;
            }
        }
        out
    }
}
