//! Address maps (FreeBSD's `vm_map`): an ordered set of entries, each a range
//! of virtual addresses backed by an object from some page index on.
//!
//! An entry carries its protection and maximum protection (`protect` never
//! goes above the maximum), what a fork does with it (`Inherit`), how many
//! times it is wired, and, for private mappings, copy-on-write state: a
//! private entry's first write fault gives it a shadow object of its own
//! (`needs_copy` until then), so writes never reach the object it maps.
//!
//! Anonymous entries get their object at the first fault. Entries are split
//! ("clipped") at the ends of a range before the range is changed.
//!
//! Limits: a map holds at most [`VmMap::max_entries`] entries (Linux's
//! `vm.max_map_count`, [`DEFAULT_MAX_ENTRIES`] by default); a map, protect,
//! unmap, wire or discard that would need more (its clipping included)
//! fails with `TooManyEntries` and changes nothing. Each entry the tree takes may need a node
//! from the kernel heap, whose allocation cannot report failure: the map asks
//! the heap for room first ([`crate::set_heap_room`]) and fails the same way.
//!
//! Free space: `find_space_from` keeps a hint, a range and the longest free
//! run within it (Linux's old `free_area_cache` and `cached_hole_size`): a
//! search that starts in the range for more than that starts at its end, so
//! the usual run of `mmap`s without an address visits a few entries, not all
//! of them, and so does a run of requests too long for the holes left
//! below. Only an unmap can free more of the range, and it ends the range
//! where it starts.
//!
//! Locking: the map is used under its owner's lock, a [`MapLock`]; it is
//! first in the lock order (map ⇒ object ⇒ page busy). `timestamp` counts
//! changes, so a fault that dropped the lock can tell whether its lookup
//! still holds.
//!
//! The map lock is a spin lock, and its holder must not sleep. But an entry
//! that leaves the map (unmap, discard, two entries joined) gives up its
//! object reference, and the last one terminates the object, which waits
//! for busy pages: it may sleep. So a map under a `MapLock` only puts those
//! objects on a list, and its guard ([`MapGuard`]) lets go of the lock and
//! then drops them, as FreeBSD's `vm_map_delete` defers entries to
//! `vm_map_process_deferred`. Room on the list is reserved before an
//! operation changes anything: a failed allocation fails the operation
//! (`NoMemory`) and changes nothing. A bare `VmMap` (host tests; teardown,
//! with no lock held) drops them at once.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::Cell;

use crate::PAGE_SIZE;
use crate::failpoint::FailPoint;
use crate::object::{ObjectKind, VmEnv, VmObject};
use crate::pmap::{Pmap, Prot};

const PAGE: u64 = PAGE_SIZE as u64;

/// Entries a map may hold unless told otherwise (Linux's default
/// `vm.max_map_count`).
pub const DEFAULT_MAX_ENTRIES: usize = 65_530;

/// Heap room asked for before entries go into the tree: per operation, a
/// split of every level of the B-tree (a leaf of 11 keys and entries is
/// ~700 bytes, an internal node ~800; four levels hold millions), and per
/// entry, its share of half-full leaves and of the nodes above them.
const TREE_SPLIT_BYTES: usize = 4096;
const ENTRY_HEAP_BYTES: usize = 256;
// The figures above assume entries of at most 64 bytes.
const _: () = assert!(core::mem::size_of::<MapEntry>() <= 64);

/// What a fork does with an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inherit {
    /// Parent and child map the same object.
    Share,
    /// The child gets a copy-on-write copy.
    Copy,
    /// The child does not get the range.
    None,
}

