//! Host tests of the pageout passes, over objects whose pages are never
//! mapped (the hardware bits are the page's own flags and dirty bits here;
//! the kernel's tests run the same passes over real mappings).

extern crate std;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::*;
use crate::invariants::{self, Violation};
use crate::object::tests::{make_resident, test_env};
use crate::object::{PagerResult, VmObject};

/// A pager that records its writes and can be told to fail them.
#[derive(Default)]
struct RecordingPager {
    writes: Mutex<Vec<(u64, usize)>>,
    held: Mutex<Vec<u64>>,
    fail: AtomicBool,
}

impl Pager for RecordingPager {
    fn has_page(&self, pindex: u64) -> Option<(u64, u64)> {
        self.held.lock().unwrap().contains(&pindex).then_some((0, 0))
    }
    fn get_page(&self, _: &VmObject, _: &'static Page) -> PagerResult {
        PagerResult::Error
    }
    fn put_pages(&self, _: &VmObject, pages: &[&'static Page]) -> usize {
        if self.fail.load(Ordering::Relaxed) {
            return 0;
        }
        self.writes.lock().unwrap().push((pages[0].pindex(), pages.len()));
        self.held.lock().unwrap().extend(pages.iter().map(|p| p.pindex()));
        pages.len()
    }
}

fn no_swap() -> Option<Arc<dyn Pager>> {
    None
}

/// `n` resident, valid pages at indices 0..n, on the inactive queue.
fn resident(obj: &Arc<VmObject>, n: u64) -> Vec<&'static Page> {
    (0..n).map(|i| make_resident(obj, i, i as u8)).collect()
}

/// A file-like object of `size` pages with a recording pager.
fn vnode_object(t: &crate::object::tests::TestEnv, size: u64) -> (Arc<VmObject>, Arc<RecordingPager>) {
    let obj = VmObject::new(crate::object::ObjectKind::Vnode, size, t.env);
    let pager = Arc::new(RecordingPager::default());
    obj.lock().set_pager(pager.clone());
    (obj, pager)
}

