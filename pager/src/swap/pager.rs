//! The swap pager: the pager of anonymous memory that has been paged out
//! (FreeBSD's `swap_pager.c`, with one swap device).
//!
//! An anonymous object gets one at its first page-out (the pageout daemon
//! asks the kernel, which makes it over its swap space) and becomes a swap
//! object. The pager keeps the
//! object's swap metadata: for each paged-out page index, the swap block
//! holding its data, in blocks of [`CHUNK`] slots for an aligned run of
//! [`CHUNK`] indices ([`SwBlk`], FreeBSD's `swblk`), the leaves of a radix
//! trie keyed by run (FreeBSD's per-object `swp_blks` pctrie). A sparse
//! object costs a `SwBlk` (136 bytes, in the heap) and a share of a trie
//! node per run that holds a paged-out page, a dense one about 4.5 bytes
//! per page.
//!
//! The metadata is allocated with failure in mind: before a run of pages
//! is written, a slot is made for each (a `SwBlk`, a trie node); a page
//! whose slot cannot be had is not paged out now (it stays dirty and
//! resident, as after a failed write, and the pageout daemon goes on with
//! others). Nothing else allocates: lookups and `forget` (which frees
//! blocks and empty `SwBlk`s) cannot fail.
//!
//! - `put_pages` takes a run of dirty, busy pages, allocates a run of
//!   contiguous blocks (the blist's cursor keeps consecutive page-outs
//!   consecutive), copies the pages into one buffer (a physically contiguous
//!   run of pages, which the disk reads where it is) and writes it with one
//!   request; when no such run can be had (memory is short, which is when
//!   page-outs matter most), it writes a page at a time from the pages
//!   themselves, and reads go the same way. The heap is no place for these
//!   buffers: its large blocks are not physically contiguous, and the disk
//!   would copy them through a bounce buffer, allocated again. A page's old block, if it had one, is freed when the new one
//!   is recorded. If the write fails the new blocks are freed and the pages
//!   keep their old state: dirty, resident, nothing lost.
//! - `has_page` answers with the contiguous blocks before and after the
//!   page, so that a fault reads them in the same request (read-ahead).
//! - `get_pages` reads each run of contiguous blocks with one request. A
//!   page read in keeps its block: it is clean, and its copy on swap is
//!   still good until the page is dirtied.
//! - `forget` frees the blocks of pages that were dirtied (rule 14: a
//!   dirtied swap-backed page gives up its slot) or left the object
//!   (truncation, `madvise(DONTNEED)`, the object's end).
//!
//! The pager holds its swap space (an `Arc`): its disk, its blocks and the
//! counters of what the pagers did. Page contents are reached through the
//! object's environment, for pages the caller holds exclusively busy; the
//! buffers of clustered transfers come from the same allocator.
//!
//! Locking: (W) the metadata lock, a plain spin lock (taken with
//! interrupts on, as the trie's node zone needs) and never held across
//! I/O; under it only the heap, the node zone and the swap space's own
//! lock (see space.rs). (C) set when the pager is made, constant after.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use vm::object::{Pager, PagerResult, VmObject};
use vm::page::Page;
use vm::phys::{AllocFlags, PhysMem};
use vm::radix::{Entry, InsertError, Leaf, Radix};
use vm::sync::Mutex;
use vm::zone::NodeZone;

use super::space::SwapSpace;
use crate::blist::Blist;
use crate::sync::Lock;

const PAGE: usize = vm::PAGE_SIZE;
/// Page indices per metadata block.
pub const CHUNK: u64 = 32;
/// No block.
const NONE: u32 = u32::MAX;

/// The "no block" mark of the metadata, for debuggers that check rule 14
/// (`vm::DebugConstant`); the chunk size is in the debug information.
#[used]
pub static DEBUG_CONSTANTS: [vm::DebugConstant; 1] = [("NONE", NONE as u64)];

/// Most pages read behind and ahead of a faulting page, when their blocks
/// are contiguous with its.
const BEHIND: u64 = 7;
const AHEAD: u64 = 31;

