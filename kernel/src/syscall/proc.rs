//! The process, signal, time and console system calls: `read`, `write`,
//! `writev`, `execve`, `wait4`, `kill`, `rt_sigaction`, `rt_sigprocmask`,
//! `uname`, `clock_gettime`, `nanosleep` and the rest, with Linux's
//! structures, flags and errors.

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use crate::arch::trapframe::TrapFrame;
use crate::proc::{self, SigAction, Status};
use crate::syscall::errno::*;
use crate::syscall::uaccess::{copy_from_user, copy_string, copy_to_user};

const NS: u64 = 1_000_000_000;

fn ret(r: Result<i64, i64>) -> i64 {
    r.unwrap_or_else(|e| -e)
}

fn read_u64(addr: u64) -> Result<u64, i64> {
    let mut b = [0u8; 8];
    copy_from_user(&mut b, addr)?;
    Ok(u64::from_le_bytes(b))
}

/// Appends the strings of a NULL-terminated array of string pointers
/// (argv, envp) to `block`: EFAULT for a bad pointer, E2BIG past Linux's
/// limits (a string of 128 KiB, the block's [`crate::proc::elf::ARG_MAX`]),
/// ENOMEM when memory is short.
fn copy_string_array(addr: u64, block: &mut crate::proc::elf::ArgBlock, env: bool) -> Result<(), i64> {
    use crate::proc::elf::ElfError;
    if addr == 0 {
        return Ok(());
    }
    for i in 0.. {
        let p = read_u64(addr.checked_add(i * 8).ok_or(EFAULT)?)?;
        if p == 0 {
            break;
        }
        let s = copy_string(p, crate::proc::elf::ARG_STRLEN_MAX).map_err(|e| if e == ENAMETOOLONG { E2BIG } else { e })?;
        let pushed = if env { block.push_env(&s) } else { block.push_arg(&s) };
        pushed.map_err(|e| if e == ElfError::TooBig { E2BIG } else { ENOMEM })?;
    }
    Ok(())
}

/// The channel timed sleeps sleep on (nothing wakes it: only the timeout).
fn sleep_chan() -> usize {
    static CHAN: u8 = 0;
    &CHAN as *const u8 as usize
}

// ---- processes ---------------------------------------------------------------

/// `execve(path, argv, envp)`: the program at `path` (see `programs`).
pub fn execve(tf: &mut TrapFrame, path: u64, argv: u64, envp: u64) -> i64 {
    let path = match copy_string(path, 4095) {
        Ok(p) => p,
        Err(e) => return -e,
    };
    let mut args = match crate::proc::elf::ArgBlock::new() {
        Ok(b) => b,
        Err(_) => return -ENOMEM,
    };
    if let Err(e) = copy_string_array(argv, &mut args, false).and_then(|()| copy_string_array(envp, &mut args, true)) {
        return -e;
    }
    if path.is_empty() {
        return -ENOENT;
    }
    // The path is bytes to the end: a name that is not UTF-8 is looked up
    // as it is (only the built-in programs, all named in ASCII, need text).
    let image = match crate::proc::image::program(&path) {
        Ok(image) => image,
        Err(e) => match core::str::from_utf8(&path).ok().and_then(crate::proc::programs::lookup) {
            Some(b) => crate::proc::image::Image::Static(b),
            None if e == pager::ext2::FsError::NotFound || crate::fs::root().is_none() => return -ENOENT,
            None if e == pager::ext2::FsError::NoSpace => return -ENOMEM,
            None => return -(e.errno() as i64),
        },
    };
    let base = path.rsplit(|&b| b == b'/').next().unwrap_or(&path);
    let name = String::from_utf8_lossy(base);
    let name = &*name;
    match proc::exec(tf, name, proc::Exec { image, args }) {
        Ok(()) => 0,
        Err(proc::SpawnError::NoMemory) => -ENOMEM,
        Err(proc::SpawnError::TooMany) => -EAGAIN,
        Err(proc::SpawnError::Load(crate::proc::elf::ElfError::NoMemory)) => -ENOMEM,
        Err(proc::SpawnError::Load(crate::proc::elf::ElfError::TooBig)) => -E2BIG,
        Err(proc::SpawnError::Load(crate::proc::elf::ElfError::Fault)) => -EFAULT,
        Err(proc::SpawnError::Load(_)) => -ENOEXEC,
        Err(proc::SpawnError::Interrupted) => -EINTR,
    }
}

