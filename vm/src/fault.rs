//! The page-fault handler, as a state machine in the manner of FreeBSD's
//! `vm_fault.c` (a `FaultState`, named steps, a status enum, one clean-up).
//!
//! ## A word on page faults
//!
//! ```text
//!   fault(va, access)
//!     lookup ─── no entry / protection ──────────────────────────► error
//!       │ first object, index, protection, map timestamp
//!       ▼
//!     find_page, an object at a time (first object → backing → ...):
//!       object: page resident? ── busy ──► release all, sleep, restart
//!         │ valid ─────────────────────────────────┐
//!       object has a pager? ── get_pages: OK ──────┤
//!         │   ERROR ► error · AGAIN ► restart · BAD ► error
//!       next: the backing object                     │
//!     zerofill, at the end: the first object's page  │
//!                                                    ▼
//!     cow: page below the first object and a write? ─► copy (or move,
//!                                                    with `replace`, rule 7)
//!     enter: map changed since the lookup? ─► release all, restart
//!            in the pmap ── no memory ─► release all, wait, restart (rule 12)
//!            prefault neighbours
//!     finish: queue, unbusy
//! ```
//!
//! The steps are `FaultState`'s methods of those names, run in that order
//! by `FaultState::run`; the object being searched and the index there
//! are `FaultState`'s (`object`, `pindex`), as in FreeBSD's
//! `vm_fault_object` / `vm_fault_next` / `vm_fault_zerofill`. Timing the
//! steps for the benchmarks ([`set_step_clock`]) runs a second copy of
//! them; the production one has no clock in it ([`steps`]).
//!
//! Preconditions and outcomes of each step are asserted where they hold:
//! "page found: exclusively busy, object unlocked" (`assert_found`, debug
//! builds). Locks are never held across a wait: every wait first releases
//! everything (`release`), busy placeholder pages included, and the fault
//! restarts from the lookup.
//!
//! Errors are statuses ([`FaultError`]), never panics: the caller turns them
//! into EFAULT, a signal, or (for the kernel itself) a panic with a report.

use alloc::sync::Arc;

use crate::map::{Growth, Lookup, MapError, MapLock};
use crate::object::{ObjectError, ObjectKind, VmObject};
use crate::page::{Page, PageFlags, busy_wait};
use crate::phys::AllocFlags;
use crate::pmap::{PmapError, Prot};
use crate::{PAGE_SIZE, vm_wait};

mod pagein;
mod prefault;
mod wire;
pub use wire::{lock, wire};
pub mod steps;

use pagein::page_in;
use prefault::prefault;
pub use steps::{STEP_TIMES, Step, StepTimes, set_step_clock, step_clock};
use steps::{Timed, Unwatched, Watch};

/// How often a fault retries after running out of memory before it gives up
/// with [`FaultError::NoMemory`].
pub const MEMORY_RETRIES: u32 = 64;
/// Pages on each side of a fault mapped if resident (`vm_fault_prefault`).
pub const PREFAULT: u64 = 4;

pub use crate::object::PagerResult;

/// Why a fault failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultError {
    /// No mapping at the address.
    NoEntry,
    /// The access is not allowed.
    Protection,
    /// Memory stayed short through every retry.
    NoMemory,
    /// The pager could not read the page.
    Io,
    /// The pager has no such page (e.g. past the end of a file).
    Bad,
    /// No entry, just past the stack's limit of `limit` bytes: the stack
    /// would have grown there ([`VmMap::grow_stack`](crate::map::VmMap::grow_stack)).
    StackOverflow { limit: u64 },
}

impl From<MapError> for FaultError {
    fn from(e: MapError) -> Self {
        match e {
            MapError::Protection => FaultError::Protection,
            _ => FaultError::NoEntry,
        }
    }
}

/// What the fault did, for statistics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    pub restarts: u32,
    pub zero_filled: bool,
    pub copied: bool,
    pub moved: bool,
    pub paged_in: bool,
    pub prefaulted: u32,
    /// Pages read ahead or behind with the faulting one.
    pub read_ahead: u32,
}

