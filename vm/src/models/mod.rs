//! The page protocol, model-checked: each model runs the protocol's own
//! code (pages, busy, wiring, the allocator, objects, the fault's steps) in
//! two or three threads under loom, which runs it once for every
//! interleaving of their atomic operations and locks (within a bound on
//! preemptions), and checks after each execution what `vm/RULES.md`
//! promises. Each model has a broken twin: the same threads with one line
//! of the protocol switched off ([`crate::sync::model::Break`]), and a test
//! that loom finds the failure; a model that cannot fail checks nothing.
//!
//! Built and run only with `--cfg loom` (`./run-qemu.sh models`, or
//! `vm/MODELS.md`).

extern crate std;

mod allocator;
mod batch;
mod busy;
mod cow;
mod fault;
mod laundry;
mod pageout;
mod wire;

use std::sync::Arc;
use std::vec::Vec;

use crate::page::Page;

/// `n` page records for one execution, on the heap (loom's atomics can
/// only be made inside a model).
fn pages(n: usize) -> Arc<Vec<Page>> {
    Arc::new((0..n).map(|i| Page::new(BASE + (i as u64) * crate::PAGE_SIZE as u64, 0)).collect())
}

/// The VM's environment for one execution: a page array of `n` frames,
/// all free, with no direct map (the models look at records, not
/// contents), a zone of trie nodes on the host heap, and no pmap. Leaked,
/// as the kernel's is static: a few hundred bytes an execution.
fn env(n: u64) -> crate::object::VmEnv {
    env_at(n, None)
}

/// [`env`] with the frames' contents: `n` pages of host memory, one block
/// per host thread reused by each execution (loom runs them one after
/// another), so that nothing a page-sized is leaked per execution.
fn env_with_memory(n: u64) -> crate::object::VmEnv {
    std::thread_local! {
        static MEMORY: usize = crate::phys::tests::host_memory(16 * crate::PAGE_SIZE) as usize;
    }
    assert!(n <= 16);
    MEMORY.with(|&m| {
        // SAFETY: the block is this thread's, and no page of an earlier
        // execution is used again.
        unsafe { core::ptr::write_bytes(m as *mut u8, 0, n as usize * crate::PAGE_SIZE) };
        env_at(n, Some(m.wrapping_sub(BASE as usize)))
    })
}

/// Where the models' frames start.
const BASE: u64 = 0x10_0000;

fn env_at(n: u64, direct_map: Option<usize>) -> crate::object::VmEnv {
    use alloc::boxed::Box;

    use crate::failpoint::FailPoint;
    use crate::phys::{PhysMem, PhysRange};
    use crate::radix::Radix;
    use crate::zone::NodeZone;
    use crate::zone::tests::HOST_PAGES;

    let range = PhysRange { start: BASE, end: BASE + n * crate::PAGE_SIZE as u64 };
    let storage = Box::leak(Box::new_uninit_slice(n as usize));
    let pm: &'static PhysMem = Box::leak(Box::new(PhysMem::new(&[range], storage, direct_map).unwrap()));
    pm.add_free_range(range);
    static NODES: FailPoint = FailPoint::new("model.radix.node_alloc");
    static PAGES: FailPoint = FailPoint::new("model.page.alloc");
    let zone = Box::leak(Box::new(NodeZone::new(Radix::<&'static Page>::NODE_SIZE, &HOST_PAGES, &NODES)));
    crate::object::VmEnv { pm, zone, page_alloc: &PAGES, mappings: &crate::pmap::NO_MAPPINGS }
}

/// After an execution: the allocator's free count is `free`, and the
/// invariant checker finds nothing (no page in limbo, none both free and
/// in use, every queue's count right).
fn check_clean(pm: &crate::phys::PhysMem, free: u64) {
    let v = crate::invariants::check(pm);
    assert!(v.is_empty(), "invariant violations: {v:?}");
    assert_eq!(pm.free_count(), free, "pages leaked or freed twice");
}

/// What a model builds and tears down itself, kept from being dropped if
/// a check fails first: the drop would take loom's locks while the failed
/// thread unwinds, which loom cannot schedule, and the test would abort
/// instead of reporting the failure.
struct Kept<T>(core::mem::ManuallyDrop<T>);

impl<T> Kept<T> {
    fn new(t: T) -> Kept<T> {
        Kept(core::mem::ManuallyDrop::new(t))
    }

    /// The model got to its end: drop it the ordinary way.
    fn release(mut self) -> T {
        // SAFETY: taken once, and `self` (which does not drop it) goes.
        unsafe { core::mem::ManuallyDrop::take(&mut self.0) }
    }
}

impl<T> core::ops::Deref for Kept<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// What a fault that wires does to a resident page (rule 3): find it under
/// the object lock, take it exclusively busy (sleeping while another holds
/// it, and looking again), wire it, let go. `None` if it is gone.
fn wire_resident(obj: &crate::object::VmObject, pindex: u64) -> Option<&'static Page> {
    loop {
        let l = obj.lock();
        let p = l.lookup(pindex)?;
        if p.try_xbusy() {
            drop(l);
            p.wire();
            p.xunbusy();
            return Some(p);
        }
        drop(l);
        crate::page::busy_wait(p);
    }
}
