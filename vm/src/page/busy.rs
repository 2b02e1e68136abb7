//! The busy lock of a page: exclusive (one holder, who may change the page
//! and its identity) or shared (readers of its contents), with waiters
//! sleeping on the page until it is released.

use crate::sync::atomic::Ordering;

use super::*;

impl Page {
    /// Raw busy word, for the invariant checker and debuggers.
    #[inline]
    pub fn busy_word(&self) -> u32 {
        self.busy.load(Ordering::Acquire)
    }

    #[inline]
    pub fn busied(&self) -> bool {
        self.busy_word() & !BUSY_WAITERS != BUSY_UNBUSIED
    }

    #[inline]
    pub fn xbusied(&self) -> bool {
        self.busy_word() & BUSY_EXCLUSIVE != 0
    }

    /// Number of shared holders.
    #[inline]
    pub fn sbusy_count(&self) -> u32 {
        self.busy_word() / BUSY_SHARER
    }

    /// Where the exclusive holder took the lock (debug builds; else `None`).
    pub fn busy_owner(&self) -> BusyOwner {
        #[cfg(debug_assertions)]
        {
            let p = self.busy_owner.load(Ordering::Acquire) as *const core::panic::Location<'static>;
            // SAFETY: the field holds 0 or a pointer made from a
            // `&'static Location` in `note_owner`.
            unsafe { p.as_ref() }
        }
        #[cfg(not(debug_assertions))]
        None
    }

    #[track_caller]
    #[inline]
    fn note_owner(&self) {
        #[cfg(debug_assertions)]
        self.busy_owner.store(core::panic::Location::caller() as *const _ as usize, Ordering::Release);
    }

    #[inline]
    pub(super) fn clear_owner_note(&self) {
        #[cfg(debug_assertions)]
        self.busy_owner.store(0, Ordering::Release);
    }

    /// Takes the exclusive busy lock if the page is unbusied.
    #[track_caller]
    #[inline]
    pub fn try_xbusy(&self) -> bool {
        // Acquire pairs with the Release in xunbusy/sunbusy: the previous
        // holder's writes to the page are visible to the new one.
        let ok = self.busy.compare_exchange(BUSY_UNBUSIED, BUSY_EXCLUSIVE, Ordering::Acquire, Ordering::Relaxed).is_ok();
        if ok {
            self.note_owner();
        }
        ok
    }

    /// Takes a shared busy lock unless the page is exclusively busy.
    #[inline]
    pub fn try_sbusy(&self) -> bool {
        self.busy
            .try_update(Ordering::Acquire, Ordering::Relaxed, |cur| (cur & BUSY_EXCLUSIVE == 0).then_some(cur + BUSY_SHARER))
            .is_ok()
    }

    /// Takes the exclusive busy lock, waiting while another holds it.
    #[track_caller]
    pub fn xbusy(&self) {
        while !self.try_xbusy() {
            busy_wait(self);
        }
    }

    /// Takes a shared busy lock, waiting while the page is exclusively busy.
    pub fn sbusy(&self) {
        while !self.try_sbusy() {
            busy_wait(self);
        }
    }

    /// Releases the exclusive busy lock.
    #[inline]
    pub fn xunbusy(&self) {
        assert!(self.xbusied(), "page {:#x}: xunbusy of a page not exclusively busy", self.phys);
        self.clear_owner_note();
        // Release pairs with the Acquire of the next try_xbusy/try_sbusy.
        let old = self.busy.swap(BUSY_UNBUSIED, Ordering::Release);
        if old & BUSY_WAITERS != 0 {
            busy_wakeup(self);
        }
    }

    /// Releases one shared busy lock.
    #[inline]
    pub fn sunbusy(&self) {
        let update = self.busy.try_update(Ordering::Release, Ordering::Relaxed, |cur| {
            if cur & BUSY_EXCLUSIVE != 0 || cur < BUSY_SHARER {
                return None;
            }
            // The last sharer also clears the waiters bit: it wakes them.
            let new = cur - BUSY_SHARER;
            Some(if new < BUSY_SHARER { BUSY_UNBUSIED } else { new })
        });
        match update {
            Ok(old) if old < 2 * BUSY_SHARER && old & BUSY_WAITERS != 0 => busy_wakeup(self),
            Ok(_) => {}
            Err(word) => panic!("page {:#x}: sunbusy of a page not shared-busy (busy word {word:#x})", self.phys),
        }
    }

    /// Turns the exclusive lock into a shared one without letting a writer in.
    pub fn xbusy_downgrade(&self) {
        assert!(self.xbusied(), "page {:#x}: downgrade of a page not exclusively busy", self.phys);
        self.clear_owner_note();
        let old = self.busy.swap(BUSY_SHARER, Ordering::Release);
        if old & BUSY_WAITERS != 0 {
            busy_wakeup(self);
        }
    }