/// A step's verdict.
enum Next {
    /// Go on to the next step.
    Continue,
    /// Release everything and start again from the lookup.
    Restart,
    /// Release everything, sleep until the page is no longer busy, start
    /// again (FreeBSD's `vm_fault_busy_sleep`). Sleeping only after the
    /// release matters: the page's holder may be waiting for a page this
    /// fault holds (the first object's placeholder, say, as a collapse or
    /// a range removal in that object would), and must find it gone. The
    /// page may be freed meanwhile; pages are never unmapped from the page
    /// array, and freeing one wakes its sleepers.
    RestartAfterBusySleep(&'static Page),
    /// Release everything, wait for memory, start again.
    RestartAfterMemoryWait,
    /// Release everything, wait a moment for the pager's resource (its
    /// vnode lock, rule 8), start again. Waiting only after the release
    /// matters for the same reason as above: a thread that holds the lock
    /// may be waiting for our busy pages.
    RestartAfterPagerWait,
    /// The stack grew by `[start, end)`, memory that must be wired as it
    /// is mapped: release everything, wire it (which faults it in), start
    /// again.
    RestartAfterWiring(u64, u64),
    /// Stop with an error (after releasing everything).
    Fail(FaultError),
}

/// What the look at one object of the chain found (`object`).
enum Here {
    /// The search is over, with this verdict (`Continue`: the page is in
    /// `m`).
    Done(Next),
    /// Not here: go on to the backing object, if any (as read under the
    /// object's lock), at the index plus its offset.
    Below(Option<(Arc<VmObject>, u64)>),
}

/// The state of one fault.
struct FaultState<'a, W: Watch> {
    // The fault's parameters.
    map: &'a MapLock,
    va: u64,
    access: Prot,
    wire: bool,
    // The access overrides the entry's protection (`VmMap::lookup_as`).
    force: bool,
    watch: W,
    // What the map lookup said: the first object and its index among them.
    lookup: Option<Lookup>,
    // The first object's placeholder page (exclusively busy, invalid),
    // allocated when the first object has no page at the index.
    first_m: Option<&'static Page>,
    // The object being searched, and the index there: `None` is the first
    // object (only borrowed from the lookup). Once the page is found, the
    // object it is in.
    object: Option<Arc<VmObject>>,
    pindex: u64,
    // How far below the first object `object` is.
    depth: u32,
    // Whether `object` is the first object's own backing object with no
    // other shadow: read under that object's lock when the page is found
    // there, for the copy step's choice between a copy and a move.
    sole_shadow: bool,
    // The page found or made (exclusively busy), in `object`.
    m: Option<&'static Page>,
    stats: FaultStats,
}

/// Handles a fault at `va` for `access` in `map`. With `wire`, the page is
/// also wired (for `mlock`; the map entry must be wired).
pub fn fault(map: &MapLock, va: u64, access: Prot, wire: bool) -> Result<FaultStats, FaultError> {
    match step_clock() {
        None => fault_watched(map, va, access, wire, false, Unwatched),
        Some(clock) => fault_watched(map, va, access, wire, false, Timed::new(clock)),
    }
}

/// [`fault`] for an access that overrides the entry's protection up to
/// its maximum, as a debugger's does (`/proc/PID/mem`): a forced write to
/// a private read-only entry copies the page into the entry's own object
/// and maps it read-only (see `VmMap::lookup_as`). The caller then reaches
/// the page through the object, busy, not through the mapping.
pub fn fault_forced(map: &MapLock, va: u64, access: Prot) -> Result<FaultStats, FaultError> {
    fault_watched(map, va, access, false, true, Unwatched)
}