/// `wait4(pid, wstatus, options, rusage)`: pid -1 or a child's; WNOHANG.
pub fn wait4(pid: i64, wstatus: u64, options: u64, rusage: u64) -> i64 {
    const WNOHANG: u64 = 1;
    const WUNTRACED: u64 = 2;
    const WCONTINUED: u64 = 8;
    const WNOTHREAD: u64 = 0x2000_0000;
    const WALL: u64 = 0x4000_0000;
    const WCLONE: u64 = 0x8000_0000;
    if pid < -1 || pid == 0 || options & !(WNOHANG | WUNTRACED | WCONTINUED | WNOTHREAD | WALL | WCLONE) != 0 {
        // Process groups do not exist yet: pid 0 and below -1 name none.
        return if pid == 0 || pid < -1 { -ECHILD } else { -EINVAL };
    }
    // (System calls run with interrupts on: the copies below may fault
    // and page in from disk.)
    let kind = if options & WALL != 0 {
        proc::WaitKind::All
    } else if options & WCLONE != 0 {
        proc::WaitKind::Clone
    } else {
        proc::WaitKind::Normal
    };
    let r = proc::wait_child(pid, options & WNOHANG != 0, kind);
    match r {
        Err(proc::WaitError::NoChild) => -ECHILD,
        Err(proc::WaitError::Interrupted) => -EINTR,
        Ok(None) => 0,
        Ok(Some((cpid, status))) => {
            if wstatus != 0
                && let Err(e) = copy_to_user(wstatus, &status.wstatus().to_le_bytes())
            {
                return -e;
            }
            if rusage != 0 {
                // struct rusage: 144 bytes; no accounting yet.
                if let Err(e) = copy_to_user(rusage, &[0u8; 144]) {
                    return -e;
                }
            }
            cpid as i64
        }
    }
}

/// `kill(pid, sig)`: a process by pid (0: the caller's own group, which is
/// the caller alone; -1: every process but init and the caller).
pub fn kill(pid: i64, sig: u64) -> i64 {
    kill_with(pid, sig, proc::SI_USER)
}

/// `kill`, the handler to be told `code` (SI_USER, or SI_TKILL for
/// `tkill` and `tgkill`) and the sender's pid.
pub(super) fn kill_with(pid: i64, sig: u64, code: i32) -> i64 {
    if sig > proc::NSIG as u64 {
        return -EINVAL;
    }
    let sig = sig as u8;
    let me = proc::current_pid();
    let targets: Vec<_> = match pid {
        0 => proc::by_pid(me).into_iter().collect(),
        -1 => proc::all().into_iter().filter(|p| p.pid != me && p.pid != 1 && !proc::is_init(p)).collect(),
        p if p > 0 => match proc::by_pid(p as u64) {
            Some(t) => alloc::vec![t],
            None if proc::is_zombie_child(p as u64) => return 0,
            None => return -ESRCH,
        },
        p if p.unsigned_abs() == me => proc::by_pid(me).into_iter().collect(),
        _ => return -ESRCH,
    };
    if targets.is_empty() {
        return -ESRCH;
    }
    for t in &targets {
        // Init ignores what it has no handler for, SIGKILL included.
        if proc::is_init(t) && !proc::handles(t, sig) {
            continue;
        }
        let info = proc::SigInfo { code, value: me & 0xffff_ffff, ..proc::SigInfo::default() };
        proc::send_signal_info(t, sig, info);
    }
    0
}

