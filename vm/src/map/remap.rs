//! `mremap` on a map ([`VmMap::remap`]): a range of one entry shrinks,
//! grows in place when the addresses after it are free, or moves, its
//! page-table entries moved with it ([`Pmap::move_range`]), never its
//! pages copied.
//!
//! What moves is the entry: its object and offset, protection, wirings,
//! copy-on-write state. A range that grows gets the entry's continuation:
//! the same object from the next index on, or, for private memory whose
//! object others see too (a fork, a shadow), new zero-fill memory (or the
//! file's next pages under a private file mapping). An anonymous object
//! only this entry maps grows with it (FreeBSD's `vm_object_coalesce`),
//! so the entry stays one. Linux merges like areas as it makes them; the
//! map joins like entries of the range first, so that a range Linux
//! holds in one area is one entry here too.
//!
//! The steps and their errors are Linux's (`mm/mremap.c`), in its order:
//! a call that fails part way may have unmapped what `MREMAP_FIXED`
//! covered, or the tail a shrink gave up, as Linux's does.

use super::*;

/// A `mremap` call, its arguments checked and rounded by the caller:
/// `old` page aligned, the lengths whole pages, `new_len` not 0.
#[derive(Clone, Copy, Debug)]
pub struct Remap {
    pub old: u64,
    /// 0: a second mapping of a shared range.
    pub old_len: u64,
    pub new_len: u64,
    /// `MREMAP_MAYMOVE`.
    pub may_move: bool,
    /// `MREMAP_FIXED`: the new address, whatever is mapped there going.
    pub fixed: Option<u64>,
    /// `MREMAP_DONTUNMAP`: the old range stays mapped, emptied (private
    /// memory reads as zeros, or as the file again; shared memory as its
    /// object), and unwired.
    pub dont_unmap: bool,
    /// The call's new address: checked as Linux checks it with
    /// `MREMAP_DONTUNMAP` alone too, where it is only a hint.
    pub new_addr: u64,
    /// Where a move without `fixed` looks for room first (then anywhere).
    pub search_from: u64,
    /// The owner's RLIMIT_AS and RLIMIT_MEMLOCK, in bytes.
    pub size_limit: u64,
    pub wired_limit: u64,
}

/// Why `remap` failed, as Linux's errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemapError {
    /// EFAULT: nothing mapped at `old`, or the range runs past its entry.
    Fault,
    /// EINVAL.
    Invalid,
    /// ENOMEM: no room to grow in place and no leave to move; no room
    /// anywhere; RLIMIT_AS; the entry limit; the heap; page tables.
    NoMemory,
    /// EAGAIN: a wired range would pass RLIMIT_MEMLOCK.
    WiredLimit,
}

/// What `remap` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remapped {
    /// Where the range is now.
    pub addr: u64,
    /// Memory added to a wired range: the caller locks it as the range is
    /// locked (an entry's wiring holds its pages, which a fault brings
    /// in: see `fault::lock`), then joins it to the rest with
    /// [`VmMap::join`].
    pub wire: Option<LockRange>,
}

fn no_memory(_: MapError) -> RemapError {
    RemapError::NoMemory
}

/// An unmap's error as `mremap`'s: a range past the map is EINVAL (as
/// Linux's `do_munmap`), the rest want memory or entries.
fn unmap_error(e: MapError) -> RemapError {
    match e {
        MapError::InvalidRange => RemapError::Invalid,
        _ => RemapError::NoMemory,
    }
}

