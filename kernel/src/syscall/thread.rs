//! The thread system calls: `clone` in all the forms the C libraries use
//! (threads, vfork, fork), `futex`, `set_tid_address`, `gettid`, `tkill`,
//! `tgkill`, and `exit` as opposed to `exit_group`.

use core::sync::atomic::Ordering;

use crate::arch::trapframe::TrapFrame;
use crate::proc;
use crate::syscall::errno::*;
use crate::syscall::proc::{clock_ns, get_timespec, kill_with};

/// `clone`'s flags (Linux's `CLONE_*`; the low byte is the signal the
/// parent gets at the child's exit).
mod clone {
    pub const CSIGNAL: u64 = 0xff;
    pub const VM: u64 = 0x100;
    pub const FS: u64 = 0x200;
    pub const FILES: u64 = 0x400;
    pub const SIGHAND: u64 = 0x800;
    pub const PIDFD: u64 = 0x1000;
    pub const PTRACE: u64 = 0x2000;
    pub const VFORK: u64 = 0x4000;
    pub const THREAD: u64 = 0x1_0000;
    pub const NEWNS: u64 = 0x2_0000;
    pub const SYSVSEM: u64 = 0x4_0000;
    pub const SETTLS: u64 = 0x8_0000;
    pub const PARENT_SETTID: u64 = 0x10_0000;
    pub const CHILD_CLEARTID: u64 = 0x20_0000;
    pub const DETACHED: u64 = 0x40_0000;
    pub const UNTRACED: u64 = 0x80_0000;
    pub const CHILD_SETTID: u64 = 0x100_0000;
    pub const NEWUSER: u64 = 0x1000_0000;
    pub const NEWPID: u64 = 0x2000_0000;
    pub const IO: u64 = 0x8000_0000;
    /// What a clone may ask: threads, a process sharing the address space
    /// (vfork, posix_spawn), forks, with the ids written where asked. FS
    /// means nothing yet (there is no per-process directory or umask),
    /// DETACHED, UNTRACED, PTRACE and IO nothing here (no tracers, one I/O
    /// context), SYSVSEM nothing without System V semaphores. The rest
    /// (pidfds, namespaces, cgroups) is ENOSYS, and so is sharing files or
    /// handlers between two processes (as opposed to threads, which share
    /// all of it).
    pub const SUPPORTED: u64 = CSIGNAL
        | VM
        | FS
        | FILES
        | SIGHAND
        | THREAD
        | VFORK
        | SETTLS
        | PARENT_SETTID
        | CHILD_SETTID
        | CHILD_CLEARTID
        | DETACHED
        | UNTRACED
        | PTRACE
        | IO
        | SYSVSEM;
}

/// `clone(flags, stack, parent_tid, child_tid, tls)` (x86_64's argument
/// order): a thread with `CLONE_THREAD` (as `pthread_create` asks); a
/// process sharing the caller's address space with `CLONE_VM` alone, the
/// caller waiting until it execs or ends with `CLONE_VFORK`; a fork
/// otherwise. The combinations Linux refuses are EINVAL, as there.
pub fn clone(tf: &TrapFrame, flags: u64, stack: u64, parent_tid: u64, child_tid: u64, tls: u64) -> i64 {
    let has = |f: u64| flags & f != 0;
    // Linux's checks, in its order (kernel_clone, copy_process).
    if has(clone::PIDFD) && has(clone::PARENT_SETTID) {
        return -EINVAL; // both would write through `parent_tid`
    }
    if (has(clone::NEWNS) || has(clone::NEWUSER)) && has(clone::FS)
        || has(clone::THREAD) && !has(clone::SIGHAND)
        || has(clone::SIGHAND) && !has(clone::VM)
        || has(clone::THREAD) && has(clone::NEWUSER | clone::NEWPID)
        || has(clone::PIDFD) && has(clone::DETACHED | clone::THREAD)
    {
        return -EINVAL;
    }
    let unsupported = flags & !clone::SUPPORTED & 0xffff_ffff
        | if has(clone::THREAD) { !flags & clone::FILES } else { flags & (clone::FILES | clone::SIGHAND) };
    if unsupported != 0 {
        log::warn!("pid {}: clone flags {unsupported:#x} are not implemented (ENOSYS)", proc::current_pid());
        return -ENOSYS;
    }
    let set_child_tid = has(clone::CHILD_SETTID).then_some(child_tid);
    let parent_tid = has(clone::PARENT_SETTID).then_some(parent_tid);
    let clear_child_tid = has(clone::CHILD_CLEARTID).then_some(child_tid);
    let tls = has(clone::SETTLS).then_some(tls);
    let r = if has(clone::THREAD) {
        let stack = if stack != 0 { stack } else { tf.rsp };
        let args = proc::ThreadArgs { stack, tls, parent_tid, set_child_tid, clear_child_tid };
        proc::clone_thread(tf, args).map(|tid| (tid, tid))
    } else {
        let signal = (flags & clone::CSIGNAL) as u8;
        let args = proc::ForkArgs {
            stack: (stack != 0).then_some(stack),
            tls,
            parent_tid,
            set_child_tid,
            clear_child_tid,
            exit_signal: (signal != proc::SIGCHLD).then_some(signal),
            share_space: has(clone::VM),
        };
        proc::fork_with(tf, args)
    };
    match r {
        Ok((id, _)) => {
            if has(clone::VFORK) && !has(clone::THREAD) {
                proc::wait_vfork(id);
            }
            id as i64
        }
        Err(proc::SpawnError::NoMemory) => -ENOMEM,
        Err(_) => -EAGAIN,
    }
}

