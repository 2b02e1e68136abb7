//! The vnode pager's side of rule 8 under loom (`--cfg loom`; vm/MODELS.md):
//! a fault that holds a busy placeholder page and needs the file's lock to
//! read it, against a flush that holds the file's lock and waits for the
//! page. The pager only tries the lock on the fault's behalf and answers
//! AGAIN; the fault lets go of everything, the flush finds the page gone,
//! and both finish, whatever the order.
#![cfg(loom)]

mod common;

use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use loom::thread;
use pager::block::RamDisk;
use pager::vnode::Mount;
use vm::fault::fault;
use vm::map::{Inherit, MapLock, VmMap};
use vm::object::VmEnv;
use vm::pmap::Prot;
use vm::pmap::soft::SoftMachine;
use vm::sync::model::{Break, DEFAULT_PREEMPTIONS, check_with};

const P: u64 = vm::PAGE_SIZE as u64;
const PAGES: u64 = 8;

/// An image with one two-page file, made once (mke2fs takes a moment);
/// each execution mounts a copy.
fn image() -> Vec<u8> {
    static IMAGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let mut model = common::Model::new();
            model.insert("/file".into(), common::pattern(2 * P as usize, 3));
            common::make_image(&model, 4096, 1)
        })
        .clone()
}

/// A VM of `PAGES` frames for one execution, with contents (one block of
/// host memory per host thread, reused: loom runs executions one after
/// another), and the software MMU.
fn env(machine: &'static SoftMachine) -> VmEnv {
    use vm::failpoint::FailPoint;
    use vm::phys::{PhysMem, PhysRange};
    const BASE: u64 = 1 << 20;
    std::thread_local! {
        static MEMORY: usize = Box::leak(vec![0u8; (PAGES * P) as usize].into_boxed_slice()).as_mut_ptr() as usize;
    }
    let range = PhysRange { start: BASE, end: BASE + PAGES * P };
    let storage = Box::leak(Box::new_uninit_slice(PAGES as usize));
    let direct_map = MEMORY.with(|&m| m.wrapping_sub(BASE as usize));
    let pm: &'static PhysMem = Box::leak(Box::new(PhysMem::new(&[range], storage, Some(direct_map)).unwrap()));
    pm.add_free_range(range);
    static NODES: FailPoint = FailPoint::new("model.radix.node_alloc");
    static ALLOCS: FailPoint = FailPoint::new("model.page.alloc");
    let node_size = vm::radix::Radix::<&'static vm::page::Page>::NODE_SIZE;
    let zone = Box::leak(Box::new(vm::zone::NodeZone::new(node_size, &common::HOST_PAGES, &NODES)));
    VmEnv { pm, zone, page_alloc: &ALLOCS, mappings: machine }
}

/// A fault reading the file's first page against a flush and eviction of
/// the file.
fn fault_against_flush() {
    let machine: &'static SoftMachine = Box::leak(Box::new(SoftMachine::new()));
    let env = env(machine);
    let free = env.pm.free_count();
    let mount = Mount::new(Box::new(Arc::new(RamDisk::from_bytes(image()))), env, || 1_700_000_000).unwrap();
    mount.set_read_ahead(false);
    let v = {
        let mut fs = mount.fs.lock();
        let ino = fs.lookup("/file").unwrap();
        let size = fs.stat(ino).unwrap().size;
        drop(fs);
        mount.vnode(ino, size).unwrap()
    };
    let pmap = machine.new_pmap();
    let map = Arc::new(MapLock::new(VmMap::new(P, 1 << 47, pmap, env)));
    v.object.reference();
    let a = map.lock().map(None, 2 * P, Prot::READ, Prot::ALL, Inherit::Share, Some((v.object.clone(), 0)), false).unwrap();
    // Kept from being dropped while a failed check unwinds: the drops take
    // loom's locks, which loom cannot schedule then.
    let kept = ManuallyDrop::new((mount, v, map.clone()));
    let faulter = thread::spawn(move || fault(&map, a, Prot::READ, false).map(|_| ()));
    let flushed = kept.1.flush_and_evict(0, u64::MAX);
    let faulted = faulter.join().unwrap();
    assert_eq!((faulted, flushed.map(|_| ())), (Ok(()), Ok(())), "the fault and the flush both finish");
    let v = vm::invariants::check(env.pm);
    assert!(v.is_empty(), "invariant violations: {v:?}");
    AGAIN.with(|n| n.set(n.get() + kept.0.stats.again.load(Ordering::Relaxed)));
    let (mount, vnode, map) = ManuallyDrop::into_inner(kept);
    map.lock().unmap(a, a + 2 * P).unwrap();
    drop((map, vnode));
    mount.drop_unused();
    drop(mount);
    env.pm.drain_cache();
    assert_eq!(env.pm.free_count(), free, "pages leaked or freed twice");
}

std::thread_local! {
    /// Page-ins answered AGAIN, over every execution of the model (loom
    /// runs them on the test's thread).
    static AGAIN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

#[test]
fn vnode_fault_try_lock_against_a_flush() {
    check_with("vnode_fault_try_lock_against_a_flush", DEFAULT_PREEMPTIONS, &[], fault_against_flush);
    // The interleavings where the race is run were among them.
    assert!(AGAIN.with(|n| n.get()) > 0, "no execution had the fault meet the flush's lock");
}

/// Broken: the pager waits for the file's lock with the fault's page busy;
/// the flush, holding the lock, waits for the page.
#[test]
#[should_panic(expected = "deadlock")]
fn broken_vnode_fault_waits_for_the_file_lock() {
    check_with(
        "broken_vnode_fault_waits_for_the_file_lock",
        DEFAULT_PREEMPTIONS,
        &[Break::PagerWaitsForFileLock],
        fault_against_flush,
    );
}
