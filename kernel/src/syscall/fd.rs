//! Descriptor calls beyond opening and reading: `pipe`, `pipe2`, `fcntl`,
//! `poll` and `ppoll`; process descriptors (`pidfd_open`,
//! `pidfd_send_signal`) and `process_mrelease`.

use core::sync::atomic::Ordering;

use crate::fs::{FileKind, OpenFile};
use crate::proc;
use crate::syscall::errno::*;
use crate::syscall::file::{O_CLOEXEC, O_NONBLOCK};
use crate::syscall::uaccess::copy_to_user;

/// `pipe2(fds, flags)` (and `pipe`, flags 0): a new pipe's read end and
/// write end at the two lowest free descriptors, written to `fds` as two
/// ints. `O_CLOEXEC` and `O_NONBLOCK` apply to both.
pub fn pipe2(fds: u64, flags: u64) -> i64 {
    const O_DIRECT: u64 = 0o40000;
    if flags & !(O_CLOEXEC | O_NONBLOCK | O_DIRECT) != 0 {
        return -EINVAL;
    }
    let r = (|| -> Result<i64, i64> {
        let p = proc::current().ok_or(EINVAL)?;
        let (r, w) = OpenFile::pipe()?;
        for f in [&r, &w] {
            f.nonblock.store(flags & O_NONBLOCK != 0, Ordering::Relaxed);
        }
        let cloexec = flags & O_CLOEXEC != 0;
        let rfd = p.add_file(r, cloexec, 0).ok_or(EMFILE)?;
        let Some(wfd) = p.add_file(w, cloexec, 0) else {
            drop(close_fd(&p, rfd));
            return Err(EMFILE);
        };
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&(rfd as i32).to_le_bytes());
        out[4..].copy_from_slice(&(wfd as i32).to_le_bytes());
        if let Err(e) = copy_to_user(fds, &out) {
            drop(close_fd(&p, rfd));
            drop(close_fd(&p, wfd));
            return Err(e);
        }
        Ok(0)
    })();
    r.unwrap_or_else(|e| -e)
}

/// Takes descriptor `fd` out of `p`'s table; the open file is the caller's
/// to drop (after the table's lock is released).
fn close_fd(p: &proc::Process, fd: u64) -> Option<alloc::sync::Arc<OpenFile>> {
    p.files.lock().get_mut(fd as usize)?.take().map(|(f, _)| f)
}

/// `fcntl(fd, cmd, arg)`: duplicating (`F_DUPFD`, `F_DUPFD_CLOEXEC`), the
/// descriptor's close-on-exec flag (`F_GETFD`, `F_SETFD`), the open file's
/// status flags (`F_GETFL`; `F_SETFL` changes `O_NONBLOCK`), and a pipe's
/// size (`F_GETPIPE_SZ`, `F_SETPIPE_SZ`, which keeps it). Record locks
/// and the rest: EINVAL.
pub fn fcntl(fd: u64, cmd: u64, arg: u64) -> i64 {
    const F_DUPFD: u64 = 0;
    const F_GETFD: u64 = 1;
    const F_SETFD: u64 = 2;
    const F_GETFL: u64 = 3;
    const F_SETFL: u64 = 4;
    const F_DUPFD_CLOEXEC: u64 = 1030;
    const F_SETPIPE_SZ: u64 = 1031;
    const F_GETPIPE_SZ: u64 = 1032;
    const FD_CLOEXEC: u64 = 1;
    const O_WRONLY: u64 = 1;
    const O_RDWR: u64 = 2;
    const O_APPEND: u64 = 0o2000;
    let r = (|| -> Result<i64, i64> {
        let p = proc::current().ok_or(EINVAL)?;
        let f = p.file(fd).ok_or(EBADF)?;
        match cmd {
            F_DUPFD | F_DUPFD_CLOEXEC => {
                let max = p.limit(proc::RLIMIT_NOFILE).min(proc::NR_OPEN);
                if arg >= max {
                    return Err(EINVAL);
                }
                p.add_file(f, cmd == F_DUPFD_CLOEXEC, arg as usize).map(|fd| fd as i64).ok_or(EMFILE)
            }
            F_GETFD => {
                let files = p.files.lock();
                let cloexec = files.get(fd as usize).and_then(|s| s.as_ref()).is_some_and(|(_, c)| *c);
                Ok(if cloexec { FD_CLOEXEC as i64 } else { 0 })
            }
            F_SETFD => {
                let mut files = p.files.lock();
                let (_, cloexec) = files.get_mut(fd as usize).and_then(|s| s.as_mut()).ok_or(EBADF)?;
                *cloexec = arg & FD_CLOEXEC != 0;
                Ok(0)
            }
            F_GETFL => {
                let mode = match (f.readable, f.writable) {
                    (true, true) => O_RDWR,
                    (false, true) => O_WRONLY,
                    _ => 0,
                };
                let append = if f.append { O_APPEND } else { 0 };
                let nonblock = if f.nonblock.load(Ordering::Relaxed) { O_NONBLOCK } else { 0 };
                Ok((mode | append | nonblock) as i64)
            }
            F_SETFL => {
                f.nonblock.store(arg & O_NONBLOCK != 0, Ordering::Relaxed);
                Ok(0)
            }
            F_GETPIPE_SZ | F_SETPIPE_SZ => match f.kind {
                FileKind::Pipe(_) => Ok(crate::fs::pipe::PIPE_SIZE as i64),
                _ => Err(EBADF),
            },
            _ => Err(EINVAL),
        }
    })();
    r.unwrap_or_else(|e| -e)
}