/// `set_tid_address(tidptr)`: where the caller's thread id is cleared, and
/// a futex waiter woken, at its end. Returns the thread's id.
pub fn set_tid_address(at: u64) -> i64 {
    match proc::current_thread() {
        Some(t) => {
            t.clear_child_tid.store(at, Ordering::SeqCst);
            t.tid() as i64
        }
        None => -EINVAL,
    }
}

/// `gettid()`.
pub fn gettid() -> i64 {
    proc::current_thread().map_or(0, |t| t.tid() as i64)
}

/// `tkill(tid, sig)`, and `tgkill(tgid, tid, sig)` with `tgid` Some: the
/// signal to one thread (musl's and glibc's `raise`, `pthread_kill`).
/// Signal 0 checks that the thread exists.
pub fn tkill(tgid: Option<i64>, tid: i64, sig: u64) -> i64 {
    if tid <= 0 || tgid.is_some_and(|g| g <= 0) || sig > proc::NSIG as u64 {
        return -EINVAL;
    }
    let Some(t) = proc::thread_by_tid(tid as u64) else { return -ESRCH };
    if t.exiting.load(Ordering::SeqCst) || tgid.is_some_and(|g| g as u64 != t.process.pid) {
        return -ESRCH;
    }
    let sig = sig as u8;
    if sig == 0 {
        return 0;
    }
    // Init ignores what it has no handler for, SIGKILL included.
    if proc::is_init(&t.process) && !proc::handles(&t.process, sig) {
        return 0;
    }
    let info = proc::SigInfo { code: proc::SI_TKILL, value: proc::current_pid() & 0xffff_ffff, ..Default::default() };
    if sig == proc::SIGKILL {
        // A kill ends the whole process, whichever thread it names.
        return kill_with(t.process.pid as i64, sig as u64, proc::SI_TKILL);
    }
    proc::send_thread_signal(&t, sig, info);
    0
}

/// `futex(uaddr, op, val, timeout or val2, uaddr2, val3)`.
pub fn futex(uaddr: u64, op: u64, val: u64, timeout: u64, uaddr2: u64, val3: u64) -> i64 {
    const WAIT: u64 = 0;
    const WAKE: u64 = 1;
    const REQUEUE: u64 = 3;
    const CMP_REQUEUE: u64 = 4;
    const WAKE_OP: u64 = 5;
    const WAIT_BITSET: u64 = 9;
    const WAKE_BITSET: u64 = 10;
    const PRIVATE: u64 = 128;
    const CLOCK_REALTIME: u64 = 256;
    let private = op & PRIVATE != 0;
    let cmd = op & !(PRIVATE | CLOCK_REALTIME);
    if op & CLOCK_REALTIME != 0 && cmd != WAIT && cmd != WAIT_BITSET {
        return -ENOSYS;
    }
    // The count arguments are C ints.
    let (n, n2) = (val as i32, timeout as i32);
    let r = match cmd {
        WAIT | WAIT_BITSET => {
            let bitset = if cmd == WAIT { proc::futex::BITSET_ANY } else { val3 as u32 };
            let deadline = match (timeout, cmd) {
                (0, _) => None,
                // WAIT's timeout is relative, on the monotonic clock.
                (_, WAIT) => match get_timespec(timeout) {
                    Ok(ns) => Some(crate::kern::time::monotonic_ns().saturating_add(ns)),
                    Err(e) => return -e,
                },
                // WAIT_BITSET's is absolute, on the clock the op names.
                _ => match get_timespec(timeout) {
                    Ok(at) if op & CLOCK_REALTIME != 0 => {
                        let (now_real, now) = (clock_ns(0).unwrap_or(0), crate::kern::time::monotonic_ns());
                        Some(now.saturating_add(at.saturating_sub(now_real)))
                    }
                    Ok(at) => Some(at),
                    Err(e) => return -e,
                },
            };
            proc::futex::wait(uaddr, private, val as u32, deadline, bitset).map(|()| 0)
        }
        // As on Linux, a count of 0 or less still wakes one.
        WAKE => proc::futex::wake(uaddr, private, n.max(1) as usize, proc::futex::BITSET_ANY),
        WAKE_BITSET => proc::futex::wake(uaddr, private, n.max(1) as usize, val3 as u32),
        REQUEUE | CMP_REQUEUE if n < 0 || n2 < 0 => Err(EINVAL),
        REQUEUE | CMP_REQUEUE => {
            let cmp = (cmd == CMP_REQUEUE).then_some(val3 as u32);
            proc::futex::requeue(uaddr, uaddr2, private, n as usize, n2 as usize, cmp)
        }
        WAKE_OP => proc::futex::wake_op(uaddr, uaddr2, private, n.max(0) as usize, n2.max(0) as usize, val3 as u32),
        _ => {
            log::warn!("pid {}: futex op {op:#x} is not implemented (ENOSYS)", proc::current_pid());
            Err(ENOSYS)
        }
    };
    match r {
        Ok(n) => n as i64,
        Err(e) => -e,
    }
}