/// One mapped range.
#[derive(Clone)]
///
/// Every field is the map lock's (M): entries live inside their `VmMap`.
pub struct MapEntry {
    /// The range `[start, end)`, page aligned. (M)
    pub start: u64,
    pub end: u64,
    /// Protection now, and the most it may be raised to. (M)
    pub prot: Prot,
    pub max_prot: Prot,
    /// What a fork does with the range. (M)
    pub inherit: Inherit,
    /// Times the range is wired (mlock); its pages hold one wiring while > 0. (M)
    pub wired_count: u32,
    /// A wired range whose pages are wired as they are faulted in, not all
    /// at once (`mlock2(MLOCK_ONFAULT)`): every page it maps is wired, but
    /// it may map few. Meaningless while `wired_count` is 0. (M)
    pub lock_on_fault: bool,
    /// The backing object; `None` for anonymous memory not yet touched. (M;
    /// the object's own state is its lock's, (O))
    pub object: Option<Arc<VmObject>>,
    /// Page index in `object` of `start`. (M)
    pub offset: u64,
    /// Private mapping: writes go to a shadow object, never to `object`'s
    /// backing store. (M)
    pub cow: bool,
    /// Private mapping whose shadow has not been made yet. (M)
    pub needs_copy: bool,
    /// The bottom of a stack: a fault just below grows it (`stack.rs`). (M)
    pub grows_down: bool,
}

impl MapEntry {
    pub fn pages(&self) -> u64 {
        (self.end - self.start) / PAGE
    }
}

/// Why a map operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// No free range of that size.
    NoSpace,
    /// The map would pass its limit of entries, or the heap could not hold
    /// another: nothing changed. (Linux's ENOMEM for both.)
    TooManyEntries,
    /// Unaligned, empty, or outside the map.
    InvalidRange,
    /// A fixed mapping overlaps an existing one.
    Overlap,
    /// No entry at the address (or a hole in the range).
    NoEntry,
    /// The kernel heap could not hold a new object: wait and retry.
    NoMemory,
    /// The access or new protection exceeds what the entry allows.
    Protection,
}

/// What a fault needs to know about an address (from [`VmMap::lookup`]).
#[derive(Clone)]
pub struct Lookup {
    /// The first object of the chain to search (the entry's object or shadow).
    pub object: Arc<VmObject>,
    pub pindex: u64,
    /// Protection to map the page with.
    pub prot: Prot,
    /// Private mapping: a page found below the first object must be copied
    /// before it is written.
    pub cow: bool,
    pub wired: bool,
    /// The entry is wired page by page as it is faulted in (`MapEntry::lock_on_fault`).
    pub lock_on_fault: bool,
    /// The entry's bounds (for prefaulting).
    pub entry_start: u64,
    pub entry_end: u64,
    pub timestamp: u64,
}

/// An address map. Every field is under the owner's lock (the map is used
/// through `&mut` or its `Mutex`); the `Cell`s are changed by searches that
/// hold only `&self` under that same lock.
///
/// The whole map is behind its owner's map lock (M): a `VmMap` is reached
/// only through the `Mutex` of its address space, and every field is (M)
/// unless said otherwise.
pub struct VmMap {
    /// The entries by start address. (M)
    entries: BTreeMap<u64, MapEntry>,
    /// The range the map covers. (C)
    min: u64,
    max: u64,
    /// The machine's mappings of this map. (C; the pmap locks itself)
    pmap: Arc<dyn Pmap>,
    /// The page allocator and the rest of the VM's environment. (C)
    env: VmEnv,
    /// Bumped by every change to the entries. (M)
    pub timestamp: u64,
    /// The most entries the map may hold. (M)
    max_entries: usize,
    /// Bytes mapped: the sum of the entries' lengths (RLIMIT_AS). (M)
    size: u64,
    /// `(lo, hi, hole)`: no free run in `[lo, hi)` is longer than `hole`
    /// bytes (see the module docs). (M; a `Cell` so that searches, which
    /// take `&self`, can narrow it)
    hint: Cell<(u64, u64, u64)>,
    /// Entries looked at by free-space searches, in all (a statistic). (M)
    search_visits: Cell<u64>,
    /// Fails the entry allocations it is told to (tests). (C)
    entry_alloc: &'static FailPoint,
    /// The top of the stack, if one was mapped (`map_stack`). (M)
    stack_top: Option<u64>,
    /// What the owner allows the stack and the map to grow to. (M)
    limits: MapLimits,
    /// Objects whose reference the map gave up, for the guard to drop
    /// once the lock is let go (see the module docs). (M)
    deferred: Deferred,
}

fn aligned(x: u64) -> bool {
    x.is_multiple_of(PAGE)
}