/// `rt_sigaction(sig, act, oldact, sigsetsize)`.
pub fn rt_sigaction(sig: u64, act: u64, oldact: u64, setsize: u64) -> i64 {
    if setsize != 8 || sig == 0 || sig > proc::NSIG as u64 {
        return -EINVAL;
    }
    let sig = sig as u8;
    let Some(p) = proc::current() else { return -EINVAL };
    let new = if act != 0 {
        if sig == proc::SIGKILL || sig == proc::SIGSTOP {
            return -EINVAL;
        }
        let mut b = [0u8; 32];
        if let Err(e) = copy_from_user(&mut b, act) {
            return -e;
        }
        let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        Some(SigAction { handler: w(0), flags: w(1), restorer: w(2), mask: w(3) })
    } else {
        None
    };
    let old = p.actions.lock()[sig as usize - 1];
    if oldact != 0 {
        let mut b = [0u8; 32];
        for (i, v) in [old.handler, old.flags, old.restorer, old.mask].into_iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        if let Err(e) = copy_to_user(oldact, &b) {
            return -e;
        }
    }
    if let Some(a) = new {
        p.actions.lock()[sig as usize - 1] = a;
        proc::discard_ignored(&p);
    }
    0
}

/// `sigaltstack(ss, old_ss)` for a thread whose stack pointer is `rsp`:
/// the alternate stack handlers with `SA_ONSTACK` run on. EPERM while on
/// it, EINVAL for unknown flags, ENOMEM below MINSIGSTKSZ, as Linux.
pub fn sigaltstack(rsp: u64, ss: u64, old: u64) -> i64 {
    const MINSIGSTKSZ: u64 = 2048;
    const SS_AUTODISARM: u32 = 1 << 31;
    let Some(t) = proc::current_thread() else { return -EINVAL };
    let cur = *t.altstack.lock();
    if old != 0 {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&cur.sp.to_le_bytes());
        b[8..12].copy_from_slice(&cur.flags(rsp).to_le_bytes());
        b[16..].copy_from_slice(&cur.size.to_le_bytes());
        if let Err(e) = copy_to_user(old, &b) {
            return -e;
        }
    }
    if ss == 0 {
        return 0;
    }
    let mut b = [0u8; 24];
    if let Err(e) = copy_from_user(&mut b, ss) {
        return -e;
    }
    if cur.holds(rsp) {
        return -EPERM;
    }
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
    let flags = u32::from_le_bytes(b[8..12].try_into().unwrap_or_default()) & !SS_AUTODISARM;
    let new = match flags {
        proc::SS_DISABLE => proc::AltStack::default(),
        0 | proc::SS_ONSTACK => {
            let (sp, size) = (word(0), word(16));
            if size < MINSIGSTKSZ {
                return -ENOMEM;
            }
            proc::AltStack { sp, size, disabled: false }
        }
        _ => return -EINVAL,
    };
    *t.altstack.lock() = new;
    0
}

/// `rt_sigprocmask(how, set, oldset, sigsetsize)`.
pub fn rt_sigprocmask(how: u64, set: u64, oldset: u64, setsize: u64) -> i64 {
    const SIG_BLOCK: u64 = 0;
    const SIG_UNBLOCK: u64 = 1;
    const SIG_SETMASK: u64 = 2;
    if setsize != 8 {
        return -EINVAL;
    }
    let Some(t) = proc::current_thread() else { return -EINVAL };
    let old = t.blocked.load(Ordering::SeqCst);
    let new = if set != 0 {
        let v = match read_u64(set) {
            Ok(v) => v,
            Err(e) => return -e,
        };
        Some(match how {
            SIG_BLOCK => old | v,
            SIG_UNBLOCK => old & !v,
            SIG_SETMASK => v,
            _ => return -EINVAL,
        })
    } else {
        None
    };
    if oldset != 0
        && let Err(e) = copy_to_user(oldset, &old.to_le_bytes())
    {
        return -e;
    }
    if let Some(v) = new {
        // SIGKILL and SIGSTOP cannot be blocked.
        t.set_blocked(v);
    }
    0
}

/// `rt_sigpending(set, sigsetsize)`: signals pending and blocked.
pub fn rt_sigpending(set: u64, setsize: u64) -> i64 {
    if setsize != 8 {
        return -EINVAL;
    }
    let Some(t) = proc::current_thread() else { return -EINVAL };
    let v = t.pending_signals() & t.blocked.load(Ordering::SeqCst);
    ret(copy_to_user(set, &v.to_le_bytes()).map(|_| 0))
}