impl VmMap {
    /// Linux's `mremap` (see the module docs).
    pub fn remap(&mut self, r: &Remap) -> Result<Remapped, RemapError> {
        debug_assert!(aligned(r.old) && aligned(r.old_len) && aligned(r.new_len) && r.new_len > 0);
        if self.entry(r.old).is_none() {
            return Err(RemapError::Fault);
        }
        if r.old_len > 0 {
            let end = r.old.saturating_add(r.old_len).min(self.max);
            self.join(r.old, end).map_err(no_memory)?;
        }
        if r.fixed.is_some() || r.dont_unmap {
            return self.remap_to(r);
        }
        if r.old_len >= r.new_len {
            if r.old_len > r.new_len {
                let old_end = r.old.checked_add(r.old_len).ok_or(RemapError::Invalid)?;
                self.unmap(r.old + r.new_len, old_end).map_err(unmap_error)?;
            }
            return Ok(Remapped { addr: r.old, wire: None });
        }
        // Within the entry (checked first: the sum cannot overflow then).
        let e_end = self.resizable(r, r.old_len)?;
        let old_end = r.old + r.old_len;
        let grow = r.new_len - r.old_len;
        if e_end == old_end && old_end.checked_add(grow).is_some_and(|end| end <= self.max && self.is_free(old_end, end)) {
            self.room_for(1, 0).map_err(no_memory)?;
            self.deferred.reserve(2).map_err(no_memory)?;
            let wire = self.extend(old_end, grow);
            self.simplify(r.old, old_end + grow);
            return Ok(Remapped { addr: r.old, wire });
        }
        if !r.may_move {
            return Err(RemapError::NoMemory);
        }
        let to = self.find_space_from(r.search_from, r.new_len, PAGE).or_else(|| self.find_space(r.new_len, PAGE));
        self.move_to(r.old, r.old_len, to.ok_or(RemapError::NoMemory)?, r.new_len, false)
    }

    /// `MREMAP_FIXED` or `MREMAP_DONTUNMAP` (Linux's `mremap_to`).
    fn remap_to(&mut self, r: &Remap) -> Result<Remapped, RemapError> {
        let to = r.fixed.unwrap_or(r.new_addr);
        if !aligned(to) || to.checked_add(r.new_len).is_none_or(|end| end > self.max) {
            return Err(RemapError::Invalid);
        }
        if r.old.saturating_add(r.old_len) > to && to + r.new_len > r.old {
            return Err(RemapError::Invalid);
        }
        // As Linux, room for the two entries a move may add, with margin.
        if self.entries.len() + 2 >= self.max_entries.saturating_sub(3) {
            return Err(RemapError::NoMemory);
        }
        if r.fixed.is_some() {
            self.unmap(to, to + r.new_len).map_err(unmap_error)?;
        }
        let mut old_len = r.old_len;
        if old_len > r.new_len {
            let old_end = r.old.checked_add(old_len).ok_or(RemapError::Invalid)?;
            self.unmap(r.old + r.new_len, old_end).map_err(unmap_error)?;
            old_len = r.new_len;
        }
        self.resizable(r, old_len)?;
        if r.dont_unmap && self.size.saturating_add(old_len) > r.size_limit {
            return Err(RemapError::NoMemory);
        }
        let to = match r.fixed {
            Some(to) => to,
            None => self
                .find_space_from(r.search_from, r.new_len, PAGE)
                .or_else(|| self.find_space(r.new_len, PAGE))
                .ok_or(RemapError::NoMemory)?,
        };
        self.move_to(r.old, old_len, to, r.new_len, r.dont_unmap)
    }

    /// Linux's `vma_to_resize`: the checks on the entry holding
    /// `[r.old, r.old + old_len)` before it grows to `r.new_len`. Returns
    /// the entry's end.
    fn resizable(&self, r: &Remap, old_len: u64) -> Result<u64, RemapError> {
        let e = self.entry(r.old).ok_or(RemapError::Fault)?;
        // A second mapping of private memory would be new memory, not
        // the old: Linux refuses it.
        if old_len == 0 && e.inherit != Inherit::Share {
            return Err(RemapError::Invalid);
        }
        if old_len > e.end - r.old {
            return Err(RemapError::Fault);
        }
        if r.new_len == old_len {
            return Ok(e.end);
        }
        let index = e.offset + (r.old - e.start) / PAGE;
        if index.checked_add(r.new_len / PAGE).is_none() {
            return Err(RemapError::Invalid);
        }
        let more = r.new_len.saturating_sub(old_len);
        if e.wired_count > 0 && self.wired_size().saturating_add(more) > r.wired_limit {
            return Err(RemapError::WiredLimit);
        }
        if self.size.saturating_add(more) > r.size_limit {
            return Err(RemapError::NoMemory);
        }
        Ok(e.end)
    }