impl VmMap {
    /// An empty map of `[min, max)` over `pmap`.
    pub fn new(min: u64, max: u64, pmap: Arc<dyn Pmap>, env: VmEnv) -> VmMap {
        VmMap {
            entries: BTreeMap::new(),
            min,
            max,
            pmap,
            env,
            timestamp: 0,
            max_entries: DEFAULT_MAX_ENTRIES,
            size: 0,
            hint: Cell::new((min, min, 0)),
            search_visits: Cell::new(0),
            entry_alloc: &crate::failpoint::MAP_ENTRY_ALLOC,
            stack_top: None,
            limits: MapLimits::NO_GROWTH,
            deferred: Deferred { on: false, objects: Vec::new() },
        }
    }

    /// The number of entries.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// The most entries the map may hold.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// Sets the most entries the map may hold (existing ones stay).
    pub fn set_max_entries(&mut self, n: usize) {
        self.max_entries = n;
    }

    /// Makes entry allocations consult `fp` instead of the kernel's
    /// `map.entry_alloc` fail point (host tests, which run in parallel).
    pub fn set_entry_fail_point(&mut self, fp: &'static FailPoint) {
        self.entry_alloc = fp;
    }

    /// Bytes mapped, in all entries.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes mapped within `[start, end)`.
    pub fn mapped_in(&self, start: u64, end: u64) -> u64 {
        self.overlapping(start, end).map(|e| e.end.min(end) - e.start.max(start)).sum()
    }

    /// Bytes in wired entries.
    pub fn wired_size(&self) -> u64 {
        self.entries.values().filter(|e| e.wired_count > 0).map(|e| e.end - e.start).sum()
    }

    /// Entries looked at by free-space searches so far.
    pub fn search_visits(&self) -> u64 {
        self.search_visits.get()
    }

    /// The entries that overlap `[start, end)`, in order: found with a range
    /// query, so the cost follows the entries, not the length of the range.
    pub fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = &MapEntry> {
        let first = self.entry(start).map_or(start, |e| e.start);
        self.entries.range(first..end.max(first)).map(|(_, e)| e)
    }

    /// True if no entry overlaps `[start, end)`.
    pub fn is_free(&self, start: u64, end: u64) -> bool {
        self.overlapping(start, end).next().is_none()
    }

    /// Whether `more` entries may be added: within the limit (counting the
    /// result, `more` less `fewer` going away), and room on the heap for the
    /// tree to take `more` (it cannot report an allocation failure itself).
    fn room_for(&self, more: usize, fewer: usize) -> Result<(), MapError> {
        if more == 0 {
            return Ok(());
        }
        if (self.entries.len() + more).saturating_sub(fewer) > self.max_entries
            || self.entry_alloc.should_fail()
            || !crate::heap_room(TREE_SPLIT_BYTES + more * ENTRY_HEAP_BYTES)
        {
            return Err(MapError::TooManyEntries);
        }
        Ok(())
    }

    /// Clips needed to make entries start at `start` and at `end`: 0, 1 or 2.
    fn splits(&self, start: u64, end: u64) -> usize {
        let inside = |a: u64| self.entry(a).is_some_and(|e| e.start != a);
        inside(start) as usize + inside(end) as usize
    }

    pub fn pmap(&self) -> &Arc<dyn Pmap> {
        &self.pmap
    }

    pub fn env(&self) -> &VmEnv {
        &self.env
    }

    pub fn entries(&self) -> impl Iterator<Item = &MapEntry> {
        self.entries.values()
    }

    /// The entry containing `va`.
    pub fn entry(&self, va: u64) -> Option<&MapEntry> {
        self.entries.range(..=va).next_back().map(|(_, e)| e).filter(|e| va < e.end)
    }

    /// The lowest free range of `len` bytes aligned to `align`.
    pub fn find_space(&self, len: u64, align: u64) -> Option<u64> {
        self.find_space_from(self.min, len, align)
    }

