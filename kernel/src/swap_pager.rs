//! The swap pager: the pager of anonymous memory that has been paged out
//! (FreeBSD's `swap_pager.c`, with one swap device).
//!
//! An anonymous object gets one at its first page-out (the pageout daemon
//! asks [`new_pager`]) and becomes a swap object. The pager keeps the
//! object's swap metadata: for each paged-out page index, the swap block
//! holding its data, in chunks of [`CHUNK`] indices (FreeBSD's `swblk`).
//!
//! - `put_pages` takes a run of dirty, busy pages, allocates a run of
//!   contiguous blocks (the blist's cursor keeps consecutive page-outs
//!   consecutive), copies the pages into one buffer and writes it with one
//!   request. A page's old block, if it had one, is freed when the new one
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
//! Locking: (M) the metadata lock, a spin lock taken with interrupts off
//! and never held across I/O; the swap space has its own (see swap.rs).

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spin::Mutex;
use vm::object::{Pager, PagerResult, VmObject};
use vm::page::Page;
use x86_64::instructions::interrupts::without_interrupts;

use crate::swap::{SwapSpace, swap};

const PAGE: usize = 4096;
/// Page indices per metadata chunk.
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

/// Read-ahead on (the benchmark turns it off to compare). (A)
pub static READ_AHEAD: AtomicBool = AtomicBool::new(true);

/// Pages written out and read in, and the requests that carried them. (A)
pub static PAGES_OUT: AtomicU64 = AtomicU64::new(0);
pub static PAGES_IN: AtomicU64 = AtomicU64::new(0);
pub static WRITES: AtomicU64 = AtomicU64::new(0);
pub static READS: AtomicU64 = AtomicU64::new(0);
/// Page-outs that found no swap block free. (A)
pub static FULL: AtomicU64 = AtomicU64::new(0);

/// One object's swap pager.
pub struct SwapPager {
    /// Chunk number (index / CHUNK) → the block of each index in it. (M)
    meta: Mutex<BTreeMap<u64, [u32; CHUNK as usize]>>,
}

/// A swap pager for an anonymous object's first page-out, or `None` when
/// there is no swap space.
pub fn new_pager() -> Option<Arc<dyn Pager>> {
    swap()?;
    let p: Arc<dyn Pager> = Arc::try_new(SwapPager { meta: Mutex::new(BTreeMap::new()) }).ok()?;
    Some(p)
}

impl SwapPager {
    fn with_meta<R>(&self, f: impl FnOnce(&mut BTreeMap<u64, [u32; CHUNK as usize]>) -> R) -> R {
        without_interrupts(|| f(&mut self.meta.lock()))
    }

    /// The block of `pindex`.
    fn block(meta: &BTreeMap<u64, [u32; CHUNK as usize]>, pindex: u64) -> Option<u64> {
        let b = meta.get(&(pindex / CHUNK))?[(pindex % CHUNK) as usize];
        (b != NONE).then_some(b as u64)
    }

    /// Records `block` for `pindex`; returns the block it had.
    fn set(meta: &mut BTreeMap<u64, [u32; CHUNK as usize]>, pindex: u64, block: u64) -> Option<u64> {
        let chunk = meta.entry(pindex / CHUNK).or_insert([NONE; CHUNK as usize]);
        let old = core::mem::replace(&mut chunk[(pindex % CHUNK) as usize], block as u32);
        (old != NONE).then_some(old as u64)
    }

}

