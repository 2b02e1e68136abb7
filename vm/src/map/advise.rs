//! `MADV_FREE`: memory given up lazily (FreeBSD's `vm_object_madvise`
//! with `MADV_FREE`, Linux's lazy free).
//!
//! The owner says it no longer needs the contents of a range, but may
//! write it again soon. Its pages are not taken at once (that would be
//! `MADV_DONTNEED`, and a zero-filled page at the next touch): each is
//! made clean, its swap copy dropped, its mappings' modified and
//! referenced bits cleared, and it goes to the inactive queue marked
//! [`PageFlags::DISCARDABLE`].
//!
//! - If the page daemon comes to it first and finds it still clean, it is
//!   freed with nothing written: the next touch finds zeros.
//! - If the owner writes it first, the write sets a modified bit (or takes
//!   a write fault), the page is dirty again and is kept like any other.
//!
//! Only pages that one map entry alone reaches are given up: private
//! anonymous memory never forked ([`ObjectFlags::ONE_MAPPING`]), first in
//! its entry's chain. A page shared with a forked child, a wired page, or
//! one busy at the moment is left as it is: the advice is a hint.

use super::{Inherit, PAGE, VmMap};
use crate::object::{ObjectFlags, ObjectKind};
use crate::page::{Page, PageFlags};

/// Pages looked up under the object lock at a time, to be dealt with
/// after it is dropped.
const BATCH: usize = 32;

impl VmMap {
    /// True if every entry of `[start, end)` is private memory whose chain
    /// ends in anonymous memory (no file, not shared), the memory
    /// `MADV_FREE` is for.
    pub fn private_anonymous(&self, start: u64, end: u64) -> bool {
        self.overlapping(start, end).all(|e| {
            e.inherit == Inherit::Copy
                && e.object.as_ref().is_none_or(|o| {
                    crate::object::chain(o)
                        .last()
                        .is_some_and(|(b, _)| matches!(b.kind(), ObjectKind::Anonymous | ObjectKind::Swap))
                })
        })
    }

    /// Gives up the pages of `[start, end)` lazily (see the module docs).
    /// Returns how many were.
    pub fn free_lazily(&self, start: u64, end: u64) -> u64 {
        let env = self.env;
        let mut given = 0;
        for e in self.overlapping(start, end) {
            if e.inherit != Inherit::Copy || e.wired_count > 0 || e.needs_copy {
                continue;
            }
            let Some(obj) = &e.object else { continue };
            if !matches!(obj.kind(), ObjectKind::Anonymous | ObjectKind::Swap)
                || !obj.lock().flags().contains(ObjectFlags::ONE_MAPPING)
            {
                continue;
            }
            let (s, t) = (e.start.max(start), e.end.min(end));
            let mut next = e.offset + (s - e.start) / PAGE;
            let last = e.offset + (t - e.start) / PAGE;
            while next < last {
                let mut batch: [Option<&'static Page>; BATCH] = [None; BATCH];
                let mut n = 0;
                let pager = {
                    let l = obj.lock();
                    while n < BATCH {
                        let Some(p) = l.lookup_ge(next).filter(|p| p.pindex() < last) else {
                            next = last;
                            break;
                        };
                        next = p.pindex() + 1;
                        // Busy (a fault, the page daemon): passed over.
                        if p.all_valid() && !p.wired() && p.try_xbusy() {
                            batch[n] = Some(p);
                            n += 1;
                        }
                    }
                    l.pager()
                };
                for p in batch.into_iter().flatten() {
                    // The modified bits first: a write after this sets one
                    // again, and the page daemon sees it. The referenced
                    // bits too, or the daemon would put the page back.
                    env.mappings.clear_modify(p);
                    env.mappings.ts_referenced(p);
                    p.undirty();
                    p.set_flags(PageFlags::DISCARDABLE);
                    if let Some(pager) = &pager {
                        pager.forget(p.pindex(), p.pindex() + 1);
                    }
                    env.pm.deactivate(p);
                    p.xunbusy();
                    given += 1;
                }
            }
        }
        given
    }
}
