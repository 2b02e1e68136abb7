//! `/proc/PID/mem`: a process's memory as a file whose offsets are its
//! virtual addresses, read and written as a debugger reaches it (Linux's
//! FOLL_FORCE): past the entry's protection up to its maximum. A write to
//! a private read-only page (a program's text, a breakpoint) goes to the
//! entry's own copy, made by a forced copy-on-write fault; the file and
//! the other processes sharing the page never see it.
//!
//! Each page is reached through its object, not its mapping: fault it in
//! (`vm::fault::fault_forced`), then, under the map lock, find it where
//! the entry's chain has it and busy it exclusively under its object's
//! lock; copy with it busy (rule 2), the locks let go. The map lock keeps
//! a fork from sharing a page between the lookup and the busy; the busy
//! keeps the page daemon from cleaning or freeing it during the copy.
//! User memory is copied through a kernel buffer, outside every lock.

use alloc::vec::Vec;

use vm::object::{ObjectKind, chain};
use vm::page::Page;
use vm::pmap::Prot;

use crate::mm::vmspace::{AddressSpace, TASK_SIZE};
use crate::proc;
use crate::syscall::errno::{EIO, ENOMEM};
use crate::syscall::uaccess::{copy_from_user, copy_to_user};

const PAGE: u64 = vm::PAGE_SIZE as u64;
/// Tries for one page: a page found busy, paged out or shadowed again
/// between the fault and the lookup sends it round once more.
const ATTEMPTS: usize = 64;

/// Reads (or writes, from `buf`) `count` bytes of process `pid`'s memory
/// from address `off`. Stops at the first address that cannot be reached;
/// EIO if that is the first (as Linux); nothing once the process is gone.
pub fn access(pid: u64, off: u64, buf: u64, count: u64, write: bool) -> Result<u64, i64> {
    let Some(space) = proc::by_pid(pid).and_then(|p| p.space()) else { return Ok(0) };
    let mut bounce = Vec::new();
    bounce.try_reserve_exact(PAGE as usize).map_err(|_| ENOMEM)?;
    bounce.resize(PAGE as usize, 0u8);
    let mut done = 0u64;
    while done < count {
        let Some(va) = off.checked_add(done).filter(|va| *va < TASK_SIZE) else { break };
        let n = (count - done).min(PAGE - va % PAGE);
        let bytes = &mut bounce[..n as usize];
        if write {
            copy_from_user(bytes, buf + done)?;
        }
        if page_io(&space, va, bytes, write).is_err() {
            break;
        }
        if !write {
            copy_to_user(buf + done, bytes)?;
        }
        done += n;
        if proc::signal_pending() {
            break;
        }
    }
    if done == 0 && count > 0 {
        return Err(EIO);
    }
    Ok(done)
}

/// Copies `bytes` from (or, if `write`, into) the page at `va`, within it.
fn page_io(space: &AddressSpace, va: u64, bytes: &mut [u8], write: bool) -> Result<(), ()> {
    let access = if write { Prot::WRITE } else { Prot::READ };
    let at = (va % PAGE) as usize;
    for _ in 0..ATTEMPTS {
        vm::fault::fault_forced(&space.map, va, access).map_err(|_| ())?;
        let (page, swap) = match busy_page(space, va, write) {
            Found::Page(page, swap) => (page, swap),
            Found::Busy(page) => {
                vm::page::busy_wait(page);
                continue;
            }
            Found::Gone => continue,
            Found::Never => return Err(()),
        };
        let pm = vm::global();
        if write {
            pm.with_contents_mut(page, |b| b[at..at + bytes.len()].copy_from_slice(bytes));
            page.set_all_dirty();
            // Rule 14: a swap object's page, dirtied, gives up its slot.
            if let Some((pager, pindex)) = swap {
                pager.forget(pindex, pindex + 1);
            }
        } else {
            pm.with_contents(page, |b| bytes.copy_from_slice(&b[at..at + bytes.len()]));
        }
        page.xunbusy();
        return Ok(());
    }
    Err(())
}

/// What [`busy_page`] found.
enum Found {
    /// The page, exclusively busy; for a swap object's, its pager and index.
    Page(&'static Page, Option<(alloc::sync::Arc<dyn vm::object::Pager>, u64)>),
    /// The page, busy with someone else: wait, then look again.
    Busy(&'static Page),
    /// Not where the fault put it (paged out, shadowed by a fork): again.
    Gone,
    /// No entry there any more.
    Never,
}

/// The page at `va`, exclusively busy: for a write, the one in the
/// entry's first object (the forced fault copied it there); for a read,
/// the first the chain holds.
fn busy_page(space: &AddressSpace, va: u64, write: bool) -> Found {
    let map = space.map.lock();
    let Some(e) = map.entry(va) else { return Found::Never };
    // Shadowed since the fault (a fork): its page is shared now.
    if write && e.needs_copy {
        return Found::Gone;
    }
    let Some(top) = e.object.clone() else { return Found::Gone };
    let pindex = e.offset + (va - e.start) / PAGE;
    for (o, off) in chain(&top) {
        let l = o.lock();
        if let Some(page) = l.lookup(pindex + off) {
            if !page.try_xbusy() {
                return Found::Busy(page);
            }
            let swap = (o.kind() == ObjectKind::Swap).then(|| l.pager().map(|p| (p, pindex + off))).flatten();
            return Found::Page(page, swap);
        }
        if write {
            // The copy belongs in the first object; it is not there yet.
            break;
        }
    }
    Found::Gone
}