    /// Turns the caller's shared lock into the exclusive one if it is the
    /// only sharer.
    #[track_caller]
    pub fn try_upgrade(&self) -> bool {
        let ok = self
            .busy
            .try_update(Ordering::Acquire, Ordering::Relaxed, |cur| {
                (cur & !BUSY_WAITERS == BUSY_SHARER).then_some(BUSY_EXCLUSIVE | (cur & BUSY_WAITERS))
            })
            .is_ok();
        if ok {
            self.note_owner();
        }
        ok
    }

    /// Notes that someone waits for the busy lock (the wakeup side of
    /// sleep/wakeup uses it; spinning waiters need not set it).
    pub fn set_busy_waiters(&self) -> bool {
        self.busy
            .try_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
                (cur & !BUSY_WAITERS != BUSY_UNBUSIED).then_some(cur | BUSY_WAITERS)
            })
            .is_ok()
    }
}

/// The channel a page's busy waiters sleep on: the record's address.
#[inline]
fn channel(page: &Page) -> usize {
    page as *const Page as usize
}

/// Waits for `page`'s busy state to change; the caller tries again.
///
/// With a sleep installed (the kernel's scheduler, a model's), the waiter
/// sleeps on the page and the releaser wakes it. The waiters bit is what
/// tells the releaser to: it is set inside the sleep's condition, which
/// runs under the scheduler's lock, and the releaser's wakeup takes that
/// lock too. So either the page is released before the bit is set, and
/// the bit cannot be set ([`Page::set_busy_waiters`] fails on an unbusied
/// page) and the waiter does not sleep; or after, and the releaser sees
/// the bit, and its wakeup finds the waiter asleep. No wakeup is lost
/// (the `busy` models check it, `vm/MODELS.md`). Without a sleep (host
/// tests), the waiter spins.
pub fn busy_wait(page: &Page) {
    #[cfg(test)]
    if let Some(hook) = wait_hook::NEXT.with(|h| h.take()) {
        return hook(page);
    }
    if crate::sleep_installed() {
        crate::sleep_on(channel(page), &|| {
            #[cfg(loom)]
            if crate::sync::model::broken(crate::sync::model::Break::SleepWithoutWaitersBit) {
                return page.busied();
            }
            page.set_busy_waiters()
        });
    } else {
        default_wait(page);
    }
}

#[cfg(not(test))]
fn default_wait(_page: &Page) {
    crate::sync::spin_hint();
}

/// Host tests: yield to the other test threads, and fail loudly rather than
/// hang when a page stays busy for long (a test that panicked while holding
/// it, and is now unwinding through code that waits for it).
#[cfg(test)]
fn default_wait(page: &Page) {
    extern crate std;
    use std::cell::Cell;
    use std::time::{Duration, Instant};
    std::thread_local! {
        static WAITING: Cell<Option<(u64, Instant)>> = const { Cell::new(None) };
    }
    WAITING.with(|w| {
        let now = Instant::now();
        match w.get() {
            Some((phys, since)) if phys == page.phys() => {
                if now.duration_since(since) > Duration::from_secs(20) {
                    w.set(None);
                    std::eprintln!("page {:#x} stayed busy for 20 s; giving up the wait", page.phys());
                    std::process::abort();
                }
            }
            _ => w.set(Some((page.phys(), now))),
        }
    });
    std::thread::yield_now();
}

/// Wakes the waiters of `page` (the busy word's waiters bit was set).
pub(super) fn busy_wakeup(page: &Page) {
    #[cfg(loom)]
    if crate::sync::model::broken(crate::sync::model::Break::ReleaseWithoutWakeup) {
        return;
    }
    #[cfg(test)]
    wait_hook::WOKEN.with(|w| w.borrow_mut().push(page.phys()));
    crate::wakeup(channel(page));
}

/// Host tests: the calling thread's next busy wait calls `hook` with the
/// page instead (to look at what the waiter holds while it waits).
#[cfg(test)]
pub(crate) fn on_next_busy_wait(hook: wait_hook::Hook) {
    wait_hook::NEXT.with(|h| h.set(Some(hook)));
}

/// Host tests: the pages whose waiters this thread has woken.
#[cfg(test)]
pub(crate) fn woken_here() -> alloc::vec::Vec<u64> {
    wait_hook::WOKEN.with(|w| w.borrow().clone())
}

#[cfg(test)]
mod wait_hook {
    extern crate std;
    use alloc::boxed::Box;
    use alloc::vec::Vec;
    use core::cell::{Cell, RefCell};

    use super::Page;

    /// A wait's stand-in: called with the page instead of the next wait.
    pub(super) type Hook = Box<dyn FnOnce(&Page)>;

    std::thread_local! {
        pub(super) static NEXT: Cell<Option<Hook>> = const { Cell::new(None) };
        pub(super) static WOKEN: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    }
}
