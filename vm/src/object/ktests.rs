//! In-kernel tests of objects over the real page allocator and node zone.
//! The test runner checks afterwards that every page came back and that the
//! page invariants hold.

use alloc::sync::Arc;

use ktest::ktest;

use super::*;
use crate::failpoint::{Action, RADIX_NODE_ALLOC};
use crate::page::{PageFlags, Queue};

fn resident(obj: &Arc<VmObject>, pindex: u64, fill: u8) -> &'static Page {
    let pm = crate::global();
    let p = obj.lock().alloc_page(pindex, AllocFlags::empty()).unwrap();
    // SAFETY: the page was just allocated; the direct map covers it.
    unsafe { core::ptr::write_bytes(pm.page_addr(p).unwrap(), fill, crate::PAGE_SIZE) };
    p.set_all_valid();
    pm.deactivate(p);
    p.xunbusy();
    p
}

fn byte(p: &Page) -> u8 {
    // SAFETY: the page is allocated; the direct map covers it.
    unsafe { *crate::global().page_addr(p).unwrap() }
}

#[ktest]
fn shadow_chain_lookup() {
    let bottom = VmObject::new(ObjectKind::Anonymous, 1024, crate::kernel_env());
    resident(&bottom, 100, 1);
    resident(&bottom, 200, 2);
    let top = VmObject::shadow(bottom, 50, 512);
    resident(&top, 150, 3); // shadows bottom[200]
    let (_, p, depth) = lookup_chain(&top, 50).unwrap();
    assert_eq!((byte(p), depth), (1, 1));
    let (_, p, depth) = lookup_chain(&top, 150).unwrap();
    assert_eq!((byte(p), depth), (3, 0));
    assert!(lookup_chain(&top, 151).is_none());
    top.deallocate();
}

#[ktest]
fn collapse_in_kernel() {
    let backing = VmObject::new(ObjectKind::Anonymous, 4096, crate::kernel_env());
    for i in 0..64 {
        resident(&backing, i * 64, i as u8);
    }
    let shadow = VmObject::shadow(backing, 0, 4096);
    resident(&shadow, 64, 0xEE);
    collapse(&shadow).unwrap();
    let l = shadow.lock();
    assert_eq!(l.resident(), 64);
    assert_eq!(byte(l.lookup(64).unwrap()), 0xEE, "the shadow's own page wins");
    assert_eq!(byte(l.lookup(128).unwrap()), 2);
    assert!(l.backing().is_none());
    l.check().unwrap();
    drop(l);
    shadow.deallocate();
}

/// Truncating a file range: wired pages leave the object but live until
/// their last unwire, which frees them; the rest are freed at once.
#[ktest]
fn truncation_with_wired_pages() {
    let pm = crate::global();
    let obj = VmObject::new(ObjectKind::Vnode, 256, crate::kernel_env());
    for i in 0..32 {
        resident(&obj, i, i as u8);
    }
    let wired = obj.lock().lookup(20).unwrap();
    // Wired as a wiring fault does it, under the busy lock (rule 3).
    wired.xbusy();
    wired.wire();
    wired.xunbusy();
    obj.remove_range(16, 256);
    assert_eq!(obj.lock().resident(), 16);
    assert!(wired.object().is_none() && wired.wired() && !wired.flags().contains(PageFlags::FREE));
    assert_eq!(byte(wired), 20, "a wired page keeps its data after truncation");
    pm.unwire(wired, Queue::Active);
    assert!(wired.flags().contains(PageFlags::FREE));
    obj.deallocate();
}

/// Termination returns every page and every trie node.
#[ktest]
fn termination_frees_everything() {
    // Alone: other CPUs' idle zeroing and threads would move the counts.
    crate::run_alone(|| {
        let pm = crate::global();
        crate::drain_caches();
        let before = pm.free_count();
        let obj = VmObject::new(ObjectKind::Anonymous, 1 << 40, crate::kernel_env());
        let mut k = 1u64;
        for _ in 0..2000 {
            k = k.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let pindex = (k >> 24) % (1 << 40);
            let mut l = obj.lock();
            if l.lookup(pindex).is_none() {
                let p = l.alloc_page(pindex, AllocFlags::empty()).unwrap();
                p.set_all_valid();
                drop(l);
                pm.activate(p);
                p.xunbusy();
            }
        }
        assert!(crate::node_zone().in_use() > 0);
        obj.deallocate();
        crate::drain_caches();
        assert_eq!(crate::node_zone().in_use(), 0);
        assert_eq!(pm.free_count(), before);
    })
}

/// Seed 001 in the kernel: with the `radix.node_alloc` fail point firing on
/// every call, a move that needs a node fails cleanly and `replace` works.
#[ktest]
fn seed_001_replace_with_node_allocation_failing() {
    const X: u64 = 1 << 30;
    let pm = crate::global();
    let backing = VmObject::new(ObjectKind::Anonymous, 1 << 31, crate::kernel_env());
    let m = resident(&backing, X, 0xAA);
    let first = VmObject::shadow(backing.clone(), 0, 1 << 31);
    resident(&first, 0, 1);
    let p = first.lock().alloc_page(X, AllocFlags::empty()).unwrap();
    m.xbusy();
    RADIX_NODE_ALLOC.set(Action::Always);
    {
        let mut f = first.lock();
        let mut b = backing.lock();
        assert!(f.remove(p));
        assert_eq!(b.rename(m, &mut f, X), Err(ObjectError::NoMemory));
        f.insert(p, X).expect_err("re-inserting needs a node too");
    }
    pm.free(p);
    assert!(!first.is_locked() && !backing.is_locked());
    // Replace, against a fresh placeholder made while nodes can be had.
    RADIX_NODE_ALLOC.set(Action::Off);
    let p2 = first.lock().alloc_page(X, AllocFlags::empty()).unwrap();
    RADIX_NODE_ALLOC.set(Action::Always);
    assert!(backing.lock().remove(m));
    let old = first.lock().replace(m, p2);
    RADIX_NODE_ALLOC.set(Action::Off);
    pm.free(old);
    m.set_all_dirty();
    m.xunbusy();
    pm.activate(m);
    assert!(core::ptr::eq(first.lock().lookup(X).unwrap(), m));
    first.deallocate();
}
