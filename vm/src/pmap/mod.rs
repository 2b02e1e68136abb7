//! The machine-dependent layer as the VM sees it: [`Pmap`], one per address
//! space, and [`PageMappings`], the machine-wide view of every mapping of a
//! page (FreeBSD's PV lists: `pmap_remove_all`, `pmap_is_modified`, ...).
//!
//! The kernel implements both over x86_64 4-level paging; [`soft`] implements
//! them in software for host tests (and for kernel tests that need an address
//! space nobody runs in).
//!
//! Rules the implementations keep:
//! - only valid pages are entered (rule 2; asserted);
//! - `enter` may fail for want of a page-table page (rule 12): the fault
//!   handler then drops everything, waits for memory and retries;
//! - page-table pages are unmanaged pages from the allocator, freed when empty
//!   (rule 11);
//! - a wired mapping is wired in the map entry and in the page's wire count;
//!   the page-table bit only mirrors it, so `remove_all` can drop the mapping
//!   without breaking the wiring (rule 10): the page stays wired and resident
//!   and a fault maps it again. The kernel itself asks it only of unwired
//!   pages (wired ones are passed over, or orphaned): in a range locked on
//!   fault, a page mapped again would take a second wiring;
//! - every change to live translations returns a [`TlbFlush`] that the caller
//!   must consume: a forgotten flush does not compile silently.

use bitflags::bitflags;

use crate::page::Page;

pub mod soft;

bitflags! {
    /// Access rights of a mapping.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Prot: u8 {
        const READ = 1 << 0;
        const WRITE = 1 << 1;
        const EXEC = 1 << 2;
    }
}

/// The protection bits, for debuggers ([`crate::DebugConstant`]).
#[used]
pub static DEBUG_CONSTANTS: [crate::DebugConstant; 3] = [
    ("Prot::READ", Prot::READ.bits() as u64),
    ("Prot::WRITE", Prot::WRITE.bits() as u64),
    ("Prot::EXEC", Prot::EXEC.bits() as u64),
];

impl Prot {
    pub const RW: Prot = Prot::READ.union(Prot::WRITE);
    pub const ALL: Prot = Prot::READ.union(Prot::WRITE).union(Prot::EXEC);
}

/// Why `enter` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PmapError {
    /// No page could be had for a page table (rule 12): wait and retry.
    NoMemory,
}

/// A TLB invalidation owed after changing translations: `flush` it (or, for
/// an address space not loaded anywhere, `skip` it, saying why).
///
/// It names the address space (`space`, the pmap's own word for it) and
/// one range covering every change made since it was started, so that a
/// batch of changes costs one invalidation: one IPI per CPU that has the
/// space loaded, or a whole-TLB flush past a threshold (the pmap's choice,
/// in its `flusher`). The caller flushes before anything may reuse what
/// the old translations pointed at: the frames they named, or the page
/// tables they were read through.
#[must_use = "stale translations stay in the TLB until this is flushed"]
#[derive(Debug)]
pub struct TlbFlush {
    range: Option<(u64, u64)>,
    space: usize,
    flusher: fn(usize, u64, u64),
}

fn no_flush(_: usize, _: u64, _: u64) {}

impl TlbFlush {
    /// Nothing to invalidate.
    pub fn none() -> TlbFlush {
        TlbFlush { range: None, space: 0, flusher: no_flush }
    }

    /// `[start, end)` of address space `space` must be invalidated by
    /// `flusher(space, start, end)`.
    pub fn range(space: usize, start: u64, end: u64, flusher: fn(usize, u64, u64)) -> TlbFlush {
        TlbFlush { range: (start < end).then_some((start, end)), space, flusher }
    }

    /// One flush covering both (of one address space).
    pub fn merge(mut self, mut other: TlbFlush) -> TlbFlush {
        let (space, flusher) = if self.range.is_some() { (self.space, self.flusher) } else { (other.space, other.flusher) };
        let range = match (self.range.take(), other.range.take()) {
            (Some((a, b)), Some((c, d))) => {
                debug_assert!(self.space == other.space, "TLB flushes of two address spaces merged");
                Some((a.min(c), b.max(d)))
            }
            (r, None) | (None, r) => r,
        };
        TlbFlush { range, space, flusher }
    }

    pub fn is_empty(&self) -> bool {
        self.range.is_none()
    }

    /// Invalidates the range.
    pub fn flush(mut self) {
        if let Some((s, e)) = self.range.take() {
            (self.flusher)(self.space, s, e);
        }
    }

    /// Drops the obligation: for an address space that is not loaded on any
    /// CPU, whose translations cannot be cached.
    pub fn skip_not_loaded(mut self) {
        self.range = None;
    }
}

impl Drop for TlbFlush {
    fn drop(&mut self) {
        debug_assert!(self.range.is_none(), "a TLB flush of {:x?} was dropped, not done", self.range);
    }
}