const POLLIN: u16 = 0x1;
const POLLOUT: u16 = 0x4;
const POLLERR: u16 = 0x8;
const POLLHUP: u16 = 0x10;
const POLLNVAL: u16 = 0x20;
const POLLRDNORM: u16 = 0x40;
const POLLWRNORM: u16 = 0x100;

/// What `poll` reports for `f` (None: the descriptor is not open), from
/// atomics only: it is evaluated again under the scheduler's lock as the
/// caller goes to sleep. A pipe as its ends' counts say; anything else is
/// always ready, as Linux's regular files are.
fn revents(f: Option<&OpenFile>, events: u16) -> u16 {
    let Some(f) = f else { return POLLNVAL };
    let r = match &f.kind {
        FileKind::Pipe(end) => end.pipe.ready(end.write),
        _ => crate::fs::pipe::Ready { input: f.readable, output: f.writable, hangup: false, error: false },
    };
    let mut out = 0;
    if r.input {
        out |= (POLLIN | POLLRDNORM) & events;
    }
    if r.output {
        out |= (POLLOUT | POLLWRNORM) & events;
    }
    if r.hangup {
        out |= POLLHUP;
    }
    if r.error {
        out |= POLLERR;
    }
    out
}

/// `poll(fds, nfds, timeout)`: `timeout` in ms, negative for none.
pub fn poll(fds: u64, nfds: u64, timeout: u64) -> i64 {
    let timeout = timeout as i32;
    let deadline = (timeout >= 0).then(|| crate::kern::time::ticks().saturating_add(timeout as u64));
    do_poll(fds, nfds, deadline, None)
}

/// `ppoll(fds, nfds, tsp, sigmask, sigsetsize)`: the timeout a timespec
/// (NULL for none); the signal mask, if given, is the thread's while it
/// waits (a signal it lets through ends the wait, EINTR, but is acted on
/// with the caller's own mask back in place).
pub fn ppoll(fds: u64, nfds: u64, tsp: u64, sigmask: u64, setsize: u64) -> i64 {
    let deadline = if tsp == 0 {
        None
    } else {
        match crate::syscall::proc::get_timespec(tsp) {
            Ok(ns) => Some(crate::kern::time::ticks().saturating_add(ns.div_ceil(1_000_000))),
            Err(e) => return -e,
        }
    };
    let mask = if sigmask == 0 {
        None
    } else {
        if setsize != 8 {
            return -EINVAL;
        }
        let mut b = [0u8; 8];
        if let Err(e) = crate::syscall::uaccess::copy_from_user(&mut b, sigmask) {
            return -e;
        }
        Some(u64::from_le_bytes(b) & !proc::UNBLOCKABLE)
    };
    do_poll(fds, nfds, deadline, mask)
}

fn do_poll(fds: u64, nfds: u64, deadline: Option<u64>, mask: Option<u64>) -> i64 {
    let r = (|| -> Result<i64, i64> {
        let p = proc::current().ok_or(EINVAL)?;
        if nfds > p.limit(proc::RLIMIT_NOFILE).min(proc::NR_OPEN) {
            return Err(EINVAL);
        }
        let n = nfds as usize;
        let mut raw = alloc::vec::Vec::new();
        raw.try_reserve_exact(n * 8).map_err(|_| ENOMEM)?;
        raw.resize(n * 8, 0u8);
        crate::syscall::uaccess::copy_from_user(&mut raw, fds)?;
        // Each entry's open file (None for a negative descriptor, which
        // is passed over, or one not open) and the events asked.
        let mut files = alloc::vec::Vec::new();
        files.try_reserve_exact(n).map_err(|_| ENOMEM)?;
        for e in raw.as_chunks::<8>().0 {
            let fd = i32::from_le_bytes([e[0], e[1], e[2], e[3]]);
            let events = u16::from_le_bytes([e[4], e[5]]);
            files.push((fd, if fd < 0 { None } else { p.file(fd as u64) }, events));
        }
        let count = |out: Option<&mut [u8]>| {
            let mut ready = 0;
            let mut out = out;
            for (i, (fd, f, events)) in files.iter().enumerate() {
                let r = if *fd < 0 { 0 } else { revents(f.as_deref(), *events) };
                ready += (r != 0) as i64;
                if let Some(o) = out.as_deref_mut() {
                    o[i * 8 + 6..i * 8 + 8].copy_from_slice(&r.to_le_bytes());
                }
            }
            ready
        };
        let t = proc::current_thread();
        let old = mask.and_then(|m| t.as_ref().map(|t| t.blocked.swap(m, Ordering::SeqCst)));
        let signalled = || t.as_ref().is_some_and(|t| proc::signal_pending_in(t));
        let chan = &crate::fs::pipe::POLL_CHAN as *const u8 as usize;
        let result = loop {
            if count(None) > 0 {
                break Ok(());
            }
            if signalled() {
                break Err(EINTR);
            }
            match deadline {
                Some(d) if crate::kern::time::ticks() >= d => break Ok(()),
                Some(d) => crate::kern::sched::sleep_until(chan, d, || count(None) == 0 && !signalled()),
                None => crate::kern::sched::sleep_if(chan, || count(None) == 0 && !signalled()),
            };
        };
        if let (Some(t), Some(old)) = (t.as_ref(), old) {
            t.blocked.store(old, Ordering::SeqCst);
        }
        result?;
        let ready = count(Some(&mut raw));
        crate::syscall::uaccess::copy_to_user(fds, &raw)?;
        Ok(ready)
    })();
    r.unwrap_or_else(|e| -e)
}

