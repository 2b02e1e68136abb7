//! Step 2's read from a pager, with the neighbours it can read in the same
//! I/O (read-behind and read-ahead).

use alloc::sync::Arc;
use alloc::vec::Vec;

use super::{FaultError, FaultStats, Next, PagerResult};
use crate::object::{Locked, Pager, VmObject};
use crate::page::Page;
use crate::phys::AllocFlags;

/// Step 2's read from a pager: `m`, just allocated at `pindex` in `object`
/// (locked: `l`), is read in by `pager` together with up to `behind` and
/// `ahead` neighbours.
///
/// Out of line and cold: paging in is slow by nature, and its code is kept
/// off the path of the faults that find or make a page.
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
pub(super) fn page_in(
    mut l: Locked<'_>,
    object: &Arc<VmObject>,
    m: &'static Page,
    pindex: u64,
    is_first: bool,
    pager: Arc<dyn Pager>,
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
                #[cfg(loom)]
                if crate::sync::model::broken(crate::sync::model::Break::ReadAheadLeftInLimbo) {
                    p.xunbusy();
                    continue;
                }
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