/// [`fault`], its steps watched by `watch`.
#[inline(always)]
fn fault_watched<W: Watch>(
    map: &MapLock,
    va: u64,
    access: Prot,
    wire: bool,
    force: bool,
    watch: W,
) -> Result<FaultStats, FaultError> {
    let mut fs = FaultState {
        map,
        va: va & !(PAGE_SIZE as u64 - 1),
        access,
        wire,
        force,
        watch,
        lookup: None,
        first_m: None,
        object: None,
        pindex: 0,
        depth: 0,
        sole_shadow: false,
        m: None,
        stats: FaultStats::default(),
    };
    let mut memory_waits = 0;
    loop {
        let verdict = fs.run();
        match verdict {
            Next::Continue => return Ok(fs.stats),
            Next::Restart => fs.release(),
            Next::RestartAfterBusySleep(m) => {
                fs.release();
                busy_wait(m);
            }
            Next::RestartAfterMemoryWait => {
                fs.release();
                memory_waits += 1;
                if memory_waits > MEMORY_RETRIES || !vm_wait() {
                    return Err(FaultError::NoMemory);
                }
            }
            Next::RestartAfterPagerWait => {
                fs.release();
                if !vm_wait() {
                    return Err(FaultError::NoMemory);
                }
            }
            Next::RestartAfterWiring(start, end) => {
                fs.release();
                // A wiring that fails (memory short) leaves the new stack
                // unwired, as FreeBSD's growth does: the fault goes on.
                let _ = self::wire(map, start, end);
            }
            Next::Fail(e) => {
                fs.release();
                return Err(e);
            }
        }
        fs.stats.restarts += 1;
    }
}

/// Host tests: a fault watched by `watch` (to stop it between two steps).
#[cfg(test)]
pub(crate) fn fault_with<W: Watch>(map: &MapLock, va: u64, access: Prot, wire: bool, watch: W) -> Result<FaultStats, FaultError> {
    fault_watched(map, va, access, wire, false, watch)
}