// ---- identity and time ---------------------------------------------------------

/// `uname(buf)`: `struct utsname`, six fields of 65 bytes.
pub fn uname(buf: u64) -> i64 {
    let fields: [&str; 6] = ["Linux", "bsdvm", "6.1.0-bsdvm", "#1 SMP bsdvm", "x86_64", "(none)"];
    let mut b = [0u8; 6 * 65];
    for (i, f) in fields.iter().enumerate() {
        b[i * 65..i * 65 + f.len()].copy_from_slice(f.as_bytes());
    }
    ret(copy_to_user(buf, &b).map(|_| 0))
}

const CLOCK_REALTIME: u64 = 0;
const CLOCK_MONOTONIC: u64 = 1;
const CLOCK_PROCESS_CPUTIME_ID: u64 = 2;
const CLOCK_THREAD_CPUTIME_ID: u64 = 3;
const CLOCK_MONOTONIC_RAW: u64 = 4;
const CLOCK_REALTIME_COARSE: u64 = 5;
const CLOCK_MONOTONIC_COARSE: u64 = 6;
const CLOCK_BOOTTIME: u64 = 7;

/// The time of `clock` in nanoseconds, or None for a clock that does not
/// exist. The CPU-time clocks read the monotonic clock (no accounting yet).
pub(super) fn clock_ns(clock: u64) -> Option<u64> {
    match clock {
        CLOCK_REALTIME | CLOCK_REALTIME_COARSE => Some(crate::kern::time::realtime_ns()),
        CLOCK_MONOTONIC | CLOCK_MONOTONIC_RAW | CLOCK_MONOTONIC_COARSE | CLOCK_BOOTTIME => {
            Some(crate::kern::time::monotonic_ns())
        }
        CLOCK_PROCESS_CPUTIME_ID | CLOCK_THREAD_CPUTIME_ID => Some(crate::kern::time::monotonic_ns()),
        _ => None,
    }
}

fn put_timespec(addr: u64, ns: u64) -> Result<(), i64> {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(ns / NS).to_le_bytes());
    b[8..].copy_from_slice(&(ns % NS).to_le_bytes());
    copy_to_user(addr, &b)
}

pub(super) fn get_timespec(addr: u64) -> Result<u64, i64> {
    let mut b = [0u8; 16];
    copy_from_user(&mut b, addr)?;
    let sec = i64::from_le_bytes(b[..8].try_into().unwrap_or_default());
    let nsec = i64::from_le_bytes(b[8..].try_into().unwrap_or_default());
    if sec < 0 || !(0..NS as i64).contains(&nsec) {
        return Err(EINVAL);
    }
    Ok((sec as u64).saturating_mul(NS).saturating_add(nsec as u64))
}

/// `clock_gettime(clock, tp)`.
pub fn clock_gettime(clock: u64, tp: u64) -> i64 {
    let Some(ns) = clock_ns(clock) else { return -EINVAL };
    ret(put_timespec(tp, ns).map(|_| 0))
}

/// `clock_getres(clock, res)`: 1 ns (the TSC).
pub fn clock_getres(clock: u64, res: u64) -> i64 {
    if clock_ns(clock).is_none() {
        return -EINVAL;
    }
    if res == 0 {
        return 0;
    }
    ret(put_timespec(res, 1).map(|_| 0))
}

/// `gettimeofday(tv, tz)`.
pub fn gettimeofday(tv: u64, tz: u64) -> i64 {
    let ns = crate::kern::time::realtime_ns();
    if tv != 0 {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&(ns / NS).to_le_bytes());
        b[8..].copy_from_slice(&(ns % NS / 1000).to_le_bytes());
        if let Err(e) = copy_to_user(tv, &b) {
            return -e;
        }
    }
    if tz != 0
        && let Err(e) = copy_to_user(tz, &[0u8; 8])
    {
        return -e;
    }
    0
}

