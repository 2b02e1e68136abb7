//! The stack's growth on a fault below it: within `RLIMIT_STACK`,
//! `RLIMIT_AS` and, for a process that locked its future memory,
//! `RLIMIT_MEMLOCK`, and stopping at whatever is mapped below.

use core::sync::atomic::Ordering;

use vm::map::Inherit;
use vm::pmap::Prot;

use super::current;
use super::layout::{PAGE, STACK_GROW, STACK_TOP};
use super::limits::{RLIMIT_AS, RLIMIT_MEMLOCK, RLIMIT_STACK};

/// Grows the current process's stack down to cover `addr` if `addr` is in
/// the stack's range below what is mapped, within the limit, and nothing else
/// is mapped in the way. Returns whether it did (the fault is then retried).
pub fn grow_stack(addr: u64) -> bool {
    let Some(p) = current() else { return false };
    let Some(space) = p.space() else { return false };
    let limit = p.limit(RLIMIT_STACK);
    let floor = STACK_TOP.saturating_sub(limit).max(0x1_0000);
    let low = p.stack_low.load(Ordering::SeqCst);
    if addr >= low || addr < floor {
        if addr < floor && addr >= floor.saturating_sub(STACK_GROW) {
            crate::kprintln!("pid {}: stack overflow: {addr:#x} is beyond the {} KiB stack limit", p.pid, limit >> 10);
        }
        return false;
    }
    let want = addr & !(PAGE - 1);
    let mut new_low = want.min(low - STACK_GROW).max(floor);
    let mut map = space.map.lock();
    // Stop at anything mapped below the stack.
    for e in map.entries() {
        if e.start < low && e.end > new_low {
            new_low = new_low.max(e.end);
        }
    }
    if new_low > want {
        return false;
    }
    // RLIMIT_AS (and RLIMIT_MEMLOCK when new memory is locked): grow by
    // what the fault needs if the usual step is too much.
    let mut room = p.limit(RLIMIT_AS).saturating_sub(map.size());
    if p.lock_future.load(Ordering::SeqCst) {
        room = room.min(p.limit(RLIMIT_MEMLOCK).saturating_sub(map.wired_size()));
    }
    if low - new_low > room {
        new_low = want;
        if low - new_low > room {
            return false;
        }
    }
    if map.map(Some(new_low), low - new_low, Prot::RW, Prot::RW, Inherit::Copy, None, false).is_err() {
        return false;
    }
    p.stack_low.store(new_low, Ordering::SeqCst);
    drop(map);
    if p.lock_future.load(Ordering::SeqCst) {
        let _ = vm::fault::wire(&space.map, new_low, low);
    }
    true
}