/// The swap blocks of the aligned run of [`CHUNK`] page indices from
/// `chunk * CHUNK` (FreeBSD's `struct swblk`). (M, through its trie.)
#[repr(C)]
pub struct SwBlk {
    /// The run's number: its first page index / CHUNK. (C)
    chunk: u64,
    /// The block of each index of the run, or [`NONE`].
    blocks: [u32; CHUNK as usize],
}

/// A `SwBlk` in the trie: owned by it, freed when removed.
#[derive(Clone, Copy)]
struct SwBlkRef(NonNull<SwBlk>);

// SAFETY: a SwBlkRef is only followed under the metadata lock of the pager
// whose trie holds it.
unsafe impl Send for SwBlkRef {}
// SAFETY: as for Send.
unsafe impl Sync for SwBlkRef {}

// SAFETY: a Box<SwBlk> is non-null and 8-aligned (low bit clear); `chunk`
// is set when the block is made and never changes.
unsafe impl Leaf for SwBlkRef {
    fn to_raw(self) -> usize {
        self.0.as_ptr() as usize
    }
    unsafe fn from_raw(raw: usize) -> Self {
        // SAFETY: `raw` came from `to_raw`, a non-null pointer.
        SwBlkRef(unsafe { NonNull::new_unchecked(raw as *mut SwBlk) })
    }
    fn key(self) -> u64 {
        // SAFETY: a live SwBlk of a trie (the trie asks only of its leaves).
        unsafe { (*self.0.as_ptr()).chunk }
    }
}

impl SwBlkRef {
    /// The block's slots.
    ///
    /// # Safety
    /// The block is in the trie behind the metadata lock, which the caller
    /// holds (the `&mut` of the trie it came from stands for it).
    unsafe fn slots<'a>(self) -> &'a mut [u32; CHUNK as usize] {
        // SAFETY: the caller's contract; nothing else reaches the block.
        unsafe { &mut (*self.0.as_ptr()).blocks }
    }
}

/// An object's swap metadata. (W)
type Meta = Radix<SwBlkRef>;

/// One object's swap pager, over the swap space `L` locks.
pub struct SwapPager<L: Lock<Blist>> {
    /// Where the pages go. (C)
    space: Arc<SwapSpace<L>>,
    meta: Mutex<Meta>,
}

impl<L: Lock<Blist>> SwapPager<L> {
    /// A pager with nothing paged out yet, over `space`, its metadata's
    /// trie nodes from `zone`.
    pub fn new(space: Arc<SwapSpace<L>>, zone: &'static NodeZone) -> Self {
        SwapPager { space, meta: Mutex::ranked(Radix::new(zone), &vm::witness::order::SWAP_META) }
    }

    /// Its swap space.
    pub fn space(&self) -> &Arc<SwapSpace<L>> {
        &self.space
    }

    /// The metadata it holds: `SwBlk`s, and bytes of them and of trie
    /// nodes together.
    pub fn metadata(&self) -> (usize, usize) {
        let meta = self.meta.lock();
        (meta.len(), meta.memory() + meta.len() * core::mem::size_of::<SwBlk>())
    }

    /// Frees the blocks of `[start, end)` ([`Pager::forget`]).
    fn free_range(&self, start: u64, end: u64) {
        let sw = &*self.space;
        if start >= end {
            return;
        }
        // One block of the metadata at a time, its swap blocks freed as it
        // is cleared: no allocation, so this cannot fail.
        let mut chunk = start / CHUNK;
        let last = (end - 1) / CHUNK;
        while chunk <= last {
            let next = self.with_meta(|m| {
                let blk = m.lookup_ge(chunk)?;
                let c = blk.key();
                if c > last {
                    return None;
                }
                // SAFETY: a block of the trie; the lock is held.
                let slots = unsafe { blk.slots() };
                for (k, b) in slots.iter_mut().enumerate() {
                    let pindex = c * CHUNK + k as u64;
                    if *b != NONE && start <= pindex && pindex < end {
                        sw.free(*b as u64, 1);
                        *b = NONE;
                    }
                }
                self.prune(m, c);
                Some(c)
            });
            match next.and_then(|c| c.checked_add(1)) {
                Some(c) => chunk = c,
                None => break,
            }
        }
    }