    /// The lowest free range of `len` bytes aligned to `align` at or above
    /// `from`. Starts at the end of the hint when `from` is within it and
    /// the hint has no free run as long as `len`; looks only at the entries
    /// from there up; and extends the hint over every entry it passes, with
    /// the free runs between them that were too short.
    pub fn find_space_from(&self, from: u64, len: u64, align: u64) -> Option<u64> {
        let align = align.max(PAGE);
        let from = from.max(self.min);
        let (lo, hi, hole) = self.hint.get();
        // Every free run in `[cov_lo, cov_hi)` is at most `cov_hole` bytes.
        let (cov_lo, mut cov_hi, mut cov_hole) =
            if lo <= from && from <= hi && len > hole { (lo, hi, hole) } else { (from, from, 0) };
        let mut visits = 0;
        if let Some(e) = self.entry(cov_hi) {
            visits += 1;
            cov_hi = e.end;
        }
        let mut found = None;
        for e in self.entries.range(cov_hi..).map(|(_, e)| e) {
            visits += 1;
            let cur = cov_hi.checked_next_multiple_of(align)?;
            if cur.checked_add(len).is_some_and(|end| end <= e.start) {
                found = Some(cur);
                break;
            }
            // Too short (or misaligned): passed over, and remembered.
            cov_hole = cov_hole.max(e.start - cov_hi);
            cov_hi = e.end;
        }
        self.hint.set((cov_lo, cov_hi, cov_hole));
        self.search_visits.set(self.search_visits.get() + visits);
        found.or_else(|| {
            let cur = cov_hi.checked_next_multiple_of(align)?;
            cur.checked_add(len).is_some_and(|end| end <= self.max).then_some(cur)
        })
    }

    /// After an unmap of `[start, end)`: if it freed part of the hint's
    /// range, the range ends where the free run that now holds `start`
    /// begins (a short hole just below `start` is part of a longer one now).
    fn shorten_hint(&self, start: u64, end: u64) {
        let (lo, hi, hole) = self.hint.get();
        if start < hi && end > lo {
            let run = self.entries.range(..start).next_back().map_or(self.min, |(_, e)| e.end);
            self.hint.set((lo, run.min(start).max(lo), hole));
        }
    }

    /// Maps `len` bytes at `at` (or anywhere free) to `object` from page
    /// `offset` (or to new anonymous memory). `cow` makes it private.
    #[allow(clippy::too_many_arguments)]
    pub fn map(
        &mut self,
        at: Option<u64>,
        len: u64,
        prot: Prot,
        max_prot: Prot,
        inherit: Inherit,
        object: Option<(Arc<VmObject>, u64)>,
        cow: bool,
    ) -> Result<u64, MapError> {
        if len == 0 || !aligned(len) || !max_prot.contains(prot) {
            return Err(MapError::InvalidRange);
        }
        let start = match at {
            Some(a) => {
                let end = a.checked_add(len).ok_or(MapError::InvalidRange)?;
                if !aligned(a) || a < self.min || end > self.max {
                    return Err(MapError::InvalidRange);
                }
                if self.entries.range(..end).next_back().is_some_and(|(_, e)| e.end > a) {
                    return Err(MapError::Overlap);
                }
                a
            }
            None => self.find_space(len, PAGE).ok_or(MapError::NoSpace)?,
        };
        self.room_for(1, 0)?;
        let (object, offset) = match object {
            Some((o, off)) => (Some(o), off),
            None => (None, 0),
        };
        self.size += len;
        self.entries.insert(
            start,
            MapEntry {
                start,
                end: start + len,
                prot,
                max_prot,
                inherit,
                wired_count: 0,
                lock_on_fault: false,
                needs_copy: cow && object.is_some(),
                cow,
                object,
                offset,
                grows_down: false,
            },
        );
        self.timestamp += 1;
        Ok(start)
    }

    /// Splits the entry containing `at` so that an entry starts at `at`.
    /// The caller has made room ([`Self::room_for`]).
    fn clip(&mut self, at: u64) {
        let Some(e) = self.entry(at) else { return };
        if e.start == at {
            return;
        }
        let mut tail = e.clone();
        let head_pages = (at - e.start) / PAGE;
        tail.start = at;
        tail.offset += head_pages;
        if let Some(o) = &tail.object {
            o.reference();
        }
        let start = e.start;
        self.entries.get_mut(&start).unwrap().end = at;
        self.entries.insert(at, tail);
    }