/// Dirties `pages` and puts them in the laundry.
fn to_laundry(pm: &PhysMem, pages: &[&'static Page]) {
    for p in pages {
        p.set_all_dirty();
        pm.launder(p);
    }
}

fn assert_clean(pm: &PhysMem) {
    let v = invariants::check(pm);
    assert!(v.is_empty(), "invariant violations: {v:?}");
}

#[test]
fn inactive_pass_frees_clean_pages_and_launders_dirty_ones() {
    let t = test_env();
    let pm = t.env.pm;
    let start = pm.free_count();
    let (obj, _) = vnode_object(&t, 8);
    let pages = resident(&obj, 8);
    for p in &pages[0..4] {
        p.set_all_dirty();
    }
    pages[4].reference();
    let st = scan_inactive(pm, t.env.mappings, 100);
    assert_eq!((st.freed, st.to_laundry, st.reactivated), (3, 4, 1), "{st:?}");
    assert_eq!(pm.queue_count(Queue::Laundry), 4);
    assert_eq!(pm.queue_count(Queue::Active), 1);
    assert_eq!(obj.lock().resident(), 5);
    assert_clean(pm);
    // The active page ages into the inactive queue on the next look.
    assert_eq!(scan_active(pm, t.env.mappings, 10).deactivated, 1);
    assert_eq!(pm.queue_count(Queue::Inactive), 1);
    obj.deallocate();
    assert_eq!(pm.free_count(), start);
}

#[test]
fn laundering_writes_clusters_and_frees_pages_when_written() {
    let t = test_env();
    let pm = t.env.pm;
    let start = pm.free_count();
    let (obj, pager) = vnode_object(&t, 64);
    to_laundry(pm, &resident(&obj, 40));
    let st = scan_laundry(pm, t.env.mappings, 100, &no_swap);
    assert_eq!((st.written, st.freed, st.write_failed), (40, 40, 0), "{st:?}");
    let writes = pager.writes.lock().unwrap().clone();
    assert_eq!(writes.iter().map(|w| w.1).sum::<usize>(), 40);
    assert!(writes.iter().all(|w| w.1 <= CLUSTER), "{writes:?}");
    assert_eq!(writes.len(), 2, "40 consecutive dirty pages in two clusters: {writes:?}");
    assert_eq!(obj.lock().resident(), 0, "written pages marked to be freed were freed (rule 16)");
    assert_clean(pm);
    obj.deallocate();
    assert_eq!(pm.free_count(), start);
}

#[test]
fn failed_writes_keep_pages_dirty_and_resident() {
    let t = test_env();
    let pm = t.env.pm;
    let (obj, pager) = vnode_object(&t, 8);
    pager.fail.store(true, Ordering::Relaxed);
    let pages = resident(&obj, 8);
    to_laundry(pm, &pages);
    let st = scan_laundry(pm, t.env.mappings, 100, &no_swap);
    assert_eq!((st.written, st.freed, st.write_failed), (0, 0, 8), "{st:?}");
    for p in &pages {
        assert!(p.dirty() != 0 && p.object().is_some(), "page {}: data lost", p.pindex());
        assert!(!p.flags().contains(PageFlags::FREE_AFTER_WRITE), "a failed write left the free-after-write mark (rule 16)");
        assert_eq!(p.queue(), Queue::Active);
        assert!(!p.busied());
    }
    assert_clean(pm);
    // The disk works again: the next pass writes them.
    pager.fail.store(false, Ordering::Relaxed);
    for p in &pages {
        pm.launder(p);
    }
    assert_eq!(scan_laundry(pm, t.env.mappings, 100, &no_swap).written, 8);
    assert_clean(pm);
    obj.deallocate();
}

#[test]
fn an_anonymous_object_becomes_a_swap_object_at_its_first_page_out() {
    let t = test_env();
    let pm = t.env.pm;
    let start = pm.free_count();
    let obj = VmObject::new(crate::object::ObjectKind::Anonymous, 8, t.env);
    to_laundry(pm, &resident(&obj, 8));
    // No swap: the pages wait in the laundry, dirty.
    let st = scan_laundry(pm, t.env.mappings, 100, &no_swap);
    assert_eq!((st.written, st.no_swap), (0, 8), "{st:?}");
    assert_eq!(obj.kind(), crate::object::ObjectKind::Anonymous);
    assert_eq!(pm.queue_count(Queue::Laundry), 8);
    // With swap: converted, written, freed; the pager holds every page.
    let pager = Arc::new(RecordingPager::default());
    let p2 = pager.clone();
    let make = move || -> Option<Arc<dyn Pager>> { Some(p2.clone()) };
    let st = scan_laundry(pm, t.env.mappings, 100, &make);
    assert_eq!((st.written, st.freed), (8, 8), "{st:?}");
    assert_eq!(obj.kind(), crate::object::ObjectKind::Swap);
    assert_eq!(pager.held.lock().unwrap().len(), 8);
    assert!(invariants::check_object(&obj).is_empty());
    assert_clean(pm);
    obj.deallocate();
    assert_eq!(pm.free_count(), start);
}

/// A swap object whose page `3` is resident and clean while its pager no
/// longer holds a copy of it: rule 14 broken on purpose.
fn swap_object_with_a_clean_page_without_slot(t: &crate::object::tests::TestEnv) -> (Arc<VmObject>, &'static Page) {
    let pm = t.env.pm;
    let obj = VmObject::new(crate::object::ObjectKind::Anonymous, 8, t.env);
    to_laundry(pm, &resident(&obj, 8));
    let pager = Arc::new(RecordingPager::default());
    let p2 = pager.clone();
    let make = move || -> Option<Arc<dyn Pager>> { Some(p2.clone()) };
    assert_eq!(scan_laundry(pm, t.env.mappings, 100, &make).freed, 8);
    assert_eq!(obj.kind(), crate::object::ObjectKind::Swap);
    // Read back clean: its copy in the pager is what makes it freeable.
    let page = make_resident(&obj, 3, 3);
    assert!(invariants::check_object(&obj).is_empty(), "a clean page with its slot is fine");
    pager.held.lock().unwrap().retain(|&i| i != 3);
    (obj, page)
}

/// Rule 14, as the invariant checker sees it: a clean swap-object page whose
/// slot is gone is reported, and dirtying it (so that it needs no slot)
/// makes the object sound again.
#[test]
fn a_clean_swap_page_without_a_slot_is_reported() {
    let t = test_env();
    let pm = t.env.pm;
    let start = pm.free_count();
    let (obj, page) = swap_object_with_a_clean_page_without_slot(&t);
    assert_eq!(invariants::check_object(&obj), [Violation::CleanWithoutSlot { page: page.phys(), pindex: 3 }]);
    page.xbusy();
    page.set_all_dirty();
    page.xunbusy();
    assert!(invariants::check_object(&obj).is_empty());
    assert_clean(pm);
    obj.deallocate();
    assert_eq!(pm.free_count(), start);
}

/// Rule 14, as the pageout daemon enforces it: it refuses to free a clean
/// swap-object page that has no copy in the pager, since its data would be
/// lost.
#[test]
#[should_panic(expected = "with no swap slot (rule 14)")]
fn the_daemon_never_frees_a_clean_swap_page_without_a_slot() {
    let t = test_env();
    let (_obj, _page) = swap_object_with_a_clean_page_without_slot(&t);
    scan_inactive(t.env.pm, t.env.mappings, 100);
}