/// One address space's page tables.
pub trait Pmap: Send + Sync {
    /// Maps `va` to `page` with `prot`. Replaces an existing mapping of `va`.
    /// `wired` marks the mapping wired (the caller holds a wiring of the page
    /// for it). Fails with `NoMemory` when a page table cannot be allocated.
    fn enter(&self, va: u64, page: &'static Page, prot: Prot, wired: bool) -> Result<TlbFlush, PmapError>;
    /// [`Pmap::enter`] for the page of a fault whose access was `access`
    /// (within `prot`): the mapping may be entered already marked accessed,
    /// and modified for a write, as the access will do that anyway when it
    /// is retried (FreeBSD's `pmap_enter` takes the access type for this).
    /// A write's caller has marked the page dirty first. The default is
    /// plain `enter`.
    fn enter_accessed(&self, va: u64, page: &'static Page, prot: Prot, access: Prot, wired: bool) -> Result<TlbFlush, PmapError> {
        let _ = access;
        self.enter(va, page, prot, wired)
    }
    /// Maps `va` to `page` (unwired) only if nothing is mapped at `va`, and
    /// says whether it did (FreeBSD's `pmap_enter_quick`, for prefaulting).
    /// It never replaces a translation, so there is no TLB flush to do.
    fn enter_quick(&self, va: u64, page: &'static Page, prot: Prot) -> Result<bool, PmapError> {
        if self.extract(va).is_some() {
            return Ok(false);
        }
        self.enter(va, page, prot, false).map(|flush| {
            debug_assert!(flush.is_empty(), "nothing was mapped, yet a flush is owed");
            flush.skip_not_loaded();
            true
        })
    }
    /// Removes every mapping in `[start, end)`.
    fn remove(&self, start: u64, end: u64) -> TlbFlush;
    /// Reduces the access of every mapping in `[start, end)` to at most `prot`.
    fn protect(&self, start: u64, end: u64, prot: Prot) -> TlbFlush;
    /// The physical address and access of `va`'s mapping.
    fn extract(&self, va: u64) -> Option<(u64, Prot)>;
    /// Clears the wired mark of `va`'s mapping (the caller drops the wiring).
    fn unwire(&self, va: u64);
    /// True if `va`'s mapping is wired (holds one of its page's wirings).
    fn wired_at(&self, va: u64) -> bool;
    /// Takes the wiring left at `va` by [`PageMappings::orphan_wired`]: the
    /// physical address of the page whose wiring the caller now drops.
    fn take_orphan(&self, va: u64) -> Option<u64>;
    /// The lowest page address in `[start, end)` with a mapping or a wiring
    /// left by [`PageMappings::orphan_wired`]: walks that must visit every
    /// such page of a range go by these, whatever the range's length.
    fn next_used(&self, start: u64, end: u64) -> Option<u64>;
    /// Moves every mapping of `[from, from + len)` to the same place in
    /// `[to, to + len)`, which has none (`mremap`): the entries themselves
    /// move, with their access, wired marks, modified and referenced bits
    /// and the wirings left by [`PageMappings::orphan_wired`]; no page is
    /// copied and no page's mapping count changes. The ranges do not
    /// overlap. The page tables the destination needs are found or made
    /// before anything moves: `NoMemory` leaves every mapping where it was.
    /// The returned flush covers the old range.
    fn move_range(&self, from: u64, to: u64, len: u64) -> Result<TlbFlush, PmapError>;
    /// Number of wired mappings (for tests and statistics).
    fn wired_count(&self) -> usize;
    /// Mappings of managed pages (the resident set).
    fn resident_count(&self) -> usize {
        0
    }
}

/// Every mapping of a page, across address spaces (PV entries).
pub trait PageMappings: Sync {
    /// Removes every mapping of `page`, wired ones included (rule 10: the
    /// wiring lives in the map entry and the page's wire count).
    fn remove_all(&self, page: &'static Page);
    /// Write-protects every mapping of `page` (before copy-on-write, or
    /// before writing the page out).
    fn write_protect_all(&self, page: &'static Page);
    /// True if any mapping of `page` has been written through.
    fn is_modified(&self, page: &'static Page) -> bool;
    /// Clears the modified bits of every mapping of `page`.
    fn clear_modify(&self, page: &'static Page);
    /// Counts and clears the referenced (accessed) bits of `page`'s mappings.
    fn ts_referenced(&self, page: &'static Page) -> u32;
    /// Removes every mapping of `page` (which is leaving its object), but a
    /// wired one leaves a mark at its address that keeps its wiring: the
    /// map entry's unwire finds it there ([`Pmap::take_orphan`]) and drops
    /// the wiring then, which frees the page (rule 5). The address faults
    /// like an unmapped one meanwhile.
    fn orphan_wired(&self, page: &'static Page);
}

/// For objects whose pages are never mapped (tests of objects alone).
pub struct NoMappings;

impl PageMappings for NoMappings {
    fn remove_all(&self, page: &'static Page) {
        assert!(page.mapping_count() == 0, "page {:#x} is mapped but its machine says nothing is", page.phys());
    }
    fn orphan_wired(&self, page: &'static Page) {
        self.remove_all(page);
    }
    fn write_protect_all(&self, _: &'static Page) {}
    fn is_modified(&self, _: &'static Page) -> bool {
        false
    }
    fn clear_modify(&self, _: &'static Page) {}
    fn ts_referenced(&self, _: &'static Page) -> u32 {
        0
    }
}

/// The machine-wide mappings view of a [`NoMappings`] machine.
pub static NO_MAPPINGS: NoMappings = NoMappings;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_constants_name_every_protection() {
        crate::tests::assert_names_every_flag::<Prot>("Prot", &DEBUG_CONSTANTS);
    }
}