/// `time(t)`.
pub fn time(t: u64) -> i64 {
    let s = crate::kern::time::realtime_ns() / NS;
    if t != 0
        && let Err(e) = copy_to_user(t, &s.to_le_bytes())
    {
        return -e;
    }
    s as i64
}

/// Sleeps until `clock` reads `deadline` ns. A signal ends it early: then
/// the time left is returned as the error.
fn sleep_until_ns(clock: u64, deadline: u64) -> Result<(), u64> {
    let me = proc::current_thread();
    // Checked again under the scheduler's lock as the thread goes to
    // sleep: a signal sent between the check above it and the sleep would
    // otherwise find the thread not yet asleep, and the sleep would last
    // to its deadline (for pause and sigsuspend, for ever).
    let no_signal = || me.as_ref().is_none_or(|t| !proc::signal_pending_in(t));
    loop {
        let now = clock_ns(clock).unwrap_or(deadline);
        if now >= deadline {
            break Ok(());
        }
        if !no_signal() {
            break Err(deadline - now);
        }
        let ms = (deadline - now).div_ceil(1_000_000);
        crate::kern::sched::sleep_until(sleep_chan(), crate::kern::time::ticks().saturating_add(ms), no_signal);
    }
}

/// `rt_sigsuspend(mask, sigsetsize)`: waits for a signal with `mask` as
/// the mask, and returns EINTR once one is acted on; its handler's frame
/// saves the mask from before the call, which `rt_sigreturn` puts back.
pub fn rt_sigsuspend(mask: u64, setsize: u64) -> i64 {
    if setsize != 8 {
        return -EINVAL;
    }
    let mut b = [0u8; 8];
    if let Err(e) = copy_from_user(&mut b, mask) {
        return -e;
    }
    let Some(t) = proc::current_thread() else { return -EINVAL };
    let old = t.blocked.load(Ordering::SeqCst);
    *t.saved_mask.lock() = Some(old);
    t.set_blocked(u64::from_le_bytes(b));
    // Until a signal the new mask lets through: then EINTR, and the return
    // to user mode acts on it.
    let _ = sleep_until_ns(CLOCK_MONOTONIC, u64::MAX);
    -EINTR
}

/// `rt_sigtimedwait(set, info, timeout, sigsetsize)`: the first of the
/// signals `set` to be pending, taken without its handler; EAGAIN when the
/// (relative) timeout passes, EINTR for another signal.
pub fn rt_sigtimedwait(set: u64, info: u64, timeout: u64, setsize: u64) -> i64 {
    if setsize != 8 {
        return -EINVAL;
    }
    let set = match read_u64(set) {
        Ok(v) => v,
        Err(e) => return -e,
    };
    let deadline = match timeout {
        0 => None,
        t => match get_timespec(t) {
            Ok(ns) => Some(crate::kern::time::monotonic_ns().saturating_add(ns)),
            Err(e) => return -e,
        },
    };
    match proc::wait_for_signals(set, deadline) {
        Ok((sig, si)) => {
            if info != 0
                && let Err(e) = copy_to_user(info, &si.bytes(sig))
            {
                return -e;
            }
            sig as i64
        }
        Err(proc::SigWait::TimedOut) => -EAGAIN,
        Err(proc::SigWait::Interrupted) => -EINTR,
    }
}

/// `rt_sigqueueinfo(pid, sig, info)`, and `rt_tgsigqueueinfo(tgid, tid,
/// sig, info)` with `tid` Some: a signal with the caller's own info. To
/// another process only with a negative code other than SI_TKILL (the
/// kernel's codes are not to be forged), as Linux requires: EPERM.
pub fn rt_sigqueueinfo(pid: i64, tid: Option<i64>, sig: u64, uinfo: u64) -> i64 {
    if sig == 0 || sig > proc::NSIG as u64 || pid <= 0 || tid.is_some_and(|t| t <= 0) {
        return -EINVAL;
    }
    let mut b = [0u8; proc::SIGINFO_SIZE];
    if let Err(e) = copy_from_user(&mut b, uinfo) {
        return -e;
    }
    let info = proc::SigInfo::from_bytes(&b);
    let Some(target) = proc::by_pid(pid as u64) else { return -ESRCH };
    if (info.code >= 0 || info.code == proc::SI_TKILL) && target.pid != proc::current_pid() {
        return -EPERM;
    }
    let sig = sig as u8;
    if proc::is_init(&target) && !proc::handles(&target, sig) {
        return 0;
    }
    match tid {
        None => proc::send_signal_info(&target, sig, info),
        Some(tid) => match proc::thread_by_tid(tid as u64).filter(|t| alloc::sync::Arc::ptr_eq(&t.process, &target)) {
            Some(t) => proc::send_thread_signal(&t, sig, info),
            None => return -ESRCH,
        },
    }
    0
}