impl<W: Watch> FaultState<'_, W> {
    /// One attempt: the steps in order, each told to the watcher.
    ///
    /// The steps are inlined here, one call site each: under emulation a
    /// call and its return each cost a lookup of translated code, and a
    /// fault that made one per step spent more on them than on the steps'
    /// own work (`kernel.cost.call_ret` against `kernel.cost.straight_x10`).
    #[inline(always)]
    fn run(&mut self) -> Next {
        macro_rules! step {
            ($step:ident, $verdict:expr) => {{
                let verdict = $verdict;
                self.watch.after(Step::$step);
                match verdict {
                    Next::Continue => {}
                    other => return other,
                }
            }};
        }
        self.watch.start();
        step!(Lookup, self.lookup());
        step!(FindPage, self.find_page());
        self.assert_found();
        // Only a page from below the first object has a copy step.
        if self.object.is_some() {
            step!(Cow, self.cow());
        }
        step!(Enter, self.enter());
        self.finish();
        self.watch.after(Step::Finish);
        Next::Continue
    }

    /// What the module's docs promise after `find_page`: the page found is
    /// exclusively busy and valid, and no object is left locked. (Debug
    /// builds.)
    #[inline(always)]
    fn assert_found(&self) {
        #[cfg(debug_assertions)]
        {
            let lk = self.lookup.as_ref().unwrap();
            let m = self.m.expect("page found");
            assert!(m.xbusied(), "fault at {:#x}: page {:#x} found but not exclusively busy", self.va, m.phys());
            assert!(m.all_valid(), "fault at {:#x}: page {:#x} found but not valid", self.va, m.phys());
            // (By this thread: the pageout daemon, preempted, may hold
            // either meanwhile.)
            assert!(lk.object.locked_by_me() != Some(true), "fault at {:#x}: first object left locked", self.va);
            if let Some(object) = &self.object {
                assert!(
                    object.locked_by_me() != Some(true),
                    "fault at {:#x}: page {:#x}'s object left locked",
                    self.va,
                    m.phys()
                );
            }
            if let Some(f) = self.first_m {
                assert!(f.xbusied(), "fault at {:#x}: placeholder {:#x} not exclusively busy", self.va, f.phys());
            }
        }
    }

    /// Releases every page the fault holds: an invalid placeholder is freed
    /// (rule 5), any other page is unbusied and left on a queue (rule 4).
    /// Only a fault that restarts or fails has anything to release. After
    /// it the fault holds nothing: no lock, no busy page.
    #[cold]
    #[inline(never)]
    fn release(&mut self) {
        let first_m = self.first_m.take();
        let m = self.m.take();
        if let Some(lk) = self.lookup.take() {
            let pm = lk.object_env().pm;
            // Queued while still busy: once unbusied, a page may be freed
            // at any moment by another CPU (its object terminated, pageout),
            // and a free page must not be queued.
            if let Some(m) = m.filter(|m| !first_m.is_some_and(|f| core::ptr::eq(f, *m))) {
                pm.requeue(m);
                m.xunbusy();
            }
            if let Some(f) = first_m {
                if f.valid() == 0 {
                    lk.object.lock().free_invalid(f);
                } else {
                    pm.requeue(f);
                    f.xunbusy();
                }
            }
        }
        self.object = None;
        self.depth = 0;
        self.sole_shadow = false;
    }

    /// Step 1: the map entry, the first object and the index. No entry
    /// there: a fault below a stack grows it, and looks again (or, when
    /// new memory is wired as it is mapped, wires the new part first).
    #[inline(always)]
    fn lookup(&mut self) -> Next {
        let mut map = self.map.lock();
        let mut found = map.lookup_as(self.va, self.access, self.force);
        if found.as_ref().is_err_and(|e| *e == MapError::NoEntry) {
            match map.grow_stack(self.va) {
                Growth::Grew { wire: false, .. } => found = map.lookup_as(self.va, self.access, self.force),
                Growth::Grew { start, end, wire: true } => return Next::RestartAfterWiring(start, end),
                Growth::Overflow { limit } => return Next::Fail(FaultError::StackOverflow { limit }),
                Growth::NotStack | Growth::Refused => {}
            }
        }
        drop(map);
        match found {
            Ok(l) => {
                self.pindex = l.pindex;
                self.lookup = Some(l);
                Next::Continue
            }
            Err(MapError::NoMemory) => Next::RestartAfterMemoryWait,
            Err(e) => Next::Fail(e.into()),
        }
    }

    /// Step 2: walk the chain for the page, an object at a time (`object`,
    /// `next`); page in from a pager on the way, or zero-fill at the end
    /// (`zerofill`). Leaves `m` exclusively busy and valid, in `object`.
    #[inline(always)]
    fn find_page(&mut self) -> Next {
        debug_assert!(self.m.is_none() && self.first_m.is_none() && self.object.is_none() && self.depth == 0);
        loop {
            match self.object_step() {
                Here::Done(verdict) => return verdict,
                Here::Below(None) => return self.zerofill(),
                Here::Below(Some(backing)) => self.next(backing),
            }
        }
    }

    /// Step 2, one object (`vm_fault_object`): the page at `pindex` in
    /// `object`, if it is resident and valid or its pager has it.
    #[inline(always)]
    fn object_step(&mut self) -> Here {
        let lk = self.lookup.as_ref().unwrap();
        let object = self.object.as_ref().unwrap_or(&lk.object);
        let is_first = self.object.is_none();
        let pindex = self.pindex;
        let mut l = object.lock();
        // Dead: the last reference went after the lookup (an unmap or a
        // discard on another CPU, the map's deferred release), or a
        // collapse took this backing object into its shadow. The map no
        // longer names it: look again (FreeBSD's fault retries the same
        // way); the entry now has another object, or is gone.
        if l.flags().contains(crate::object::ObjectFlags::DEAD) {
            return Here::Done(Next::Restart);
        }
        // For the copy step: is this the first object's own backing
        // object, with no other shadow? (Read under the lock, here.)
        let sole_shadow = self.depth == 1 && l.shadow_count() == 1;
        let pager = l.pager();
        // The first object gets a page at the index if it has none (a
        // placeholder for a copy or a zero fill), and so does an object
        // with a pager (to read into): looked up and allocated with one
        // walk of the trie.
        let found = if is_first || pager.is_some() {
            // A page of a first object with no pager and nothing below it
            // can only be zero-filled: one from the zero pool, if there is
            // one, is zero already.
            let flags =
                if is_first && pager.is_none() && !l.has_backing() { AllocFlags::PREFER_ZERO } else { AllocFlags::empty() };
            match l.lookup_or_alloc(pindex, flags) {
                Ok(found) => Some(found),
                Err(ObjectError::NoMemory) => return Here::Done(Next::RestartAfterMemoryWait),
                Err(_) => return Here::Done(Next::Restart),
            }
        } else {
            l.lookup(pindex).map(|m| (m, false))
        };
        match found {
            Some((m, false)) => {
                #[cfg(loom)]
                let taken = m.try_xbusy() || crate::sync::model::broken(crate::sync::model::Break::FaultTakesBusyPage);
                #[cfg(not(loom))]
                let taken = m.try_xbusy();
                if !taken {
                    return Here::Done(Next::RestartAfterBusySleep(m));
                }
                if m.all_valid() {
                    drop(l);
                    self.sole_shadow = sole_shadow;
                    self.m = Some(m);
                    return Here::Done(Next::Continue);
                }
                // An invalid page left by a failed read: start it over.
                l.free_invalid(m);
                return Here::Done(Next::Restart);
            }
            Some((m, true)) => {
                if is_first {
                    self.first_m = Some(m);
                }
                if let Some((pager, held)) = pager.and_then(|p| {
                    let held = p.has_page(pindex)?;
                    Some((p, held))
                }) {
                    let verdict = page_in(l, object, m, pindex, is_first, pager, held, &mut self.stats);
                    if let Next::Continue = verdict {
                        self.m = Some(m);
                        self.sole_shadow = sole_shadow;
                    }
                    return Here::Done(verdict);
                }
                if !is_first {
                    // A pager object without the page: continue down.
                    l.free_invalid(m);
                }
            }
            None => {}
        }
        Here::Below(l.backing())
    }

    /// Step 2, to the backing object (`vm_fault_next`): it becomes the
    /// object searched, at the index plus its offset.
    #[inline(always)]
    fn next(&mut self, (backing, offset): (Arc<VmObject>, u64)) {
        self.pindex += offset;
        self.object = Some(backing);
        self.depth += 1;
    }

    /// Step 2, the end of the chain (`vm_fault_zerofill`): no object has
    /// the page; the first object's placeholder is zero-filled.
    #[inline(always)]
    fn zerofill(&mut self) -> Next {
        // Back at the first object, where the page goes.
        self.object = None;
        let lk = self.lookup.as_ref().unwrap();
        let m = self.first_m.expect("the first object always gets a placeholder");
        if !m.flags().contains(PageFlags::ZERO) {
            let p = lk.object.env().pm.page_addr(m).expect("page contents not accessible");
            // SAFETY: the page is ours (exclusively busy, just allocated) and
            // the direct map covers it.
            self.watch.fill(|| unsafe { zero_page(p) });
        }
        m.set_all_valid();
        // Anonymous memory exists nowhere else: the page must be written
        // out before it can be freed (and a clean swap-backed page must
        // have a slot, rule 14).
        m.set_all_dirty();
        self.stats.zero_filled = true;
        self.m = Some(m);
        Next::Continue
    }

    /// Step 3: a page from below the first object, and a write: give the
    /// first object its own copy. When the backing object is used by this
    /// chain alone, the page is moved instead, with `replace` (rule 7).
    #[inline(always)]
    fn cow(&mut self) -> Next {
        let Some(object) = self.object.as_ref() else {
            return Next::Continue;
        };
        let lk = self.lookup.as_ref().unwrap();
        let env = lk.object.env();
        let m = self.m.unwrap();
        let wants_write = self.access.contains(Prot::WRITE) || (self.wire && lk.prot.contains(Prot::WRITE));
        let first_m = self.first_m.expect("a page below the first object implies a placeholder");
        if !wants_write || !lk.cow {
            // Read through: map the backing page read-only; drop the placeholder.
            lk.object.lock().free_invalid(first_m);
            self.first_m = None;
            return Next::Continue;
        }
        // Is the backing object ours alone (its one reference is the first
        // object's, nothing else shadows it, and the page is not wired)?
        let sole = self.sole_shadow && object.ref_count() == 1 && !m.wired();
        if sole && m.mapping_count() == 0 {
            // Move: out of the backing object (no allocation), into the
            // placeholder's slot (no allocation): nothing can fail.
            let mut b = object.lock();
            let from = m.pindex();
            let may_free = b.remove(m);
            debug_assert!(may_free);
            let pager = b.pager();
            drop(b);
            // The page's paged-out copy below is nobody's now (rule 14).
            if let Some(pager) = pager {
                pager.forget(from, from + 1);
            }
            let old = lk.object.lock().replace(m, first_m);
            env.pm.free(old);
            m.set_all_dirty();
            self.stats.moved = true;
            self.m = Some(m);
        } else {
            let (src, dst) = (env.pm.page_addr(m).unwrap(), env.pm.page_addr(first_m).unwrap());
            // SAFETY: both pages are exclusively busy here, valid (m) or ours
            // (first_m), distinct, and reachable through the direct map.
            self.watch.fill(|| unsafe { copy_page(src, dst) });
            first_m.set_all_valid();
            // Queued while still busy (see `release`).
            env.pm.requeue(m);
            m.xunbusy();
            first_m.set_all_dirty();
            self.stats.copied = true;
            self.m = Some(first_m);
        }
        // The page is the first object's now.
        self.first_m = None;
        self.object = None;
        Next::Continue
    }

    /// Step 4: map the page. Rechecks the map first (the lock was dropped),
    /// and restarts if it changed (`vm_fault_relookup`). `enter` may fail
    /// for want of a page table (rule 12): release, wait, retry.
    #[inline(always)]
    fn enter(&mut self) -> Next {
        let lk = self.lookup.as_ref().unwrap();
        let m = self.m.unwrap();
        debug_assert!(m.xbusied(), "fault at {:#x}: page {:#x} entered but not exclusively busy", self.va, m.phys());
        let map = self.map.lock();
        if map.timestamp != lk.timestamp {
            return Next::Restart;
        }
        let mut prot = lk.prot;
        if self.object.is_some() {
            // A page below the first object is only ever mapped read-only.
            prot.remove(Prot::WRITE);
        }
        // In a wired entry every mapped page holds one wiring for it. A
        // copy-on-write fault there (the entry was forked after it was
        // wired) maps a new page in place of a wired one: the wiring moves
        // to the new page, or the old one would stay wired for good.
        // Rule: a mapping is wired exactly when it holds one of its page's
        // wirings (remove_range counts on it).
        let env = *lk.object_env();
        let (old_page, old_wired) = if lk.wired {
            match map.pmap().extract(self.va).and_then(|(pa, _)| env.pm.page_of(pa)) {
                Some(old) => (Some(old), map.pmap().wired_at(self.va)),
                None => (None, false),
            }
        } else {
            (None, false)
        };
        // A page at this address left its object while wired here (an
        // orphan mark): the entry's wiring of it ends as a new page comes.
        if lk.wired
            && old_page.is_none()
            && let Some(page) = map.pmap().take_orphan(self.va).and_then(|pa| env.pm.page_of(pa))
        {
            env.pm.unwire(page, crate::page::Queue::Active);
        }
        let same = old_page.is_some_and(|old| core::ptr::eq(old, m));
        // The mapping holds the entry's wiring of this very page already
        // (two faults wiring one page, or a page locked on fault that a
        // lock then fills): it takes no second one.
        let held = same && old_wired;
        let replaced = old_page.filter(|_| !same && old_wired);
        // A range locked on fault wires each page it maps.
        let wire = !held && (self.wire || replaced.is_some() || lk.lock_on_fault);
        let mapping_wired = wire || held;
        if wire {
            m.wire();
        }
        // A write dirties the page before it is mapped, so that the mapping
        // can be entered already modified.
        if self.access.contains(Prot::WRITE) {
            m.set_all_dirty();
            // Given up with MADV_FREE, and written again: kept.
            if m.flags().contains(PageFlags::DISCARDABLE) {
                m.clear_flags(PageFlags::DISCARDABLE);
            }
            // Rule 14: a swap object's page, dirtied, gives up its slot.
            if lk.object.kind() == ObjectKind::Swap
                && let Some(pager) = lk.object.lock().pager()
            {
                pager.forget(m.pindex(), m.pindex() + 1);
            }
        }
        match map.pmap().enter_accessed(self.va, m, prot, self.access & prot, mapping_wired) {
            Ok(flush) => flush.flush(),
            Err(PmapError::NoMemory) => {
                if wire {
                    m.unwire_noq();
                }
                return Next::RestartAfterMemoryWait;
            }
        }
        if let Some(old) = replaced {
            env.pm.unwire(old, crate::page::Queue::Active);
        }
        m.reference();
        // Neighbours are worth mapping when this page was already there or
        // came from a pager (file data read ahead); a zero-filled or copied
        // page says nothing about them (they are mapped, or do not exist).
        // Not where pages are wired as they are faulted in: a neighbour
        // mapped unwired there would break the entry's rule.
        if !self.stats.zero_filled && !self.stats.copied && !self.stats.moved && !lk.lock_on_fault {
            self.stats.prefaulted += prefault(lk, self.va, &map, prot);
        }
        Next::Continue
    }

    /// Step 5: the page goes on a queue unless wired, and is unbusied.
    #[inline(always)]
    fn finish(&mut self) {
        let m = self.m.take().unwrap();
        if !m.wired() {
            self.lookup.as_ref().unwrap().object.env().pm.activate(m);
        }
        m.xunbusy();
        self.first_m = None;
        self.object = None;
        self.depth = 0;
        self.sole_shadow = false;
        self.lookup = None;
    }
}

