//! Property tests: random sequences of allocator and page-state operations
//! against a simple model, with the invariant checker run after every step.
//!
//! The model tracks what each held page should look like (wirings, busy
//! state, owner, queue) and which pages should be in limbo (rule 4); the
//! checker must report exactly those, and nothing else.

use alloc::collections::BTreeSet;
use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;

use super::tests::phys_with_memory;
use super::*;
use crate::invariants::{self, Violation};

#[derive(Clone, Debug)]
enum Op {
    Alloc { busy: bool, wired: bool, zero: bool },
    AllocOrder(u8),
    Free(usize),
    Wire(usize),
    Unwire(usize),
    XBusy(usize),
    XUnbusy(usize),
    SBusy(usize),
    SUnbusy(usize),
    Own(usize),
    Disown(usize),
    Queue(usize, u8),
    Drain,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(busy, wired, zero)| Op::Alloc { busy, wired, zero }),
        1 => (1u8..5).prop_map(Op::AllocOrder),
        3 => any::<usize>().prop_map(Op::Free),
        2 => any::<usize>().prop_map(Op::Wire),
        2 => any::<usize>().prop_map(Op::Unwire),
        1 => any::<usize>().prop_map(Op::XBusy),
        1 => any::<usize>().prop_map(Op::XUnbusy),
        1 => any::<usize>().prop_map(Op::SBusy),
        1 => any::<usize>().prop_map(Op::SUnbusy),
        2 => any::<usize>().prop_map(Op::Own),
        1 => any::<usize>().prop_map(Op::Disown),
        2 => (any::<usize>(), 0u8..4).prop_map(|(i, q)| Op::Queue(i, q)),
        1 => Just(Op::Drain),
    ]
}

/// What the model knows of one held page (or order-n block).
#[derive(Clone, Debug)]
struct Held {
    page: &'static Page,
    pages: usize,
    wired: u32,
    xbusy: bool,
    sbusy: u32,
    owned: bool,
    queue: Queue,
}

impl Held {
    fn single(&self) -> bool {
        self.pages == 1
    }
}