    /// Keys of the entries within `[start, end)` after clipping at both
    /// ends; with `removing` (an unmap) they go away afterwards, which the
    /// limit counts. Fails, changing nothing, if the clips would pass the
    /// limit or the heap has no room, or the list of keys cannot be
    /// allocated.
    fn clipped(&mut self, start: u64, end: u64, removing: bool) -> Result<Vec<u64>, MapError> {
        let splits = self.splits(start, end);
        let n = self.overlapping(start, end).count();
        self.room_for(splits, if removing { n } else { 0 })?;
        let mut keys = Vec::new();
        keys.try_reserve_exact(n).map_err(|_| MapError::NoMemory)?;
        self.clip(start);
        self.clip(end);
        keys.extend(self.entries.range(start..end).map(|(k, _)| *k));
        Ok(keys)
    }

    fn check_range(&self, start: u64, end: u64) -> Result<(), MapError> {
        if !aligned(start) || !aligned(end) || start >= end || start < self.min || end > self.max {
            return Err(MapError::InvalidRange);
        }
        Ok(())
    }

    /// True if `[start, end)` is covered by entries with no hole.
    pub fn fully_mapped(&self, start: u64, end: u64) -> bool {
        let mut cur = start;
        while cur < end {
            match self.entry(cur) {
                Some(e) => cur = e.end,
                None => return false,
            }
        }
        true
    }

    /// Unmaps `[start, end)`: removes the mappings, drops wirings (their
    /// pages go back to the queues), and releases the objects.
    pub fn unmap(&mut self, start: u64, end: u64) -> Result<(), MapError> {
        self.check_range(start, end)?;
        self.deferred.reserve(self.overlapping(start, end).count())?;
        for k in self.clipped(start, end, true)? {
            let e = self.entries.remove(&k).unwrap();
            self.size -= e.end - e.start;
            self.release(e);
        }
        self.shorten_hint(start, end);
        self.timestamp += 1;
        Ok(())
    }

    /// What goes with an entry that has left the map: its wirings (the pages
    /// go back to the queues), its mappings, its object reference (deferred
    /// under a `MapLock`, which the caller has made room for).
    fn release(&mut self, e: MapEntry) {
        if e.wired_count > 0 {
            self.unwire_pages(&e);
        }
        self.pmap.remove(e.start, e.end).flush();
        let trim = e.object.as_ref().and_then(|o| trim_of(&e, o));
        if let Some(o) = e.object {
            self.deferred.release_trimmed(o, trim);
        }
    }

    /// Throws away the contents of `[start, end)`, as `MADV_DONTNEED` does:
    /// the mappings go; private memory whose chain ends in anonymous memory
    /// starts over as zero-fill; a private mapping of a file goes back to the
    /// file's pages (copy-on-write again); shared memory keeps its pages.
    /// Wired ranges are the caller's to refuse.
    pub fn discard(&mut self, start: u64, end: u64) -> Result<(), MapError> {
        self.check_range(start, end)?;
        if !self.fully_mapped(start, end) {
            return Err(MapError::NoEntry);
        }
        self.deferred.reserve(self.overlapping(start, end).count())?;
        for k in self.clipped(start, end, false)? {
            let e = self.entries.get_mut(&k).unwrap();
            let (s, t) = (e.start, e.end);
            self.pmap.remove(s, t).flush();
            if e.inherit == Inherit::Share {
                continue;
            }
            let Some(obj) = e.object.take() else { continue };
            let trim = trim_of(e, &obj);
            // The bottom of the chain and the entry's offset in it.
            let (bottom, below) = crate::object::chain(&obj).last().expect("a chain holds its first object");
            let offset = e.offset + below;
            if matches!(bottom.kind(), crate::object::ObjectKind::Anonymous | crate::object::ObjectKind::Swap) {
                e.offset = 0;
                e.needs_copy = false;
            } else {
                bottom.reference();
                e.object = Some(bottom);
                e.offset = offset;
                e.needs_copy = true;
            }
            self.deferred.release_trimmed(obj, trim);
        }
        self.timestamp += 1;
        Ok(())
    }