/// 8-byte words a zeroing or copying loop handles per round: the rounds'
/// bodies are written out ([`words_64`]), not left to the compiler's
/// unrolling, which unrolled the copy only 4 words deep.
const WORDS_PER_ROUND: usize = 64;

/// Calls `$f(i)` for `i` in `0..64`, written out straight.
macro_rules! words_64 {
    ($f:ident) => {
        words_64!(@8 $f, 0);
        words_64!(@8 $f, 8);
        words_64!(@8 $f, 16);
        words_64!(@8 $f, 24);
        words_64!(@8 $f, 32);
        words_64!(@8 $f, 40);
        words_64!(@8 $f, 48);
        words_64!(@8 $f, 56);
    };
    (@8 $f:ident, $b:expr) => {
        $f($b);
        $f($b + 1);
        $f($b + 2);
        $f($b + 3);
        $f($b + 4);
        $f($b + 5);
        $f($b + 6);
        $f($b + 7);
    };
}

/// Zeroes a page with plain 8-byte stores. Under software emulation the
/// choice matters several times over (kernel benchmarks, `kernel.zero.*`):
/// 8-byte stores 649 ns/page, `rep stosq` 830, `rep stosb` (what `memset`
/// becomes) 6341. Volatile stores keep the compiler from turning the loop
/// back into `memset`. Under TCG each round of the loop ends a translation
/// block: 8 rounds of 64 stores zeroed a page in a fault ~200 ns faster
/// than the 64 rounds of 8 that a flat loop became
/// (`kernel.zero_fill.step.fill` 978 -> 761 ns).
///
/// # Safety
/// `p` points to a writable, 8-aligned page.
pub unsafe fn zero_page(p: *mut u8) {
    for round in 0..PAGE_SIZE / 8 / WORDS_PER_ROUND {
        let q = (p as *mut u64).wrapping_add(round * WORDS_PER_ROUND);
        // SAFETY: word `i` of this round is within the page (caller's
        // contract), 8-aligned.
        let zero = |i: usize| unsafe { q.add(i).write_volatile(0) };
        words_64!(zero);
    }
}

/// Copies a page with 8-byte loads and stores, for the same reasons.
///
/// # Safety
/// `src` and `dst` point to distinct 8-aligned pages; `dst` is writable.
pub unsafe fn copy_page(src: *const u8, dst: *mut u8) {
    for round in 0..PAGE_SIZE / 8 / WORDS_PER_ROUND {
        let (s, d) =
            ((src as *const u64).wrapping_add(round * WORDS_PER_ROUND), (dst as *mut u64).wrapping_add(round * WORDS_PER_ROUND));
        // SAFETY: word `i` of this round is within both pages (caller's
        // contract), 8-aligned.
        let copy = |i: usize| unsafe { d.add(i).write_volatile(s.add(i).read_volatile()) };
        words_64!(copy);
    }
}

impl Lookup {
    fn object_env(&self) -> &crate::object::VmEnv {
        self.object.env()
    }
}

#[cfg(test)]
mod remap_tests;
#[cfg(test)]
mod tests;