/// The process descriptor `fd` refers to: EBADF if it is not one.
fn pidfd_process(fd: u64) -> Result<alloc::sync::Arc<proc::Process>, i64> {
    let f = proc::current().ok_or(EINVAL)?.file(fd).ok_or(EBADF)?;
    match &f.kind {
        FileKind::Pid(any) => any.clone().downcast::<proc::Process>().map_err(|_| EBADF),
        _ => Err(EBADF),
    }
}

/// `pidfd_open(pid, flags)`: a descriptor of process `pid` (close-on-exec,
/// as Linux's always are). ESRCH if there is none.
pub fn pidfd_open(pid: u64, flags: u64) -> i64 {
    if flags & !O_NONBLOCK != 0 || pid as i32 <= 0 {
        return -EINVAL;
    }
    let r = (|| -> Result<i64, i64> {
        let target = proc::by_pid(pid).filter(|p| p.status().is_none()).ok_or(ESRCH)?;
        let f = OpenFile::pidfd(target).map_err(|_| ENFILE)?;
        f.nonblock.store(flags & O_NONBLOCK != 0, Ordering::Relaxed);
        proc::current().ok_or(EINVAL)?.add_file(f, true, 0).map(|fd| fd as i64).ok_or(EMFILE)
    })();
    r.unwrap_or_else(|e| -e)
}

/// `pidfd_send_signal(pidfd, sig, info, flags)`: `kill` of the process the
/// descriptor refers to (no info of the caller's own: `info` must be NULL,
/// flags 0). ESRCH once it has ended.
pub fn pidfd_send_signal(fd: u64, sig: u64, info: u64, flags: u64) -> i64 {
    if flags != 0 || info != 0 || sig > proc::NSIG as u64 {
        return -EINVAL;
    }
    let r = (|| -> Result<i64, i64> {
        let p = pidfd_process(fd)?;
        if p.status().is_some() {
            return Err(ESRCH);
        }
        if sig != 0 {
            proc::send_signal_info(&p, sig as u8, proc::SigInfo { code: proc::SI_USER, ..proc::SigInfo::default() });
        }
        Ok(0)
    })();
    r.unwrap_or_else(|e| -e)
}

/// `process_mrelease(pidfd, flags)`: frees the memory of a process that is
/// being killed without waiting for its threads to end (Linux's OOM
/// reaper, asked for): every private, unlocked range is emptied as
/// `MADV_DONTNEED` would (its entries stay until the exit takes them).
/// EINVAL for a process not dying; ESRCH once its memory is gone.
pub fn process_mrelease(fd: u64, flags: u64) -> i64 {
    if flags != 0 {
        return -EINVAL;
    }
    let r = (|| -> Result<i64, i64> {
        let p = pidfd_process(fd)?;
        let space = p.space().ok_or(ESRCH)?;
        if !proc::dying(&p) {
            return Err(EINVAL);
        }
        // One range at a time (a range query each: nothing allocated).
        let mut at = 0;
        loop {
            let mut map = space.map.lock();
            let next = map
                .overlapping(at, crate::mm::vmspace::TASK_SIZE)
                .find(|e| e.inherit == vm::map::Inherit::Copy && e.wired_count == 0)
                .map(|e| (e.start.max(at), e.end));
            let Some((s, e)) = next else { break };
            // Short of memory for the map's bookkeeping: the exit frees
            // the rest.
            if map.discard(s, e).is_err() {
                break;
            }
            at = e;
        }
        Ok(0)
    })();
    r.unwrap_or_else(|e| -e)
}