/// The bytes of `page`.
fn page_bytes(page: &'static Page) -> Option<&'static mut [u8]> {
    let p = vm::global().page_addr(page)?;
    // SAFETY: the caller holds the page exclusively busy for the transfer;
    // the direct map covers it.
    Some(unsafe { core::slice::from_raw_parts_mut(p, PAGE) })
}

impl Pager for SwapPager {
    fn name(&self) -> &'static str {
        "swap"
    }

    fn has_page(&self, pindex: u64) -> Option<(u64, u64)> {
        self.with_meta(|m| {
            let b = Self::block(m, pindex)?;
            if !READ_AHEAD.load(Ordering::Relaxed) {
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

    fn get_page(&self, object: &VmObject, page: &'static Page) -> PagerResult {
        self.get_pages(object, &[page], 0)
    }

    fn get_pages(&self, _object: &VmObject, pages: &[&'static Page], req: usize) -> PagerResult {
        let Some(sw) = swap() else { return PagerResult::Error };
        let blocks: Vec<Option<u64>> = self.with_meta(|m| pages.iter().map(|p| Self::block(m, p.pindex())).collect());
        let mut i = 0;
        while i < pages.len() {
            let Some(first) = blocks[i] else {
                i += 1;
                continue;
            };
            let mut n = 1;
            while i + n < pages.len() && blocks[i + n] == Some(first + n as u64) {
                n += 1;
            }
            if read_run(sw, first, &pages[i..i + n]).is_err() {
                // What was not read stays invalid; the caller frees it (rule 6).
                if i <= req && req < i + n {
                    break;
                }
            }
            i += n;
        }
        if pages[req].all_valid() { PagerResult::Ok } else { PagerResult::Error }
    }

    fn put_pages(&self, _object: &VmObject, pages: &[&'static Page]) -> usize {
        let Some(sw) = swap() else { return 0 };
        let mut done = 0;
        while done < pages.len() {
            let want = (pages.len() - done) as u64;
            let Some((first, got)) = sw.alloc(1, want) else {
                FULL.fetch_add(1, Ordering::Relaxed);
                break;
            };
            let run = &pages[done..done + got as usize];
            if write_run(sw, first, run).is_err() {
                sw.free(first, got);
                break;
            }
            let old: Vec<u64> = self.with_meta(|m| {
                run.iter().enumerate().filter_map(|(k, p)| Self::set(m, p.pindex(), first + k as u64)).collect()
            });
            for b in old {
                sw.free(b, 1);
            }
            done += got as usize;
        }
        done
    }

    fn forget(&self, start: u64, end: u64) {
        let Some(sw) = swap() else { return };
        let freed: Vec<u64> = self.with_meta(|m| {
            let mut freed = Vec::new();
            let mut empty = Vec::new();
            for (&c, chunk) in m.range_mut(start / CHUNK..=(end.saturating_sub(1)) / CHUNK) {
                for (k, b) in chunk.iter_mut().enumerate() {
                    let pindex = c * CHUNK + k as u64;
                    if *b != NONE && start <= pindex && pindex < end {
                        freed.push(*b as u64);
                        *b = NONE;
                    }
                }
                if chunk.iter().all(|&b| b == NONE) {
                    empty.push(c);
                }
            }
            for c in empty {
                m.remove(&c);
            }
            freed
        });
        for b in freed {
            sw.free(b, 1);
        }
    }
}

impl Drop for SwapPager {
    /// The object is gone: its blocks are free (terminate has usually
    /// forgotten them all already).
    fn drop(&mut self) {
        self.forget(0, u64::MAX);
    }
}

/// Reads blocks `first..` into `pages` (one request) and marks them valid.
fn read_run(sw: &SwapSpace, first: u64, pages: &[&'static Page]) -> Result<(), ()> {
    let mut buf: Vec<u8> = Vec::new();
    buf.try_reserve_exact(pages.len() * PAGE).map_err(|_| ())?;
    buf.resize(pages.len() * PAGE, 0);
    READS.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = sw.read_pages(first, &mut buf) {
        log::warn!("swap: reading {} pages at block {first}: {e:?}", pages.len());
        return Err(());
    }
    for (p, data) in pages.iter().zip(buf.chunks(PAGE)) {
        let dst = page_bytes(p).ok_or(())?;
        dst.copy_from_slice(data);
        p.set_all_valid();
    }
    PAGES_IN.fetch_add(pages.len() as u64, Ordering::Relaxed);
    Ok(())
}

/// Writes `pages` to blocks `first..` with one request.
fn write_run(sw: &SwapSpace, first: u64, pages: &[&'static Page]) -> Result<(), ()> {
    let mut buf: Vec<u8> = Vec::new();
    buf.try_reserve_exact(pages.len() * PAGE).map_err(|_| ())?;
    for p in pages {
        buf.extend_from_slice(page_bytes(p).ok_or(())?);
    }
    WRITES.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = sw.write_pages(first, &buf) {
        log::warn!("swap: writing {} pages at block {first}: {e:?}", pages.len());
        return Err(());
    }
    PAGES_OUT.fetch_add(pages.len() as u64, Ordering::Relaxed);
    Ok(())
}
