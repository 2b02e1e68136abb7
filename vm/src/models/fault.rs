//! Two faults on one index of a file's object (the fault path whole, over
//! the software pmap): the first finds nothing, puts a busy placeholder at
//! the index and reads it in with its read-ahead neighbour; the second
//! finds the page busy, lets go of everything, sleeps on it, and finds it
//! valid when it wakes. With the read failing, both get the error, the
//! read-ahead page is freed (rule 6) and nothing is left in limbo (rule 4).

extern crate std;

use alloc::sync::Arc;

use loom::thread;

use super::{Kept, check_clean, env};
use crate::fault::{FaultError, fault};
use crate::map::{Inherit, MapLock, VmMap};
use crate::object::{ObjectKind, Pager, PagerResult, VmObject};
use crate::page::Page;
use crate::pmap::Prot;
use crate::pmap::soft::SoftMachine;
use crate::sync::model::{Break, DEFAULT_PREEMPTIONS, check_with};

const P: u64 = crate::PAGE_SIZE as u64;

/// A file of four pages that reads in clusters of two (the page asked for
/// and the one after it); if `fail`, the read fails and leaves both
/// invalid, as the vnode and swap pagers leave what they could not read.
struct File {
    fail: bool,
}

impl Pager for File {
    fn has_page(&self, pindex: u64) -> Option<(u64, u64)> {
        (pindex < 4).then_some((0, 1))
    }

    fn get_page(&self, obj: &VmObject, page: &'static Page) -> PagerResult {
        self.get_pages(obj, &[page], 0)
    }

    fn get_pages(&self, _obj: &VmObject, pages: &[&'static Page], _req: usize) -> PagerResult {
        for p in pages {
            assert!(p.xbusied() && p.valid() == 0, "page {:#x} read in but not busy and invalid", p.phys());
            if !self.fail {
                p.set_all_valid();
            }
        }
        if self.fail { PagerResult::Error } else { PagerResult::Ok }
    }
}

/// Two threads read the first page of a mapped file at once.
fn two_faults_on_one_index(fail: bool) {
    let env = env(8);
    let free = env.pm.free_count();
    let machine: &'static SoftMachine = alloc::boxed::Box::leak(alloc::boxed::Box::new(SoftMachine::new()));
    let env = crate::object::VmEnv { mappings: machine, ..env };
    let pmap = machine.new_pmap();
    let map = Arc::new(MapLock::new(VmMap::new(P, 1 << 47, pmap, env)));
    let file = VmObject::new(ObjectKind::Vnode, 4, env);
    file.lock().set_pager(Arc::new(File { fail }));
    let a = map.lock().map(None, 4 * P, Prot::READ, Prot::READ, Inherit::Share, Some((file.clone(), 0)), false).unwrap();
    // Kept from being dropped while a failed check unwinds (see `Kept`).
    let kept = Kept::new((map.clone(), file.clone()));
    drop((map, file));
    let (map, file) = &*kept;
    let want = if fail { Err(FaultError::Io) } else { Ok(()) };
    let other = {
        let map = map.clone();
        thread::spawn(move || fault(&map, a, Prot::READ, false))
    };
    let mine = fault(map, a, Prot::READ, false);
    let theirs = other.join().unwrap();
    let restarts = |r: &Result<crate::fault::FaultStats, FaultError>| r.as_ref().map_or(0, |s| s.restarts);
    RESTARTS.with(|n| n.set(n.get() + restarts(&mine) + restarts(&theirs)));
    let (mine, theirs) = (mine.map(|_| ()), theirs.map(|_| ()));
    assert_eq!((mine, theirs), (want, want), "the faults' results");
    let v = crate::invariants::check(env.pm);
    assert!(v.is_empty(), "invariant violations after the faults: {v:?}");
    // Read in once, valid and idle (the second fault found the first's
    // page), with its read-ahead neighbour; after a failed read neither is
    // resident (rule 6). (Looked at with the lock let go again before any
    // check can fail.)
    let idle = |p: Option<&Page>| p.map(|p| p.all_valid() && !p.busied());
    let (page, ahead) = {
        let l = file.lock();
        (idle(l.lookup(0)), idle(l.lookup(1)))
    };
    let want = if fail { None } else { Some(true) };
    assert_eq!((page, ahead), (want, want), "page 0 and its read-ahead neighbour (Some(valid and idle), or gone)");
    map.lock().unmap(a, a + 4 * P).unwrap();
    drop(kept.release());
    env.pm.drain_cache();
    check_clean(env.pm, free);
}

std::thread_local! {
    /// Restarts of the faults over every execution of a model (loom runs
    /// them on the test's thread): a fault that found the placeholder busy
    /// slept and started again.
    static RESTARTS: core::cell::Cell<u32> = const { core::cell::Cell::new(0) };
}

#[test]
fn fault_two_on_one_index() {
    check_with("fault_two_on_one_index", DEFAULT_PREEMPTIONS, &[], || two_faults_on_one_index(false));
    assert!(RESTARTS.with(|n| n.get()) > 0, "no execution had a fault find the other's page busy");
}

#[test]
fn fault_two_on_one_index_read_fails() {
    check_with("fault_two_on_one_index_read_fails", DEFAULT_PREEMPTIONS, &[], || two_faults_on_one_index(true));
}

/// Broken: a fault that finds the page busy takes it anyway, as if the
/// placeholder were a page ready for use.
#[test]
#[should_panic(expected = "not exclusively busy")]
fn broken_fault_takes_a_busy_page() {
    check_with("broken_fault_takes_a_busy_page", DEFAULT_PREEMPTIONS, &[Break::FaultTakesBusyPage], || {
        two_faults_on_one_index(false)
    });
}

/// Broken: a failed read unbusies its read-ahead page instead of freeing
/// it (the vnode pager bug of rule 6): the page is in limbo.
#[test]
#[should_panic(expected = "invariant violations after the faults: [Limbo")]
fn broken_fault_read_ahead_left_in_limbo() {
    check_with("broken_fault_read_ahead_left_in_limbo", DEFAULT_PREEMPTIONS, &[Break::ReadAheadLeftInLimbo], || {
        two_faults_on_one_index(true)
    });
}