    /// Moves `[old, old + len)`, within one entry, to `to` (free), and
    /// grows it there to `new_len`. `len` 0: maps the shared entry at
    /// `old` a second time instead, `new_len` long.
    fn move_to(&mut self, old: u64, len: u64, to: u64, new_len: u64, dont_unmap: bool) -> Result<Remapped, RemapError> {
        debug_assert!(self.is_free(to, to + new_len));
        if len == 0 {
            return self.map_again(old, to, new_len);
        }
        let end = old + len;
        // Room first: the clips, the entry left behind, the growth, and
        // the joins at both places.
        let more = self.splits(old, end) + dont_unmap as usize + (new_len > len) as usize;
        self.room_for(more, 0).map_err(no_memory)?;
        self.deferred.reserve(6).map_err(no_memory)?;
        // The page tables next, the one step that may fail for memory:
        // until it is done nothing has changed.
        self.pmap.move_range(old, to, len).map_err(|_| RemapError::NoMemory)?.flush();
        self.clip(old);
        self.clip(end);
        let mut e = self.entries.remove(&old).expect("clipped at the range's start");
        let behind = dont_unmap.then(|| left_behind(&e));
        e.start = to;
        e.end = to + len;
        e.grows_down = false;
        self.entries.insert(to, e);
        match behind {
            Some(b) => {
                self.size += len;
                self.entries.insert(old, b);
                self.simplify(old, end);
            }
            None => self.shorten_hint(old, end),
        }
        self.timestamp += 1;
        let wire = if new_len > len { self.extend(to + len, new_len - len) } else { None };
        self.simplify(to, to + new_len);
        Ok(Remapped { addr: to, wire })
    }

    /// `mremap` with an old length of 0: a second mapping, at `to`, of
    /// the shared entry at `old`, `len` long from there.
    fn map_again(&mut self, old: u64, to: u64, len: u64) -> Result<Remapped, RemapError> {
        self.room_for(1, 0).map_err(no_memory)?;
        let env = self.env;
        let key = self.entry(old).ok_or(RemapError::Fault)?.start;
        let e = self.entries.get_mut(&key).expect("the entry at old");
        if e.object.is_none() {
            // Untouched shared memory: both mappings must see one object.
            e.object = Some(VmObject::try_new(ObjectKind::Anonymous, e.pages(), env).map_err(|_| RemapError::NoMemory)?);
            e.offset = 0;
        }
        let mut c = e.clone();
        let object = c.object.as_ref().expect("given an object above");
        object.reference();
        if object.kind() == ObjectKind::Anonymous || object.kind() == ObjectKind::Swap {
            object.lock().grow_to(c.offset + (old - c.start + len) / PAGE);
        }
        c.offset += (old - c.start) / PAGE;
        c.start = to;
        c.end = to + len;
        c.wired_count = 0;
        c.grows_down = false;
        let wire = (e.wired_count > 0).then_some(LockRange { start: to, end: to + len, on_fault: e.lock_on_fault });
        self.size += len;
        self.entries.insert(to, c);
        self.timestamp += 1;
        Ok(Remapped { addr: to, wire })
    }

