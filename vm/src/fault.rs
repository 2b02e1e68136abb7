//! The page-fault handler, as a state machine in the manner of FreeBSD's
//! `vm_fault.c` (a `FaultState`, named steps, a status enum, one clean-up).
//!
//! ## A word on page faults
//!
//! ```text
//!   fault(va, access)
//!     lookup ─── no entry / protection ──────────────────────────► error
//!       │ first object, index, protection
//!       ▼
//!     for object in chain (first object → backing → ...):
//!       page resident? ── busy ──► release all, wait, restart
//!         │ valid ─────────────────────────────────┐
//!       object has a pager? ── get_pages: OK ──────┤
//!         │   ERROR ► error · AGAIN ► restart · BAD ► error
//!       next object                                  │
//!     end of chain: zero-fill the first object's page│
//!                                                    ▼
//!     page below the first object and a write? ─► copy (or move, with
//!                                                    `replace`, rule 7)
//!     enter in the pmap ── no memory ─► release all, wait, restart (rule 12)
//!     prefault neighbours, unbusy, queue
//! ```
//!
//! Preconditions and outcomes of each step are asserted where they hold:
//! "page found: exclusively busy, object unlocked". Locks are never held
//! across a wait: every wait first releases everything (`release`) and the
//! fault restarts from the lookup.
//!
//! Errors are statuses ([`FaultError`]), never panics: the caller turns them
//! into EFAULT, a signal, or (for the kernel itself) a panic with a report.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::sync::Mutex;

use crate::map::{Lookup, MapError, VmMap};
use crate::object::{ObjectError, ObjectKind, VmObject};
use crate::page::{Page, PageFlags, busy_wait};
use crate::phys::AllocFlags;
use crate::pmap::{PmapError, Prot};
use crate::{PAGE_SIZE, vm_wait};

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

/// Time spent in each step of faults while a clock is installed
/// ([`set_step_clock`]): for the kernel's benchmark split. (A)
pub struct StepTimes {
    pub lookup: AtomicU64,
    pub find_page: AtomicU64,
    pub cow: AtomicU64,
    pub enter: AtomicU64,
    pub finish: AtomicU64,
    /// Of `find_page` and `cow`: zeroing and copying page contents.
    pub fill: AtomicU64,
}

pub static STEP_TIMES: StepTimes = StepTimes {
    lookup: AtomicU64::new(0),
    find_page: AtomicU64::new(0),
    cow: AtomicU64::new(0),
    enter: AtomicU64::new(0),
    finish: AtomicU64::new(0),
    fill: AtomicU64::new(0),
};

/// The clock that times the steps, as a `fn() -> u64` address; 0 when step
/// timing is off, which it is unless a benchmark asks for it: reading a clock
/// between steps is not free (under emulation `rdtsc` is a helper call) and
/// would be paid by every fault. (A)
static STEP_CLOCK: AtomicUsize = AtomicUsize::new(0);

/// Starts timing the fault steps into [`STEP_TIMES`] with `clock` (e.g. the
/// TSC), or stops with `None`.
pub fn set_step_clock(clock: Option<fn() -> u64>) {
    STEP_CLOCK.store(clock.map_or(0, |c| c as usize), Ordering::Relaxed);
}

/// The step clock, if step timing is on.
pub fn step_clock() -> Option<fn() -> u64> {
    match STEP_CLOCK.load(Ordering::Relaxed) {
        0 => None,
        // SAFETY: non-zero values are `fn() -> u64` pointers stored by
        // `set_step_clock`.
        c => Some(unsafe { core::mem::transmute::<usize, fn() -> u64>(c) }),
    }
}

/// Runs `f`, adding its time to [`StepTimes::fill`] if steps are timed.
fn timed_fill(f: impl FnOnce()) {
    match step_clock() {
        None => f(),
        Some(clock) => {
            let t0 = clock();
            f();
            STEP_TIMES.fill.fetch_add(clock().wrapping_sub(t0), Ordering::Relaxed);
        }
    }
}