/// `ITIMER_REAL`, the one interval timer there is (the virtual and
/// profiling ones are EINVAL).
const ITIMER_REAL: u64 = 0;

/// A `struct itimerval` (interval, then value; each seconds and
/// microseconds) from ns.
fn itimerval((value, interval): (u64, u64)) -> [u8; 32] {
    let mut b = [0u8; 32];
    for (i, ns) in [interval, value].into_iter().enumerate() {
        b[i * 16..i * 16 + 8].copy_from_slice(&(ns / NS).to_le_bytes());
        b[i * 16 + 8..i * 16 + 16].copy_from_slice(&(ns % NS).div_ceil(1000).to_le_bytes());
    }
    b
}

/// `getitimer(which, curr)`.
pub fn getitimer(which: u64, curr: u64) -> i64 {
    let Some(p) = proc::current() else { return -EINVAL };
    if which != ITIMER_REAL {
        return -EINVAL;
    }
    match copy_to_user(curr, &itimerval(p.itimer.get())) {
        Ok(()) => 0,
        Err(e) => -e,
    }
}

/// `setitimer(which, new, old)`: EINVAL for microseconds out of range.
pub fn setitimer(which: u64, new: u64, old: u64) -> i64 {
    let Some(p) = proc::current() else { return -EINVAL };
    if which != ITIMER_REAL {
        return -EINVAL;
    }
    let mut b = [0u8; 32];
    if let Err(e) = copy_from_user(&mut b, new) {
        return -e;
    }
    let word = |i: usize| i64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default());
    let mut ns = [0u64; 2];
    for (k, n) in ns.iter_mut().enumerate() {
        let (sec, usec) = (word(k * 2), word(k * 2 + 1));
        if sec < 0 || !(0..1_000_000).contains(&usec) {
            return -EINVAL;
        }
        *n = (sec as u64).saturating_mul(NS).saturating_add(usec as u64 * 1000);
    }
    let was = p.itimer.set(ns[1], ns[0]);
    if old != 0
        && let Err(e) = copy_to_user(old, &itimerval(was))
    {
        return -e;
    }
    0
}

/// `alarm(seconds)`: SIGALRM in that many seconds (0: none); returns the
/// seconds the last one had left, rounded as Linux does.
pub fn alarm(seconds: u64) -> i64 {
    let Some(p) = proc::current() else { return 0 };
    let (left, _) = p.itimer.set(seconds.min(u32::MAX as u64).saturating_mul(NS), 0);
    let (sec, rest) = (left / NS, left % NS);
    (if rest >= NS / 2 || (sec == 0 && left > 0) { sec + 1 } else { sec }) as i64
}

/// `pause()`: sleeps until a signal comes; always EINTR (every signal not
/// ignored ends the process on the way out).
pub fn pause() -> i64 {
    match sleep_until_ns(CLOCK_MONOTONIC, u64::MAX) {
        Ok(()) => 0,
        Err(_) => -EINTR,
    }
}

/// `nanosleep(req, rem)`.
pub fn nanosleep(req: u64, rem: u64) -> i64 {
    let ns = match get_timespec(req) {
        Ok(ns) => ns,
        Err(e) => return -e,
    };
    let start = crate::kern::time::monotonic_ns();
    match sleep_until_ns(CLOCK_MONOTONIC, start.saturating_add(ns)) {
        Ok(()) => 0,
        Err(left) => {
            if rem != 0 {
                let _ = put_timespec(rem, left);
            }
            -EINTR
        }
    }
}

