//! PV entries come in chunks: pages of entries owned by one pmap, handed
//! out and taken back under that pmap's lock (FreeBSD amd64's
//! `pv_chunk`).
//!
//! Every mapping a pmap enters or removes is done under its lock, and the
//! PV entry of a mapping belongs to the mapping's pmap; so the entries can
//! come from the pmap's own pages with no lock of their own. A global zone
//! of entries would be one more lock that every fault on every CPU takes.
//!
//! ```text
//!  chunk (one page)
//!  +--------+-------+------------+-------------------------------------+
//!  | free   | nfree | next, prev | PER_CHUNK entries (Pv, 24 bytes)    |
//!  | bitmap |       | (partial)  |                                     |
//!  +--------+-------+------------+-------------------------------------+
//! ```
//!
//! The chunk of an entry is the page it lies in. A pmap's chunks that have
//! a free entry are on its list ([`Chunks`]); a full chunk leaves the list
//! and comes back with its first free entry; an empty chunk's page goes
//! back to the allocator at once (an unmapped range gives its memory back,
//! as the page tables do).

use core::mem::{MaybeUninit, size_of};
use core::ptr;

use vm::PAGE_SIZE;
use vm::phys::AllocFlags;
use vm::pmap::PmapError;

use super::{Pv, X86Pmap, g};
use crate::arch::direct_map::phys_to_virt;

/// Bits in a chunk's free bitmap.
const WORDS: usize = 3;
/// Entries per chunk: as many as fit after the header.
const PER_CHUNK: usize = (PAGE_SIZE - size_of::<Header>()) / size_of::<Pv>();
const _: () = assert!(PER_CHUNK <= WORDS * 64 && size_of::<Chunk>() <= PAGE_SIZE);

#[repr(C)]
struct Header {
    /// Bit i set: entry i is free.
    free: [u64; WORDS],
    nfree: usize,
    /// The owner's list of chunks with a free entry (null-ended).
    next: *mut Chunk,
    prev: *mut Chunk,
}

#[repr(C)]
struct Chunk {
    h: Header,
    entries: [MaybeUninit<Pv>; PER_CHUNK],
}

/// A pmap's chunks with a free entry. (P: the pmap lock, which this is
/// the data of.)
pub(super) struct Chunks {
    partial: *mut Chunk,
    /// Chunks the pmap owns, full ones included.
    count: usize,
}

// SAFETY: the chunks are the pmap's pages, reached only under its lock.
unsafe impl Send for Chunks {}

impl Chunks {
    pub(super) const fn new() -> Chunks {
        Chunks { partial: ptr::null_mut(), count: 0 }
    }

    /// Chunks owned (for the debugger and the teardown check).
    pub(super) fn count(&self) -> usize {
        self.count
    }

    /// A new PV entry for `(pmap, leaf)`, from a chunk with room or a new
    /// one.
    pub(super) fn alloc(&mut self, pmap: &X86Pmap, leaf: u64) -> Result<*mut Pv, PmapError> {
        // The fail point fails any entry's allocation, not only a new
        // chunk's: every mapping's way out of a failed `enter` is tried.
        if vm::failpoint::PV_ALLOC.should_fail() {
            return Err(PmapError::NoMemory);
        }
        if self.partial.is_null() {
            self.grow()?;
        }
        let c = self.partial;
        // SAFETY: a listed chunk is one of ours, alive, with a free entry.
        unsafe {
            let h = &mut (*c).h;
            let w = h.free.iter().position(|&w| w != 0).expect("a listed chunk has a free entry");
            let bit = h.free[w].trailing_zeros() as usize;
            h.free[w] &= !(1 << bit);
            h.nfree -= 1;
            if h.nfree == 0 {
                self.unlink(c);
            }
            let pv = (*c).entries[w * 64 + bit].as_mut_ptr();
            pv.write(Pv { next: ptr::null_mut(), pmap, leaf });
            Ok(pv)
        }
    }

    /// Gives back an entry that [`Chunks::alloc`] of this pmap handed out
    /// and that is no longer listed.
    ///
    /// # Safety
    ///
    /// `pv` came from this `Chunks` and is not used again.
    pub(super) unsafe fn free(&mut self, pv: *mut Pv) {
        let c = (pv as usize & !(PAGE_SIZE - 1)) as *mut Chunk;
        // SAFETY: the entry lies in one of our chunks (the caller's word),
        // which is alive while it has an entry in use.
        unsafe {
            let i = (pv as usize - (*c).entries.as_ptr() as usize) / size_of::<Pv>();
            let h = &mut (*c).h;
            debug_assert!(h.free[i / 64] & (1 << (i % 64)) == 0, "PV entry {pv:p} freed twice");
            h.free[i / 64] |= 1 << (i % 64);
            h.nfree += 1;
            if h.nfree == 1 {
                self.push(c);
            }
            if h.nfree == PER_CHUNK {
                self.unlink(c);
                self.count -= 1;
                let pm = g().pm;
                let phys = c as u64 - phys_to_virt(0);
                pm.free(pm.page_of(phys).expect("PV chunk not in the page array"));
            }
        }
    }

    /// A fresh chunk on the list, every entry free.
    fn grow(&mut self) -> Result<(), PmapError> {
        let pm = g().pm;
        let page = pm.alloc(AllocFlags::UNMANAGED).ok_or(PmapError::NoMemory)?;
        let c = phys_to_virt(page.phys()) as *mut Chunk;
        let mut free = [0u64; WORDS];
        for (w, word) in free.iter_mut().enumerate() {
            let bits = PER_CHUNK.saturating_sub(w * 64).min(64);
            *word = if bits == 64 { u64::MAX } else { (1 << bits) - 1 };
        }
        // SAFETY: a page of our own, through the direct map; the entries
        // stay uninitialized until handed out.
        unsafe { (&raw mut (*c).h).write(Header { free, nfree: PER_CHUNK, next: ptr::null_mut(), prev: ptr::null_mut() }) };
        self.push(c);
        self.count += 1;
        Ok(())
    }

    fn push(&mut self, c: *mut Chunk) {
        // SAFETY: `c` and the list's chunks are ours and alive.
        unsafe {
            (*c).h.prev = ptr::null_mut();
            (*c).h.next = self.partial;
            if !self.partial.is_null() {
                (*self.partial).h.prev = c;
            }
        }
        self.partial = c;
    }

    fn unlink(&mut self, c: *mut Chunk) {
        // SAFETY: `c` is on the list; its neighbours are ours and alive.
        unsafe {
            let (next, prev) = ((*c).h.next, (*c).h.prev);
            if prev.is_null() {
                self.partial = next;
            } else {
                (*prev).h.next = next;
            }
            if !next.is_null() {
                (*next).h.prev = prev;
            }
        }
    }
}