    fn with_meta<R>(&self, f: impl FnOnce(&mut Meta) -> R) -> R {
        f(&mut self.meta.lock())
    }

    /// The block of `pindex`.
    fn block(meta: &Meta, pindex: u64) -> Option<u64> {
        let blk = meta.lookup(pindex / CHUNK)?;
        // SAFETY: a block of the trie; the lock is held (`meta`).
        let b = unsafe { blk.slots() }[(pindex % CHUNK) as usize];
        (b != NONE).then_some(b as u64)
    }

    /// Makes sure `pindex` has a slot: its run's `SwBlk` exists. Fails when
    /// the block or a trie node cannot be allocated (nothing changes).
    fn reserve(&self, meta: &mut Meta, pindex: u64) -> Result<(), ()> {
        let chunk = pindex / CHUNK;
        let Entry::Vacant(v) = meta.entry(chunk) else { return Ok(()) };
        let blk = Box::try_new(SwBlk { chunk, blocks: [NONE; CHUNK as usize] }).map_err(|_| ())?;
        let blk = SwBlkRef(NonNull::from(Box::leak(blk)));
        match v.insert(blk) {
            Ok(()) => {
                self.space.stats.swblks.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(InsertError::NoMemory | InsertError::Exists(_)) => {
                // SAFETY: made above and never inserted: ours alone.
                drop(unsafe { Box::from_raw(blk.0.as_ptr()) });
                Err(())
            }
        }
    }

    /// Records `block` for `pindex`, whose slot [`SwapPager::reserve`]
    /// made; returns the block it had.
    fn set(meta: &mut Meta, pindex: u64, block: u64) -> Option<u64> {
        let blk = meta.lookup(pindex / CHUNK).expect("swap metadata: a slot not reserved");
        // SAFETY: a block of the trie; the lock is held.
        let slot = &mut unsafe { blk.slots() }[(pindex % CHUNK) as usize];
        let old = core::mem::replace(slot, block as u32);
        (old != NONE).then_some(old as u64)
    }

    /// Frees the `SwBlk` of `chunk` if it holds no block.
    fn prune(&self, meta: &mut Meta, chunk: u64) {
        let Some(blk) = meta.lookup(chunk) else { return };
        // SAFETY: a block of the trie; the lock is held.
        if unsafe { blk.slots() }.iter().all(|&b| b == NONE) {
            meta.remove(chunk);
            self.space.stats.swblks.fetch_sub(1, Ordering::Relaxed);
            // SAFETY: out of the trie now: ours alone.
            drop(unsafe { Box::from_raw(blk.0.as_ptr()) });
        }
    }
}

impl<L: Lock<Blist> + 'static> Pager for SwapPager<L> {
    fn has_page(&self, pindex: u64) -> Option<(u64, u64)> {
        self.with_meta(|m| {
            let b = Self::block(m, pindex)?;
            if !self.space.read_ahead() {
                return Some((0, 0));
            }
            let mut behind = 0;
            while behind < BEHIND.min(pindex).min(b) && Self::block(m, pindex - behind - 1) == Some(b - behind - 1) {
                behind += 1;
            }
            let mut ahead = 0;
            while ahead < AHEAD && Self::block(m, pindex + ahead + 1) == Some(b + ahead + 1) {
                ahead += 1;
            }
            Some((behind, ahead))
        })
    }

    fn held_from(&self, start: u64, end: u64) -> Option<(u64, u64)> {
        self.with_meta(|m| {
            // The first run with a block in range, then up to 64 indices
            // from the first block: at most three runs looked up.
            let first = m.range(start / CHUNK, end.div_ceil(CHUNK)).find_map(|blk| {
                let base = blk.key() * CHUNK;
                // SAFETY: a block of the trie; the lock is held (`m`).
                let slots = unsafe { blk.slots() };
                (0..CHUNK).map(|i| base + i).find(|&p| p >= start && p < end && slots[(p - base) as usize] != NONE)
            })?;
            let mask = (0..64u64)
                .take_while(|n| first + n < end)
                .filter(|n| Self::block(m, first + n).is_some())
                .fold(0u64, |mask, n| mask | 1 << n);
            Some((first, mask))
        })
    }

