//! `fork`: a child with a copy-on-write copy of the parent's address space
//! and its open files.

use crate::kern::sched;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use super::exec::become_process;
use super::limits::{FORK_HEAP_RESERVE, RLIMIT_NPROC, Slot, max_processes, process_count};
use super::thread::{Begin, Thread, start};
use super::{Process, SpawnError, current, current_thread};

/// What a `clone` of the fork kind asks beyond a plain fork.
#[derive(Clone, Copy, Debug, Default)]
pub struct ForkArgs {
    /// The child's stack pointer (`clone`'s new stack).
    pub stack: Option<u64>,
    /// The child's FS base (`CLONE_SETTLS`).
    pub tls: Option<u64>,
    /// Where the caller's memory gets the child's id, before the child can
    /// run (`CLONE_PARENT_SETTID`).
    pub parent_tid: Option<u64>,
    /// Where the child writes its thread id, in its own memory, before it
    /// returns to user mode (`CLONE_CHILD_SETTID`).
    pub set_child_tid: Option<u64>,
    /// Where a 0 is written, and a futex waiter woken, at the child's end
    /// if its address space is shared then (`CLONE_CHILD_CLEARTID`).
    pub clear_child_tid: Option<u64>,
    /// The signal the parent gets at the child's exit, if not SIGCHLD (a
    /// "clone" child to `wait4`).
    pub exit_signal: Option<u8>,
    /// The child shares the caller's address space instead of copying it
    /// (`CLONE_VM` without `CLONE_THREAD`: vfork, posix_spawn).
    /// (With `CLONE_VFORK` the caller then waits: [`wait_vfork`].)
    pub share_space: bool,
}

/// `fork`: a child with a copy-on-write copy of the address space, which
/// returns to user mode where the parent made the call, with 0 in RAX.
/// Returns the child's pid to the parent.
pub fn fork(tf: &crate::arch::trapframe::TrapFrame) -> Result<u64, SpawnError> {
    fork_with(tf, ForkArgs::default()).map(|(pid, _)| pid)
}

/// `fork` with what `clone` adds ([`ForkArgs`]); returns the child's pid
/// and thread id.
pub fn fork_with(tf: &crate::arch::trapframe::TrapFrame, args: ForkArgs) -> Result<(u64, u64), SpawnError> {
    let parent = current().ok_or(SpawnError::NoMemory)?;
    let me = current_thread().ok_or(SpawnError::NoMemory)?;
    // RLIMIT_NPROC: every process counts, ended ones not yet waited for
    // too (there is one user, root), as Linux counts a user's.
    if process_count() as u64 >= parent.limit(RLIMIT_NPROC) {
        return Err(SpawnError::TooMany);
    }
    let slot = Slot::take(max_processes()).ok_or(SpawnError::TooMany)?;
    // The map's entry tree allocates without a way to fail: refuse the
    // fork while the heap, grown as far as free pages allow, would have
    // less than a kernel stack and a margin to spare.
    if crate::kern::heap::available() < FORK_HEAP_RESERVE {
        return Err(SpawnError::NoMemory);
    }
    // Everything that can fail is done before the child can run, and what
    // was made so far is dropped on the way out: the child process (and
    // with it its address space, whose map drop releases its references).
    let mut files = Vec::new();
    {
        let theirs = parent.files.lock();
        files.try_reserve_exact(theirs.len()).map_err(|_| SpawnError::NoMemory)?;
        files.extend(theirs.iter().cloned());
    }
    parent.children.lock().try_reserve(1).map_err(|_| SpawnError::NoMemory)?;
    let space = parent.space().ok_or(SpawnError::NoMemory)?;
    let space = if args.share_space { space } else { space.fork().map_err(|_| SpawnError::NoMemory)? };
    let name = parent.name.lock().clone();
    let child = Arc::try_new(Process::in_slot(Some(&parent), &name, files, slot)).map_err(|_| SpawnError::NoMemory)?;
    *child.space.lock() = Some(space);
    *child.brk.lock() = *parent.brk.lock();
    if let Some(sig) = args.exit_signal {
        child.exit_signal.store(sig, Ordering::SeqCst);
    }
    *child.actions.lock() = *parent.actions.lock();
    // The child's one thread: the caller's mask and alternate stack.
    let first = Thread::new(child.pid, child.clone(), me.blocked.load(Ordering::SeqCst), None);
    *first.altstack.lock() = *me.altstack.lock();
    first.clear_child_tid.store(args.clear_child_tid.unwrap_or(0), Ordering::SeqCst);
    let first = Arc::try_new(first).map_err(|_| SpawnError::NoMemory)?;
    let c = child.clone();
    let begin = Begin::new(tf, args.stack, args.tls, child.pid, args.parent_tid, args.set_child_tid);
    start("user", first, move || {
        become_process(c);
        begin.enter()
    })?;
    let (pid, tid) = (child.pid, child.pid);
    // Room was reserved above.
    parent.children.lock().push(child);
    Ok((pid, tid))
}

/// After a `vfork` (`CLONE_VFORK`): waits until child `pid` no longer uses
/// the caller's address space, having exec'd or ended. A SIGKILL ends the
/// wait early (and then the caller).
pub fn wait_vfork(pid: u64) {
    let (Some(me), Some(t)) = (current(), current_thread()) else { return };
    let Some(child) = me.children.lock().iter().find(|c| c.pid == pid).cloned() else { return };
    let Some(mine) = me.space() else { return };
    let shared = |c: &Process| c.space.try_lock().is_none_or(|s| s.as_ref().is_some_and(|s| Arc::ptr_eq(s, &mine)));
    let killed = || t.pending_signals() & 1 << (super::SIGKILL - 1) != 0;
    while shared(&child) && !killed() {
        sched::sleep_if(child.chan(), || shared(&child) && !killed());
    }
}