fn run(ops: Vec<Op>) {
    let pm = phys_with_memory(&[
        PhysRange { start: 1 << 20, end: 2 << 20 },
        PhysRange { start: 3 << 20, end: (3 << 20) + (512 << 10) },
    ]);
    let total = pm.free_count();
    let mut held: Vec<Held> = Vec::new();
    let mut next_pindex = 0u64;
    for op in ops {
        let n = held.len();
        let pick = |i: usize| if n == 0 { None } else { Some(i % n) };
        match op {
            Op::Alloc { busy, wired, zero } => {
                let mut f = AllocFlags::empty();
                if !busy {
                    f |= AllocFlags::NOBUSY;
                }
                if wired {
                    f |= AllocFlags::WIRED;
                }
                if zero {
                    f |= AllocFlags::ZERO;
                }
                if let Some(p) = pm.alloc(f) {
                    assert_eq!(p.xbusied(), busy, "rule 1");
                    if zero {
                        // SAFETY: just allocated; the model maps all memory.
                        let b = unsafe { core::slice::from_raw_parts(pm.page_addr(p).unwrap(), PAGE_SIZE) };
                        assert!(b.iter().all(|&x| x == 0));
                    }
                    held.push(Held {
                        page: p,
                        pages: 1,
                        wired: wired as u32,
                        xbusy: busy,
                        sbusy: 0,
                        owned: false,
                        queue: Queue::None,
                    });
                }
            }
            Op::AllocOrder(o) => {
                if let Some(p) = pm.alloc_order(o, AllocFlags::UNMANAGED) {
                    assert_eq!(p.phys() % ((PAGE_SIZE as u64) << o), 0, "blocks are naturally aligned");
                    held.push(Held {
                        page: p,
                        pages: 1 << o,
                        wired: 0,
                        xbusy: false,
                        sbusy: 0,
                        owned: false,
                        queue: Queue::None,
                    });
                }
            }
            Op::Free(i) => {
                let Some(i) = pick(i) else { continue };
                let h = &held[i];
                if h.wired > 0 || h.sbusy > 0 || h.owned {
                    continue; // illegal frees are covered by the should_panic tests
                }
                let h = held.swap_remove(i);
                if h.single() { pm.free(h.page) } else { pm.free_contig(h.page, h.pages) }
            }
            Op::Wire(i) => {
                let Some(i) = pick(i) else { continue };
                let h = &held[i];
                // Rule 3: a page of an object is wired by a busy holder.
                if h.single() && h.page.is_managed() && (!h.owned || h.xbusy || h.sbusy > 0) {
                    held[i].page.wire();
                    held[i].wired += 1;
                }
            }
            Op::Unwire(i) => {
                let Some(i) = pick(i) else { continue };
                let h = &mut held[i];
                if h.wired == 0 {
                    continue;
                }
                h.wired -= 1;
                if h.wired == 0 && !h.owned {
                    // Rule 5: the last unwire of a page in no object frees it,
                    // once nobody holds it busy (it waits for the holder).
                    if h.sbusy > 0 || h.xbusy {
                        h.wired += 1;
                        continue;
                    }
                    let h = held.swap_remove(i);
                    pm.unwire(h.page, Queue::Active);
                    assert!(h.page.flags().contains(PageFlags::FREE));
                } else {
                    pm.unwire(h.page, Queue::Inactive);
                    if h.wired == 0 {
                        h.queue = Queue::Inactive;
                    }
                }
            }
            Op::XBusy(i) => {
                let Some(i) = pick(i) else { continue };
                let h = &mut held[i];
                if !h.single() {
                    continue;
                }
                let ok = h.page.try_xbusy();
                assert_eq!(ok, !h.xbusy && h.sbusy == 0);
                h.xbusy |= ok;
            }
            Op::XUnbusy(i) => {
                let Some(i) = pick(i) else { continue };
                if held[i].xbusy {
                    held[i].page.xunbusy();
                    held[i].xbusy = false;
                }
            }
            Op::SBusy(i) => {
                let Some(i) = pick(i) else { continue };
                let h = &mut held[i];
                if !h.single() {
                    continue;
                }
                let ok = h.page.try_sbusy();
                assert_eq!(ok, !h.xbusy);
                h.sbusy += ok as u32;
            }
            Op::SUnbusy(i) => {
                let Some(i) = pick(i) else { continue };
                if held[i].sbusy > 0 {
                    held[i].page.sunbusy();
                    held[i].sbusy -= 1;
                }
            }
            Op::Own(i) => {
                let Some(i) = pick(i) else { continue };
                let h = &mut held[i];
                if h.single() && h.xbusy && !h.owned && h.page.is_managed() {
                    next_pindex += 1;
                    h.page.set_owner(0x9000, next_pindex);
                    h.owned = true;
                }
            }
            Op::Disown(i) => {
                let Some(i) = pick(i) else { continue };
                let h = &mut held[i];
                if h.owned && h.xbusy {
                    assert_eq!(h.page.clear_owner(), h.wired == 0, "rule 5: remove says whether to free");
                    h.owned = false;
                }
            }
            Op::Queue(i, q) => {
                let Some(i) = pick(i) else { continue };
                let h = &mut held[i];
                if !h.single() || !h.page.is_managed() {
                    continue;
                }
                let q = Queue::from_u8(q);
                match q {
                    Queue::None => pm.dequeue(h.page),
                    Queue::Active => pm.activate(h.page),
                    Queue::Inactive => pm.deactivate(h.page),
                    Queue::Laundry => pm.launder(h.page),
                }
                h.queue = q;
            }
            Op::Drain => pm.drain_cache(),
        }

        // The model and the records agree ...
        let mut in_use = 0;
        let mut limbo = BTreeSet::new();
        for h in &held {
            in_use += h.pages as u64;
            let p = h.page;
            assert_eq!(p.wire_count(), h.wired);
            assert_eq!(p.xbusied(), h.xbusy);
            assert_eq!(p.sbusy_count(), h.sbusy);
            assert_eq!(p.object().is_some(), h.owned);
            assert_eq!(p.queue(), h.queue);
            if h.owned && h.wired == 0 && !h.xbusy && h.sbusy == 0 && h.queue == Queue::None {
                limbo.insert(p.phys());
            }
        }
        assert_eq!(pm.free_count(), total - in_use, "free count");
        // ... and the checker reports exactly the pages in limbo.
        let v = invariants::check(&pm);
        let found: BTreeSet<u64> = v
            .iter()
            .map(|x| match x {
                Violation::Limbo { page } => *page,
                other => panic!("unexpected violation {other:?}"),
            })
            .collect();
        assert_eq!(found, limbo);
    }
}

proptest! {
    #![proptest_config(crate::tests::proptest_config(256))]

    #[test]
    fn random_operations_keep_the_invariants(ops in proptest::collection::vec(op(), 1..300)) {
        run(ops);
    }
}