    /// Maps `[at, at + len)` (free) as the continuation of the entry that
    /// ends at `at` (see the module docs), unwired. Returns the range when
    /// the entry is wired: the caller locks it. The caller has made room
    /// for one entry.
    fn extend(&mut self, at: u64, len: u64) -> Option<LockRange> {
        let e = self.entry(at - PAGE).filter(|e| e.end == at).expect("an entry ends where the range grows").clone();
        let next = e.offset + e.pages();
        let (object, offset, needs_copy) = match &e.object {
            None => (None, 0, false),
            Some(o) if e.inherit == Inherit::Share || !matches!(o.kind(), ObjectKind::Anonymous | ObjectKind::Swap) => {
                // Shared memory, or a file mapped straight: its next pages.
                if matches!(o.kind(), ObjectKind::Anonymous | ObjectKind::Swap) {
                    o.lock().grow_to(next + len / PAGE);
                }
                o.reference();
                (Some(o.clone()), next, e.needs_copy)
            }
            Some(o) if self.coalesce(o, next, len / PAGE) => {
                o.reference();
                (Some(o.clone()), next, false)
            }
            Some(o) => {
                // Private memory others see too: new memory, or the next
                // pages of the file at the bottom of the chain.
                let (bottom, below) = crate::object::chain(o).last().expect("a chain holds its first object");
                if matches!(bottom.kind(), ObjectKind::Anonymous | ObjectKind::Swap) {
                    (None, 0, false)
                } else {
                    bottom.reference();
                    (Some(bottom), below.saturating_add(next), true)
                }
            }
        };
        self.entries.insert(
            at,
            MapEntry {
                start: at,
                end: at + len,
                prot: e.prot,
                max_prot: e.max_prot,
                inherit: e.inherit,
                wired_count: 0,
                lock_on_fault: false,
                object,
                offset,
                cow: e.cow,
                needs_copy,
                grows_down: false,
            },
        );
        self.size += len;
        self.timestamp += 1;
        (e.wired_count > 0).then_some(LockRange { start: at, end: at + len, on_fault: e.lock_on_fault })
    }

    /// Joins the like entries of `[start, end)` and its neighbours (see
    /// `simplify`): after `remap`'s growth of a wired range is wired, or
    /// whenever entries made apart should be one again.
    pub fn join(&mut self, start: u64, end: u64) -> Result<(), MapError> {
        self.deferred.reserve(self.overlapping(start, end).count() + 2)?;
        self.simplify(start, end);
        Ok(())
    }
}

/// What `MREMAP_DONTUNMAP` leaves at the old place of entry `e`: the same
/// kind of memory with nothing in it of its own (see `discard`), unwired.
fn left_behind(e: &MapEntry) -> MapEntry {
    let mut b = MapEntry { wired_count: 0, grows_down: false, object: None, offset: 0, needs_copy: false, ..e.clone() };
    match &e.object {
        None => {}
        Some(o) if e.inherit == Inherit::Share => {
            o.reference();
            b.object = Some(o.clone());
            b.offset = e.offset;
            b.needs_copy = e.needs_copy;
        }
        Some(o) => {
            let (bottom, below) = crate::object::chain(o).last().expect("a chain holds its first object");
            if !matches!(bottom.kind(), ObjectKind::Anonymous | ObjectKind::Swap) {
                bottom.reference();
                b.object = Some(bottom);
                b.offset = e.offset + below;
                b.needs_copy = true;
            }
        }
    }
    b
}

impl VmMap {
    /// Whether anonymous object `o` can grow to cover `pages` more pages
    /// from `index` for the entry that ends at its `index` (FreeBSD's
    /// `vm_object_coalesce`): it shadows nothing and nothing shadows it;
    /// no other entry maps those indices (with other references, the
    /// object must be one-mapping, whose every reference is an entry of
    /// this map: they are searched); no trim of it is pending; and
    /// nothing of it is there already (a page left from a range unmapped
    /// before, or put there by a fault that lost a race with the unmap,
    /// would show through; an object with swap is not searched for
    /// slots, only refused). If so, it has grown.
    fn coalesce(&self, o: &Arc<VmObject>, index: u64, pages: u64) -> bool {
        let end = index + pages;
        let mut l = o.lock();
        if l.has_backing() || l.shadow_count() != 0 || l.pager().is_some() || o.paging_in_progress() != 0 {
            return false;
        }
        if o.ref_count() != 1 {
            let theirs = |e: &MapEntry| {
                e.object.as_ref().is_some_and(|x| Arc::ptr_eq(x, o)) && e.offset < end && index < e.offset + e.pages()
            };
            if !l.flags().contains(crate::object::ObjectFlags::ONE_MAPPING) || self.entries.values().any(theirs) {
                return false;
            }
        }
        if l.lookup_ge(index).is_some_and(|p| p.pindex() < end) {
            return false;
        }
        l.grow_to(end);
        true
    }
}