/// Adds the time since `*since` to `acc` and restarts the lap.
fn lap(clock: fn() -> u64, since: &mut u64, acc: &AtomicU64) {
    let now = clock();
    acc.fetch_add(now.wrapping_sub(*since), Ordering::Relaxed);
    *since = now;
}

/// A step's verdict.
enum Next {
    /// Go on to the next step.
    Continue,
    /// Release everything and start again from the lookup.
    Restart,
    /// Release everything, wait for memory, start again.
    RestartAfterMemoryWait,
    /// Release everything, wait a moment for the pager's resource (its
    /// vnode lock, rule 8), start again. Waiting only after the release
    /// matters: a thread that holds the lock may be waiting for our busy
    /// pages, and must find them gone when it runs.
    RestartAfterPagerWait,
    /// Stop with an error (after releasing everything).
    Fail(FaultError),
}

/// The state of one fault.
struct FaultState<'a> {
    // The fault's parameters.
    map: &'a Mutex<VmMap>,
    va: u64,
    access: Prot,
    wire: bool,
    // What the map lookup said.
    lookup: Option<Lookup>,
    // The first object and its placeholder page (exclusively busy, invalid),
    // allocated when the first object has no page at the index.
    first_m: Option<&'static Page>,
    // The page found or made (exclusively busy), and its object if that is
    // below the first object (`None`: the first object).
    m: Option<&'static Page>,
    m_object: Option<Arc<VmObject>>,
    // Whether `m_object` is the first object's own backing object with no
    // other shadow: read by `find_page` under that object's lock, for the
    // copy step's choice between a copy and a move.
    m_object_sole_shadow: bool,
    stats: FaultStats,
}

/// Handles a fault at `va` for `access` in `map`. With `wire`, the page is
/// also wired (for `mlock`; the map entry must be wired).
pub fn fault(map: &Mutex<VmMap>, va: u64, access: Prot, wire: bool) -> Result<FaultStats, FaultError> {
    let mut fs = FaultState {
        map,
        va: va & !(PAGE_SIZE as u64 - 1),
        access,
        wire,
        lookup: None,
        first_m: None,
        m: None,
        m_object: None,
        m_object_sole_shadow: false,
        stats: FaultStats::default(),
    };
    let mut memory_waits = 0;
    loop {
        let verdict = fs.run();
        match verdict {
            Next::Continue => return Ok(fs.stats),
            Next::Restart => {
                fs.release();
                fs.stats.restarts += 1;
            }
            Next::RestartAfterMemoryWait => {
                fs.release();
                memory_waits += 1;
                if memory_waits > MEMORY_RETRIES || !vm_wait() {
                    return Err(FaultError::NoMemory);
                }
                fs.stats.restarts += 1;
            }
            Next::RestartAfterPagerWait => {
                fs.release();
                if !vm_wait() {
                    return Err(FaultError::NoMemory);
                }
                fs.stats.restarts += 1;
            }
            Next::Fail(e) => {
                fs.release();
                return Err(e);
            }
        }
    }
}

macro_rules! step {
    ($e:expr) => {
        match $e {
            Next::Continue => {}
            other => return other,
        }
    };
}