/// `clock_nanosleep(clock, flags, req, rem)`: relative, or TIMER_ABSTIME.
pub fn clock_nanosleep(clock: u64, flags: u64, req: u64, rem: u64) -> i64 {
    const TIMER_ABSTIME: u64 = 1;
    match clock {
        CLOCK_REALTIME | CLOCK_MONOTONIC | CLOCK_BOOTTIME => {}
        CLOCK_PROCESS_CPUTIME_ID | CLOCK_THREAD_CPUTIME_ID => return -EINVAL,
        _ => return -EINVAL,
    }
    if flags & !TIMER_ABSTIME != 0 {
        return -EINVAL;
    }
    let ns = match get_timespec(req) {
        Ok(ns) => ns,
        Err(e) => return -e,
    };
    let now = clock_ns(clock).unwrap_or(0);
    let deadline = if flags & TIMER_ABSTIME != 0 { ns } else { now.saturating_add(ns) };
    match sleep_until_ns(clock, deadline) {
        Ok(()) => 0,
        Err(left) => {
            if rem != 0 && flags & TIMER_ABSTIME == 0 {
                let _ = put_timespec(rem, left);
            }
            -EINTR
        }
    }
}

/// `sched_yield()`.
pub fn sched_yield() -> i64 {
    crate::kern::sched::yield_now();
    0
}

/// `getrlimit(resource, rlim)`.
pub fn getrlimit(resource: u64, rlim: u64) -> i64 {
    prlimit64(0, resource, 0, rlim)
}

/// `setrlimit(resource, rlim)`.
pub fn setrlimit(resource: u64, rlim: u64) -> i64 {
    prlimit64(0, resource, rlim, 0)
}

/// `prlimit64(pid, resource, new, old)`: reads the limit into `old` and
/// sets it from `new` (either may be NULL), for the caller (pid 0) or any
/// process. A soft limit above the hard one is EINVAL; a hard limit may be
/// raised, as root may; `RLIMIT_NOFILE` stops at `NR_OPEN` (EPERM).
pub fn prlimit64(pid: u64, resource: u64, new: u64, old: u64) -> i64 {
    use proc::{NR_OPEN, RLIM_NLIMITS, RLIMIT_NOFILE, Rlimit};
    if resource >= RLIM_NLIMITS as u64 {
        return -EINVAL;
    }
    let r = resource as usize;
    let new = if new != 0 {
        let mut b = [0u8; 16];
        if let Err(e) = copy_from_user(&mut b, new) {
            return -e;
        }
        let l =
            Rlimit { cur: u64::from_le_bytes(b[..8].try_into().unwrap()), max: u64::from_le_bytes(b[8..].try_into().unwrap()) };
        if l.cur > l.max {
            return -EINVAL;
        }
        if r == RLIMIT_NOFILE && l.max > NR_OPEN {
            return -EPERM;
        }
        Some(l)
    } else {
        None
    };
    let target = match pid {
        0 => proc::current(),
        p if p > i32::MAX as u64 => return -ESRCH,
        p => proc::by_pid(p),
    };
    let Some(target) = target else { return -ESRCH };
    let was = {
        let mut limits = target.limits.lock();
        let was = limits[r];
        if let Some(l) = new {
            limits[r] = l;
        }
        was
    };
    if new.is_some() {
        target.update_map_limits();
    }
    if old != 0 {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&was.cur.to_le_bytes());
        b[8..].copy_from_slice(&was.max.to_le_bytes());
        // As Linux: a bad `old` is EFAULT, the new limit set all the same.
        if let Err(e) = copy_to_user(old, &b) {
            return -e;
        }
    }
    0
}

/// The process's exit status for messages and the host.
pub fn status_line(s: Status) -> String {
    match s {
        Status::Exited(c) => alloc::format!("exited with status {c}"),
        Status::Signaled(sig) => alloc::format!("killed by signal {sig}"),
    }
}