    fn block_of(&self, pindex: u64) -> Option<u64> {
        self.with_meta(|m| Self::block(m, pindex))
    }

    fn get_page(&self, object: &VmObject, page: &'static Page) -> PagerResult {
        self.get_pages(object, &[page], 0)
    }

    fn get_pages(&self, object: &VmObject, pages: &[&'static Page], req: usize) -> PagerResult {
        let pm = object.env().pm;
        let block_of = |i: usize| self.with_meta(|m| Self::block(m, pages[i].pindex()));
        let mut i = 0;
        while i < pages.len() {
            let Some(first) = block_of(i) else {
                i += 1;
                continue;
            };
            let mut n = 1;
            while i + n < pages.len() && block_of(i + n) == Some(first + n as u64) {
                n += 1;
            }
            if read_run(&self.space, pm, first, &pages[i..i + n]).is_err() {
                // What was not read stays invalid; the caller frees it (rule 6).
                if i <= req && req < i + n {
                    break;
                }
            }
            i += n;
        }
        if pages[req].all_valid() { PagerResult::Ok } else { PagerResult::Error }
    }

    fn put_pages(&self, object: &VmObject, pages: &[&'static Page]) -> usize {
        let (sw, pm) = (&*self.space, object.env().pm);
        // A slot for each page first: the run ends at the first page that
        // cannot have one (it stays dirty, in memory).
        let slotted = self.with_meta(|m| pages.iter().take_while(|p| self.reserve(m, p.pindex()).is_ok()).count());
        if slotted < pages.len() {
            sw.stats.no_meta.fetch_add(1, Ordering::Relaxed);
        }
        let mut done = 0;
        while done < slotted {
            let want = (slotted - done) as u64;
            let Some((first, got)) = sw.alloc(1, want) else {
                sw.stats.full.fetch_add(1, Ordering::Relaxed);
                break;
            };
            let run = &pages[done..done + got as usize];
            // The pages written, from the first: all or none of a run in one
            // request; a prefix when it went a page at a time.
            let written = write_run(sw, pm, first, run);
            if written < run.len() {
                sw.free(first + written as u64, got - written as u64);
            }
            self.with_meta(|m| {
                for (k, p) in run[..written].iter().enumerate() {
                    if let Some(old) = Self::set(m, p.pindex(), first + k as u64) {
                        sw.free(old, 1);
                    }
                }
            });
            done += written;
            if written < run.len() {
                break;
            }
        }
        if done < slotted {
            // Slots made for pages that were not written go again.
            self.with_meta(|m| {
                for p in &pages[done..slotted] {
                    self.prune(m, p.pindex() / CHUNK);
                }
            });
        }
        done
    }

    fn forget(&self, start: u64, end: u64) {
        self.free_range(start, end);
    }
}

impl<L: Lock<Blist>> Drop for SwapPager<L> {
    /// The object is gone: its blocks are free (terminate has usually
    /// forgotten them all already), and with them every `SwBlk`.
    fn drop(&mut self) {
        self.free_range(0, u64::MAX);
        debug_assert!(self.meta.lock().is_empty(), "swap metadata left after forget");
    }
}

/// A physically contiguous run of pages for one request (the disk reads
/// and writes it where it is: no bounce buffer, which would need memory
/// again), freed when dropped. Page-outs take it with `SYSTEM`: the pageout
/// daemon frees memory, so it may use the reserve (FreeBSD's pagedaemon
/// allocates so too).
struct RunBuffer<'a> {
    pm: &'a PhysMem,
    first: &'static Page,
    order: u8,
    bytes: &'static mut [u8],
}

impl<'a> RunBuffer<'a> {
    /// A buffer for `pages` pages, or None when memory is short (when
    /// page-outs matter most): the transfer then goes a page at a time
    /// from the pages themselves.
    fn new(pm: &'a PhysMem, pages: usize, flags: AllocFlags) -> Option<RunBuffer<'a>> {
        let order = pages.next_power_of_two().trailing_zeros() as u8;
        if order > vm::phys::MAX_ORDER {
            return None;
        }
        let first = pm.alloc_order(order, AllocFlags::UNMANAGED | flags)?;
        let Some(start) = pm.page_addr(first) else {
            pm.free_contig(first, 1 << order);
            return None;
        };
        // SAFETY: the run was just allocated for this buffer alone and the
        // direct map covers it; it is freed only when the buffer drops.
        let bytes = unsafe { core::slice::from_raw_parts_mut(start, pages * PAGE) };
        Some(RunBuffer { pm, first, order, bytes })
    }
}

impl Drop for RunBuffer<'_> {
    fn drop(&mut self) {
        self.pm.free_contig(self.first, 1 << self.order);
    }
}

/// Reads blocks `first..` into `pages` (one request, or one a page when no
/// buffer can be had) and marks them valid.
fn read_run<L: Lock<Blist>>(sw: &SwapSpace<L>, pm: &PhysMem, first: u64, pages: &[&'static Page]) -> Result<(), ()> {
    let fail = |e| log::warn!("swap: reading {} pages at block {first}: {e:?}", pages.len());
    let run = if pages.len() > 1 { RunBuffer::new(pm, pages.len(), AllocFlags::empty()) } else { None };
    if let Some(buf) = run {
        sw.stats.reads.fetch_add(1, Ordering::Relaxed);
        sw.read_pages(first, buf.bytes).map_err(fail)?;
        for (p, data) in pages.iter().zip(buf.bytes.chunks(PAGE)) {
            // The pages of a page-in are exclusively busy.
            pm.with_contents_mut(p, |dst| dst.copy_from_slice(data)).ok_or(())?;
        }
    } else {
        if pages.len() > 1 {
            sw.stats.unbuffered.fetch_add(1, Ordering::Relaxed);
        }
        for (k, p) in pages.iter().enumerate() {
            sw.stats.reads.fetch_add(1, Ordering::Relaxed);
            pm.with_contents_mut(p, |dst| sw.read_pages(first + k as u64, dst)).ok_or(())?.map_err(fail)?;
        }
    }
    for p in pages {
        p.set_all_valid();
    }
    sw.stats.pages_in.fetch_add(pages.len() as u64, Ordering::Relaxed);
    Ok(())
}

/// Writes `pages` to blocks `first..` (one request, or one a page when no
/// buffer can be had); returns how many were written, from the first: all
/// or none in one request, the pages up to the first failure one a page.
fn write_run<L: Lock<Blist>>(sw: &SwapSpace<L>, pm: &PhysMem, first: u64, pages: &[&'static Page]) -> usize {
    let fail = |e| log::warn!("swap: writing {} pages at block {first}: {e:?}", pages.len());
    let run = if pages.len() > 1 { RunBuffer::new(pm, pages.len(), AllocFlags::SYSTEM) } else { None };
    let written = if let Some(buf) = run {
        let mut copied = true;
        for (p, dst) in pages.iter().zip(buf.bytes.chunks_mut(PAGE)) {
            // The pages of a page-out are exclusively busy.
            copied &= pm.with_contents(p, |src| dst.copy_from_slice(src)).is_some();
        }
        sw.stats.writes.fetch_add(1, Ordering::Relaxed);
        if copied && sw.write_pages(first, buf.bytes).map_err(fail).is_ok() { pages.len() } else { 0 }
    } else {
        if pages.len() > 1 {
            sw.stats.unbuffered.fetch_add(1, Ordering::Relaxed);
        }
        let one = |k: usize, p: &'static Page| {
            sw.stats.writes.fetch_add(1, Ordering::Relaxed);
            pm.with_contents(p, |src| sw.write_pages(first + k as u64, src).map_err(fail).is_ok()).unwrap_or(false)
        };
        pages.iter().enumerate().take_while(|&(k, p)| one(k, p)).count()
    };
    sw.stats.pages_out.fetch_add(written as u64, Ordering::Relaxed);
    written
}
