//! A map's lock, and the object references the map gives up while it is
//! held: dropped only once the lock is let go (see the module docs of
//! `vm::map`).

use alloc::sync::Arc;
use alloc::vec::Vec;

use super::{MapError, VmMap};
use crate::object::VmObject;
use crate::sync::{Mutex, MutexGuard};

/// The object references a map under a [`MapLock`] has given up while
/// locked, each with the page range to trim first (`VmObject::trim`): the
/// lock's guard does both after unlocking.
pub(super) struct Deferred {
    /// The map is under a `MapLock`: defer. Off, a bare map drops at once.
    pub(super) on: bool,
    pub(super) objects: Vec<Release>,
}

/// An object reference given up, and the page range of it to trim first.
pub(super) type Release = (Arc<VmObject>, Option<(u64, u64)>);

impl Deferred {
    /// Makes room for `n` more, before an operation that may give up that
    /// many references changes anything (the push must not allocate).
    pub(super) fn reserve(&mut self, n: usize) -> Result<(), MapError> {
        if self.on {
            self.objects.try_reserve(n).map_err(|_| MapError::NoMemory)?;
        }
        Ok(())
    }

    /// Gives up the map's reference to `o`: later, under a `MapLock`; now
    /// otherwise.
    pub(super) fn release(&mut self, o: Arc<VmObject>) {
        self.release_trimmed(o, None);
    }

    /// [`Deferred::release`], trimming pages `trim` of `o` first. Until
    /// the trim is done the object counts it as paging in progress: the
    /// map does not grow an entry over an object with one pending
    /// (`remap`'s coalescing), which the trim would empty after it.
    pub(super) fn release_trimmed(&mut self, o: Arc<VmObject>, trim: Option<(u64, u64)>) {
        if trim.is_some() {
            o.pip_add();
        }
        if self.on {
            debug_assert!(self.objects.len() < self.objects.capacity(), "deferred release without room reserved");
            self.objects.push((o, trim));
        } else {
            finish(o, trim);
        }
    }
}

/// What a deferred release does, with no lock held.
fn finish(o: Arc<VmObject>, trim: Option<(u64, u64)>) {
    if let Some((start, end)) = trim {
        o.trim(start, end);
        o.pip_wakeup();
    }
    o.deallocate();
}

/// The lock of a map: a spin lock ([`Mutex`], ranked [`MAP`]) whose guard,
/// once it has let go of the lock, drops the object references the map gave
/// up while it was held (see the module docs).
///
/// [`MAP`]: crate::witness::order::MAP
pub struct MapLock {
    inner: Mutex<VmMap>,
}

/// What [`MapLock::lock`] returns: the map, as `&mut VmMap`. Dropping it
/// unlocks the map, then deallocates the objects it gave up.
pub struct MapGuard<'a> {
    lock: &'a MapLock,
    /// Dropped by hand, before the deferred objects are deallocated.
    inner: core::mem::ManuallyDrop<MutexGuard<'a, VmMap>>,
}

impl MapLock {
    /// Puts `map` under a lock; from now on it defers what it gives up.
    pub fn new(mut map: VmMap) -> MapLock {
        map.deferred.on = true;
        MapLock { inner: Mutex::ranked(map, &crate::witness::order::MAP) }
    }

    /// Takes the lock, spinning while another holds it.
    #[inline(always)]
    #[track_caller]
    pub fn lock(&self) -> MapGuard<'_> {
        MapGuard { lock: self, inner: core::mem::ManuallyDrop::new(self.inner.lock()) }
    }

    /// Whether the lock is held (by anyone; see [`Mutex::is_locked`]).
    pub fn is_locked(&self) -> bool {
        self.inner.is_locked()
    }

    /// Whether the current thread holds the lock, where the lock-order
    /// check knows it (see [`Mutex::held_by_me`]).
    pub fn held_by_me(&self) -> Option<bool> {
        self.inner.held_by_me()
    }
}

impl Drop for MapGuard<'_> {
    fn drop(&mut self) {
        if self.inner.deferred.objects.is_empty() {
            // SAFETY: dropped once, here; `inner` is not used again.
            unsafe { core::mem::ManuallyDrop::drop(&mut self.inner) };
            return;
        }
        let mut deferred = core::mem::take(&mut self.inner.deferred.objects);
        // SAFETY: dropped once, here; `inner` is not used again.
        unsafe { core::mem::ManuallyDrop::drop(&mut self.inner) };
        // A model thread unwinding from a failed check takes no locks (see
        // `sync::model::unwinding`): its objects are left as they are.
        #[cfg(loom)]
        if crate::sync::model::unwinding() {
            core::mem::forget(deferred);
            return;
        }
        for (o, trim) in deferred.drain(..) {
            finish(o, trim);
        }
        // Give the room back, so that the next unmap need not allocate it
        // again; if the lock is taken meanwhile, the room goes instead.
        if let Some(mut map) = self.lock.inner.try_lock()
            && map.deferred.objects.capacity() < deferred.capacity()
            && map.deferred.objects.is_empty()
        {
            map.deferred.objects = deferred;
        }
    }
}

impl core::ops::Deref for MapGuard<'_> {
    type Target = VmMap;
    fn deref(&self) -> &VmMap {
        &self.inner
    }
}

impl core::ops::DerefMut for MapGuard<'_> {
    fn deref_mut(&mut self) -> &mut VmMap {
        &mut self.inner
    }
}
