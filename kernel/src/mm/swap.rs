//! Swap bring-up: the kernel's one swap space, over the virtio disk with
//! serial `swap`, and the swap pagers the pageout daemon makes over it.
//! The swap space and the swap pager themselves are `pager::swap`'s.
//!
//! At boot, [`init`] looks for the disk (run-qemu.sh and the test harness
//! attach a fresh sparse image so) and makes it the [`Space`]. No such disk
//! means no swap: the kernel runs on what memory it has, as FreeBSD does
//! before `swapon`.
//!
//! Locking: (C) set at [`init`], constant after; (A) atomic. The swap
//! space's block map is behind the kernel's interrupt-safe spin lock (its
//! holder is never preempted), which this file lends `pager` through its
//! `Lock` trait.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, Ordering};

use pager::blist::Blist;
use pager::swap::{SwapPager, SwapSpace};
use spin::Once;
use vm::object::Pager;

use crate::dev::virtio_blk;
use crate::kern::memory::PAGE_SIZE;
use crate::kern::sync::IrqMutex;

/// Serial number of the swap disk (`-device virtio-blk-pci,serial=swap`).
pub const SWAP_SERIAL: &str = "swap";

/// The kernel's swap space: its block map behind an interrupt-safe lock.
pub type Space = SwapSpace<IrqMutex<Blist>>;

/// The interrupt-safe spin lock as the swap space's lock.
impl<T: Send> pager::sync::Lock<T> for IrqMutex<T> {
    fn new(value: T, class: &'static vm::witness::LockClass) -> Self {
        IrqMutex::ranked(value, class)
    }

    #[track_caller]
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.lock())
    }
}

/// The swap space, if there is a swap disk. (C) set once by [`init`].
static SWAP: Once<Arc<Space>> = Once::new();

/// Swap read-ahead on (the command line's `swap.read_ahead`, read before
/// [`init`], which hands it to the swap space). (A)
pub static READ_AHEAD: AtomicBool = AtomicBool::new(true);

/// Finds the swap disk and sets up its swap space; logs what it found.
/// Call once, after the drivers have probed the disks.
pub fn init() {
    let Some(disk) = virtio_blk::by_serial(SWAP_SERIAL) else {
        log::info!("swap: no disk with serial {SWAP_SERIAL:?}: no swap");
        return;
    };
    let index = disk.index;
    match Space::new(Box::new(disk)).and_then(|sp| Arc::try_new(sp).map_err(|_| pager::swap::SwapError::NoMemory)) {
        Ok(sp) => {
            log::info!("swap: virtio-blk{index}, {} MiB, {} pages", (sp.pages() * PAGE_SIZE) >> 20, sp.pages());
            sp.set_read_ahead(READ_AHEAD.load(Ordering::Relaxed));
            SWAP.call_once(|| sp);
        }
        Err(e) => log::warn!("swap: cannot use virtio-blk{index}: {e:?}; no swap"),
    }
}

/// The swap space, or None when the machine has no swap disk.
pub fn swap() -> Option<&'static Arc<Space>> {
    SWAP.get()
}

/// Pages read from and written to swap since boot (`pswpin`, `pswpout`).
pub fn pages_in_out() -> (u64, u64) {
    swap().map_or((0, 0), |s| (s.stats.pages_in.load(Ordering::Relaxed), s.stats.pages_out.load(Ordering::Relaxed)))
}

/// A swap pager for an anonymous object's first page-out, or `None` when
/// there is no swap space (or no memory for the pager).
pub fn new_pager() -> Option<Arc<dyn Pager>> {
    let p: Arc<dyn Pager> = Arc::try_new(SwapPager::new(swap()?.clone(), vm::node_zone())).ok()?;
    Some(p)
}

mod tests;
