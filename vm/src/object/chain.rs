//! Shadow chains: walking an object's chain of backing objects, looking a
//! page up along it, and collapsing a shadow into its backing object.

use alloc::sync::Arc;
use core::sync::atomic::Ordering;

use super::{ObjectError, ObjectFlags, ObjectKind, VmObject, pmap_remove_all};
use crate::page::Page;

/// The shadow chain from `obj` down, `obj` first: each object with the
/// offset, in pages, of `obj`'s index 0 in it (0 for `obj`). Each object is
/// locked only to read its backing, so the walk sees the chain as it is at
/// each step; the one that must hold the chain still (the fault) walks it
/// itself, under each object's lock in turn.
pub fn chain(obj: &Arc<VmObject>) -> Chain {
    Chain { next: Some((obj.clone(), 0)) }
}

/// The iterator of [`chain`].
pub struct Chain {
    next: Option<(Arc<VmObject>, u64)>,
}

impl Iterator for Chain {
    type Item = (Arc<VmObject>, u64);

    fn next(&mut self) -> Option<Self::Item> {
        let (obj, offset) = self.next.take()?;
        self.next = obj.lock().backing().and_then(|(b, off)| Some((b, offset.checked_add(off)?)));
        Some((obj, offset))
    }
}

/// Looks `pindex` up along the shadow chain from `obj`: the first object that
/// has the page resident, the page, and how deep in the chain it was (0 = in
/// `obj` itself).
pub fn lookup_chain(obj: &Arc<VmObject>, pindex: u64) -> Option<(Arc<VmObject>, &'static Page, usize)> {
    chain(obj).enumerate().find_map(|(depth, (o, offset))| {
        let p = o.lock().lookup(pindex.checked_add(offset)?)?;
        Some((o, p, depth))
    })
}

/// Collapses `shadow` with its backing object when the shadow is the backing
/// object's only user: the backing object's pages that the shadow can see and
/// does not itself have move up into the shadow; the others are freed; the
/// shadow then backs onto the backing object's backing object.
///
/// Stops early and cleanly with `Busy` (a page is busy) or `NoMemory` (a trie
/// node could not be had); pages already moved stay moved, which is a
/// consistent state, and a later call finishes the job.
pub fn collapse(shadow: &Arc<VmObject>) -> Result<(), ObjectError> {
    let (backing, offset) = shadow.lock().backing().ok_or(ObjectError::NotCollapsible)?;
    if backing.kind() != ObjectKind::Anonymous
        || backing.ref_count() != 1
        || backing.paging_in_progress.load(Ordering::Acquire) != 0
    {
        return Err(ObjectError::NotCollapsible);
    }
    let pm = shadow.env.pm;
    {
        // Lock order: shadow, then backing.
        let mut s = shadow.lock();
        let mut b = backing.lock();
        let size = s.st.size;
        while let Some(p) = b.lookup_ge(0) {
            if !p.try_xbusy() {
                return Err(ObjectError::Busy);
            }
            let visible = p.pindex() >= offset && p.pindex() - offset < size;
            // A page the shadow has paged out (a swap slot) shadows this one
            // as a resident page would.
            let held = |to: u64| s.lookup(to).is_some() || s.st.pager.as_ref().is_some_and(|pg| pg.has_page(to).is_some());
            if visible && !held(p.pindex() - offset) {
                let to = p.pindex() - offset;
                if let Err(e) = b.rename(p, &mut s, to) {
                    p.xunbusy();
                    return Err(e);
                }
                p.xunbusy();
                continue;
            }
            // Shadowed or out of the shadow's view: nobody can reach it.
            pmap_remove_all(&shadow.env, p);
            if b.remove(p) {
                pm.free(p);
            } else {
                p.xunbusy();
            }
        }
        // The backing object is empty: take over its backing.
        let (next, next_off) = match b.st.backing.take() {
            Some(n) => (Some(n), b.st.backing_offset),
            None => (None, 0),
        };
        b.st.flags |= ObjectFlags::DEAD;
        b.st.pages.reclaim_all_nodes();
        s.st.backing = next;
        s.st.backing_offset = offset + next_off;
    }
    // `backing` had one reference, ours through the shadow: drop it without
    // terminating twice (it is already empty), and it is freed with its Arc.
    backing.ref_count.store(0, Ordering::Release);
    Ok(())
}