    /// Sets the protection of `[start, end)` to `prot`, never above an
    /// entry's maximum (then nothing changes). Lowered access takes effect in
    /// the page tables at once; raised access on the next fault.
    pub fn protect(&mut self, start: u64, end: u64, prot: Prot) -> Result<(), MapError> {
        self.check_range(start, end)?;
        if !self.fully_mapped(start, end) {
            return Err(MapError::NoEntry);
        }
        let mut cur = start;
        while cur < end {
            let e = self.entry(cur).unwrap();
            if !e.max_prot.contains(prot) {
                return Err(MapError::Protection);
            }
            cur = e.end;
        }
        // `simplify` may join the range's entries and its two neighbours.
        self.deferred.reserve(self.overlapping(start, end).count() + 2)?;
        for k in self.clipped(start, end, false)? {
            let e = self.entries.get_mut(&k).unwrap();
            e.prot = prot;
            let (s, t) = (e.start, e.end);
            // No access at all: the mappings go (as FreeBSD's pmap_protect
            // does for VM_PROT_NONE), since a page table can take away
            // writing and executing but not reading from a present page.
            // A wired entry keeps its mappings, which hold its wirings:
            // they are only write- and execute-protected.
            if prot.is_empty() && e.wired_count == 0 {
                self.pmap.remove(s, t).flush();
            } else {
                self.pmap.protect(s, t, prot).flush();
            }
        }
        self.simplify(start, end);
        self.timestamp += 1;
        Ok(())
    }

    /// Joins the entries of `[start, end)`, and its neighbours, that the
    /// range's clips and changes left alike (FreeBSD's
    /// `vm_map_simplify_entry`, Linux's vma merge): protecting pages one at
    /// a time, then all at once, leaves one entry again, not one per page.
    /// Each join gives up a reference: the caller has made room for the
    /// entries of the range and its two neighbours.
    fn simplify(&mut self, start: u64, end: u64) {
        let first = self.entries.range(..start).next_back().map_or(start, |(k, _)| *k);
        let mut cur = first;
        while let Some((&next, _)) = self.entries.range(cur + 1..).next() {
            if next > end {
                break;
            }
            let (a, b) = (&self.entries[&cur], &self.entries[&next]);
            let same_object = match (&a.object, &b.object) {
                (None, None) => true,
                (Some(x), Some(y)) => Arc::ptr_eq(x, y) && a.offset + a.pages() == b.offset,
                _ => false,
            };
            let alike = a.end == b.start
                && same_object
                && a.prot == b.prot
                && a.max_prot == b.max_prot
                && a.inherit == b.inherit
                && a.wired_count == b.wired_count
                && (a.wired_count == 0 || a.lock_on_fault == b.lock_on_fault)
                && a.cow == b.cow
                && a.needs_copy == b.needs_copy
                && !a.grows_down
                && !b.grows_down;
            if !alike {
                cur = next;
                continue;
            }
            let b = self.entries.remove(&next).unwrap();
            self.entries.get_mut(&cur).unwrap().end = b.end;
            if let Some(o) = b.object {
                self.deferred.release(o);
            }
        }
    }
}

/// The pages of `o` that no mapping reaches once entry `e` no longer maps
/// it: the entry's, when it is private memory only it mapped.
fn trim_of(e: &MapEntry, o: &VmObject) -> Option<(u64, u64)> {
    let one = e.inherit == Inherit::Copy && o.lock().flags().contains(crate::object::ObjectFlags::ONE_MAPPING);
    one.then(|| (e.offset, e.offset + e.pages()))
}

impl Drop for VmMap {
    /// Releases every entry, one at a time: nothing is allocated here. No
    /// lock is held (the `MapLock`, if any, is going too): the objects are
    /// deallocated at once.
    fn drop(&mut self) {
        self.deferred.on = false;
        for (o, trim) in core::mem::take(&mut self.deferred.objects) {
            // A trim not done (the object goes whole, or lives on with the
            // pages no entry maps) still ends its paging in progress.
            if trim.is_some() {
                o.pip_wakeup();
            }
            o.deallocate();
        }
        while let Some((_, e)) = self.entries.pop_first() {
            self.size -= e.end - e.start;
            self.release(e);
        }
    }
}

mod advise;
mod fork;
mod lock;
mod lookup;
mod remap;
mod stack;
mod wire;

use lock::Deferred;
pub use lock::{MapGuard, MapLock};
pub use remap::{Remap, RemapError, Remapped};

pub use stack::{Growth, MapLimits};
pub(crate) use wire::Fill;
pub use wire::LockRange;

#[cfg(test)]
mod tests;