impl FaultState<'_> {
    /// One attempt: every step in order; with a step clock installed, each
    /// step's time is added to [`STEP_TIMES`] (an attempt that restarts is
    /// counted up to the step that restarted).
    ///
    /// The steps are inlined here, one call site each: under emulation a
    /// call and its return each cost a lookup of translated code, and a
    /// fault that made one per step spent more on them than on the steps'
    /// own work (`kernel.cost.call_ret` against `kernel.cost.straight_x10`).
    fn run(&mut self) -> Next {
        let clock = step_clock();
        let t = &STEP_TIMES;
        let mut since = clock.map_or(0, |c| c());
        macro_rules! timed {
            ($verdict:expr, $acc:expr) => {{
                let verdict = $verdict;
                if let Some(c) = clock {
                    lap(c, &mut since, $acc);
                }
                step!(verdict);
            }};
        }
        timed!(self.lookup(), &t.lookup);
        timed!(self.find_page(), &t.find_page);
        // Only a page from below the first object has a copy step.
        if self.m_object.is_some() {
            timed!(self.cow(), &t.cow);
        }
        timed!(self.enter(), &t.enter);
        self.finish();
        if let Some(c) = clock {
            lap(c, &mut since, &t.finish);
        }
        Next::Continue
    }

    /// Releases every page the fault holds: an invalid placeholder is freed
    /// (rule 5), any other page is unbusied and left on a queue (rule 4).
    /// Only a fault that restarts or fails has anything to release.
    #[cold]
    #[inline(never)]
    fn release(&mut self) {
        let first_m = self.first_m.take();
        let m = self.m.take();
        if let Some(lk) = self.lookup.take() {
            let pm = lk.object_env().pm;
            if let Some(m) = m.filter(|m| !first_m.is_some_and(|f| core::ptr::eq(f, *m))) {
                m.xunbusy();
                pm.requeue(m);
            }
            if let Some(f) = first_m {
                if f.valid() == 0 {
                    lk.object.lock().free_invalid(f);
                } else {
                    f.xunbusy();
                    pm.requeue(f);
                }
            }
        }
        self.m_object = None;
        self.m_object_sole_shadow = false;
    }

    /// Step 1: the map entry, the first object and the index.
    #[inline(always)]
    fn lookup(&mut self) -> Next {
        match self.map.lock().lookup(self.va, self.access) {
            Ok(l) => {
                self.lookup = Some(l);
                Next::Continue
            }
            Err(MapError::NoMemory) => Next::RestartAfterMemoryWait,
            Err(e) => Next::Fail(e.into()),
        }
    }

    /// Step 2: walk the chain for the page; page in from a pager or zero-fill
    /// at the end. Leaves `m` exclusively busy and valid, in `m_object`.
    #[inline(always)]
    fn find_page(&mut self) -> Next {
        debug_assert!(self.m.is_none() && self.first_m.is_none() && self.m_object.is_none());
        let lk = self.lookup.as_ref().unwrap();
        // The object searched, when it is below the first one: the first
        // object is only borrowed from the lookup.
        let mut below: Option<Arc<VmObject>> = None;
        let mut pindex = lk.pindex;
        let mut depth = 0;
        loop {
            let object = below.as_ref().unwrap_or(&lk.object);
            let is_first = below.is_none();
            let mut l = object.lock();
            // For the copy step: is this the first object's own backing
            // object, with no other shadow? (Read under the lock, here.)
            let sole_shadow = depth == 1 && l.shadow_count() == 1;
            if l.flags().contains(crate::object::ObjectFlags::DEAD) {
                return Next::Fail(FaultError::NoEntry);
            }
            let pager = l.pager();
            // The first object gets a page at the index if it has none (a
            // placeholder for a copy or a zero fill), and so does an object
            // with a pager (to read into): looked up and allocated with one
            // walk of the trie.
            let found = if is_first || pager.is_some() {
                // A page of a first object with no pager and nothing below
                // it can only be zero-filled: one from the zero pool, if
                // there is one, is zero already.
                let flags =
                    if is_first && pager.is_none() && !l.has_backing() { AllocFlags::PREFER_ZERO } else { AllocFlags::empty() };
                match l.lookup_or_alloc(pindex, flags) {
                    Ok(found) => Some(found),
                    Err(ObjectError::NoMemory) => return Next::RestartAfterMemoryWait,
                    Err(_) => return Next::Restart,
                }
            } else {
                l.lookup(pindex).map(|m| (m, false))
            };
            match found {
                Some((m, false)) => {
                    if !m.try_xbusy() {
                        drop(l);
                        busy_wait(m);
                        return Next::Restart;
                    }
                    if m.all_valid() {
                        self.m_object_sole_shadow = sole_shadow;
                        drop(l);
                        self.m = Some(m);
                        self.m_object = below;
                        return Next::Continue;
                    }
                    // An invalid page left by a failed read: start it over.
                    l.free_invalid(m);
                    return Next::Restart;
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
                            self.m_object = below;
                            self.m_object_sole_shadow = sole_shadow;
                        }
                        return verdict;
                    }
                    if !is_first {
                        // A pager object without the page: continue down.
                        l.free_invalid(m);
                    }
                }
                None => {}
            }
            let next = l.backing();
            drop(l);
            match next {
                Some((b, off)) => {
                    pindex += off;
                    below = Some(b);
                    depth += 1;
                }
                None => break,
            }
        }
        // End of the chain: zero-fill the placeholder in the first object.
        let m = self.first_m.expect("the first object always gets a placeholder");
        if !m.flags().contains(PageFlags::ZERO) {
            let p = lk.object.env().pm.page_addr(m).expect("page contents not accessible");
            // SAFETY: the page is ours (exclusively busy, just allocated) and
            // the direct map covers it.
            timed_fill(|| unsafe { zero_page(p) });
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
        let Some(object) = self.m_object.as_ref() else {
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
        let sole = self.m_object_sole_shadow && object.ref_count() == 1 && !m.wired();
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
            timed_fill(|| unsafe { copy_page(src, dst) });
            first_m.set_all_valid();
            m.xunbusy();
            env.pm.requeue(m);
            first_m.set_all_dirty();
            self.stats.copied = true;
            self.m = Some(first_m);
        }
        self.first_m = None;
        self.m_object = None;
        Next::Continue
    }

    /// Step 4: map the page. Rechecks the map first (the lock was dropped),
    /// and restarts if it changed. `enter` may fail for want of a page table
    /// (rule 12): release, wait, retry.
    #[inline(always)]
    fn enter(&mut self) -> Next {
        let lk = self.lookup.as_ref().unwrap();
        let m = self.m.unwrap();
        let map = self.map.lock();
        if map.timestamp != lk.timestamp {
            return Next::Restart;
        }
        let mut prot = lk.prot;
        if self.m_object.is_some() {
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
        let (old_page, old_wired) = if lk.wired && !self.wire {
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
        let replaced = old_page.filter(|_| !same && old_wired);
        let wire = self.wire || replaced.is_some();
        let mapping_wired = wire || (same && old_wired);
        if wire {
            m.wire();
        }
        // A write dirties the page before it is mapped, so that the mapping
        // can be entered already modified.
        if self.access.contains(Prot::WRITE) {
            m.set_all_dirty();
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
        if !self.stats.zero_filled && !self.stats.copied && !self.stats.moved {
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
        self.m_object = None;
        self.lookup = None;
    }
}

/// Step 2's read from a pager: `m`, just allocated at `pindex` in `object`
/// (locked: `l`), is read in by `pager` together with up to `behind` and
/// `ahead` neighbours.
///
/// Out of line and cold: paging in is slow by nature, and its code is kept
/// off the path of the faults that find or make a page.
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn page_in(
    mut l: crate::object::Locked<'_>,
    object: &Arc<VmObject>,
    m: &'static Page,
    pindex: u64,
    is_first: bool,
    pager: Arc<dyn crate::object::Pager>,
    (behind, ahead): (u64, u64),
    stats: &mut FaultStats,
) -> Next {
    // Read-behind and read-ahead: the neighbours the pager can read in the
    // same I/O, up to the first resident page either way; each is optional
    // (no page, no read-ahead).
    let mut cluster: Vec<&'static Page> = Vec::new();
    let mut req = 0;
    if behind + ahead > 0 && cluster.try_reserve((behind + ahead + 1) as usize).is_ok() {
        // A page for index `i` if none is resident there (and one can be had).
        let mut vacant = |i: u64| if l.lookup(i).is_some() { None } else { l.alloc_page(i, AllocFlags::empty()).ok() };
        cluster.extend((1..=behind.min(pindex)).map_while(|i| vacant(pindex - i)));
        cluster.reverse();
        req = cluster.len();
        cluster.push(m);
        cluster.extend((1..=ahead).map_while(|i| vacant(pindex + i)));
    }
    object.pip_add();
    drop(l);
    let r = if cluster.len() > 1 { pager.get_pages(object, &cluster, req) } else { pager.get_page(object, m) };
    object.pip_wakeup();
    // The neighbours: valid ones are unbusied and queued, invalid ones freed
    // (rule 6), whatever the result.
    if cluster.len() > 1 {
        let env = *object.env();
        for (i, &p) in cluster.iter().enumerate() {
            if i == req {
                continue;
            }
            if p.valid() != 0 {
                env.pm.readahead_finish(p);
                stats.read_ahead += 1;
            } else {
                object.lock().free_invalid(p);
            }
        }
    }
    match r {
        PagerResult::Ok => {
            assert!(m.all_valid(), "pager said OK but page {:#x} is not valid", m.phys());
            stats.paged_in = true;
            Next::Continue
        }
        // The page is invalid: freed by rule 5 (via release, or here for a
        // page below the first object).
        PagerResult::Error | PagerResult::Bad | PagerResult::Again => {
            if !is_first {
                object.lock().free_invalid(m);
            }
            match r {
                PagerResult::Error => Next::Fail(FaultError::Io),
                PagerResult::Bad => Next::Fail(FaultError::Bad),
                _ => Next::RestartAfterPagerWait,
            }
        }
    }
}

/// Maps resident, valid, idle neighbours of the faulting page in the first
/// object, so that a sequential walk does not fault on every page. Returns
/// how many it mapped.
#[inline(never)]
fn prefault(lk: &Lookup, va_fault: u64, map: &VmMap, prot: Prot) -> u32 {
    let page = PAGE_SIZE as u64;
    let lo = va_fault.saturating_sub(PREFAULT * page).max(lk.entry_start);
    let hi = (va_fault + (PREFAULT + 1) * page).min(lk.entry_end);
    // Private mappings get neighbours read-only: a write must still fault
    // to keep the dirty bits exact.
    let prot = if lk.cow { prot - Prot::WRITE } else { prot };
    // Page index of the entry's start, and the window's indices.
    let base = lk.pindex - (va_fault - lk.entry_start) / page;
    let (first, last) = (base + (lo - lk.entry_start) / page, base + (hi - lk.entry_start) / page);
    let fault_pindex = lk.pindex;
    let mut n = 0;
    // Only resident pages are candidates: one walk of the trie over the
    // window, none of the page tables unless there is something to map.
    lk.object.lock().for_each_in(first, last, |p| {
        if p.pindex() == fault_pindex || !p.all_valid() {
            return;
        }
        let va = lk.entry_start + (p.pindex() - base) * page;
        if !p.try_sbusy() {
            return;
        }
        // Only where nothing is mapped yet: one pmap call for the check and
        // the mapping.
        if map.pmap().enter_quick(va, p, prot) == Ok(true) {
            n += 1;
        }
        p.sunbusy();
    });
    n
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

/// Wires `[start, end)` of `map` (mlock): marks the entries wired and faults
/// every page in, wired. A private mapping that can be written is copied to
/// its own anonymous memory now (rule 10), so a later write never has to
/// replace a wired page.
pub fn wire(map: &Mutex<VmMap>, start: u64, end: u64) -> Result<(), FaultError> {
    let newly = map.lock().wire_entries(start, end)?;
    for (s, e) in newly {
        let mut va = s;
        while va < e {
            let prot = map.lock().entry(va).map(|e| e.prot).unwrap_or(Prot::READ);
            let access = if prot.contains(Prot::WRITE) { Prot::WRITE } else { Prot::READ };
            if let Err(err) = fault(map, va, access, true) {
                // Undo this call's wirings of the range.
                let _ = map.lock().unwire(start, end);
                return Err(err);
            }
            va += PAGE_SIZE as u64;
        }
    }
    Ok(())
}

impl Lookup {
    fn object_env(&self) -> &crate::object::VmEnv {
        self.object.env()
    }
}

#[cfg(test)]
mod tests;
