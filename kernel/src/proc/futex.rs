//! Futexes: threads sleeping on a 32-bit word of user memory until another
//! wakes them, Linux's `futex` (WAIT, WAKE, the BITSET forms, REQUEUE,
//! CMP_REQUEUE, WAKE_OP).
//!
//! A futex is named by a key. A private one (`FUTEX_PRIVATE_FLAG`) is the
//! address space and the address. A shared one is the vm_object and the
//! byte offset in it when the word lies in a shared mapping (`MAP_SHARED`
//! of a file or of anonymous memory), so that two processes mapping the
//! same page meet whatever their addresses; in a private mapping it is
//! the address space and the address again, but a key of its own kind,
//! as on Linux (a private and a shared operation on one word do not
//! meet). A waiter holds a reference to its object while it waits, so the
//! key cannot name another object meanwhile.
//!
//! Waiters are queued in one of [`BUCKETS`] lists by the key's hash, each
//! behind a sleeping lock. WAIT reads the word with the bucket locked and
//! queues itself before unlocking: a waker changes the word first and then
//! takes the same lock to wake, so either the waiter reads the new value
//! (EAGAIN) or it is queued before the wake looks (no lost wakeup). The
//! read may fault, and fault in a page that was paged out or never
//! touched: that is why the bucket lock is a sleeping one.
//!
//! A waiter lives on its thread's kernel stack. A waker takes it off the
//! list, then sets its `woken` flag, and after that touches it no more;
//! the waiter leaves only once it sees the flag or has taken itself off
//! the list under the lock.

use alloc::sync::Arc;
use core::cell::Cell;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use vm::map::Inherit;
use vm::object::VmObject;
use vm::sync::SleepLock;

use super::signal::signal_pending_in;
use super::{current, current_thread};
use crate::kern::{sched, time};
use crate::syscall::errno::{EAGAIN, EFAULT, EINTR, EINVAL, ETIMEDOUT};
use crate::syscall::uaccess::read_user_u32;

/// A wake's or a wait's bitset that matches any other.
pub const BITSET_ANY: u32 = u32::MAX;

/// Buckets of waiters (a power of two).
const BUCKETS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A private futex: (address space, address).
    Private,
    /// A shared futex in a private mapping: (address space, address).
    MmShared,
    /// A shared futex in a shared mapping: (object, offset).
    Object,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    kind: Kind,
    a: usize,
    b: u64,
}

impl Key {
    fn bucket(&self) -> usize {
        let h = (self.a as u64 ^ self.b.rotate_left(17) ^ self.kind as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> 58) as usize % BUCKETS
    }
}

/// The key of the futex word at `addr`, and the object it names (kept
/// while the key is in use).
fn key_of(addr: u64, private: bool) -> Result<(Key, Option<Arc<VmObject>>), i64> {
    if !addr.is_multiple_of(4) {
        return Err(EINVAL);
    }
    let space = current().and_then(|p| p.space()).ok_or(EFAULT)?;
    let a = Arc::as_ptr(&space) as usize;
    if private {
        return Ok((Key { kind: Kind::Private, a, b: addr }, None));
    }
    let map = space.map.lock();
    let e = map.entry(addr).ok_or(EFAULT)?;
    if !e.cow
        && e.inherit == Inherit::Share
        && let Some(obj) = &e.object
    {
        let offset = e.offset + (addr - e.start);
        return Ok((Key { kind: Kind::Object, a: Arc::as_ptr(obj) as usize, b: offset }, Some(obj.clone())));
    }
    Ok((Key { kind: Kind::MmShared, a, b: addr }, None))
}

/// A thread waiting on a futex, on its kernel stack.
struct Waiter {
    /// Its key: changed by a requeue, with both buckets locked; read with
    /// its bucket locked. (B)
    key: Cell<Key>,
    /// The bucket it is queued in. (B; read unlocked to find the lock.)
    bucket: AtomicUsize,
    /// (C)
    bitset: u32,
    /// The scheduler's thread to wake. (C)
    thread: sched::ThreadId,
    /// Taken off the queue by a waker. Release by the waker, the last thing
    /// it does to the waiter; Acquire by the waiter before it leaves.
    woken: AtomicBool,
    /// The next waiter in the bucket. (B)
    next: Cell<*const Waiter>,
}

/// A bucket's list of waiters, newest first. (B: the bucket's lock)
struct List {
    head: *const Waiter,
}

// SAFETY: the waiters a list points at are only reached with the bucket's
// lock held, and each stays on its thread's stack until it is off the
// list (the protocol above).
unsafe impl Send for List {}

static TABLE: [SleepLock<List>; BUCKETS] =
    [const { SleepLock::ranked(List { head: core::ptr::null() }, &vm::witness::order::FUTEX) }; BUCKETS];

impl List {
    fn push(&mut self, w: &Waiter) {
        w.next.set(self.head);
        self.head = w;
    }

    /// Takes `w` off the list; false if it was not on it.
    fn remove(&mut self, w: *const Waiter) -> bool {
        let mut link: *const Cell<*const Waiter> = core::ptr::null();
        let mut cur = self.head;
        while !cur.is_null() {
            // SAFETY: a queued waiter is live (see the module's protocol).
            let next = unsafe { (*cur).next.get() };
            if cur == w {
                match link.is_null() {
                    true => self.head = next,
                    // SAFETY: `link` is the `next` of a queued waiter.
                    false => unsafe { (*link).set(next) },
                }
                return true;
            }
            // SAFETY: as above.
            link = unsafe { &(*cur).next };
            cur = next;
        }
        false
    }

    /// Takes off up to `n` waiters with `key` whose bitset meets `bitset`,
    /// and hands each to `f` (to wake it or move it). Returns how many.
    fn take(&mut self, key: Key, bitset: u32, n: usize, mut f: impl FnMut(&Waiter)) -> usize {
        let mut done = 0;
        let mut cur = self.head;
        while !cur.is_null() && done < n {
            // SAFETY: a queued waiter is live.
            let w = unsafe { &*cur };
            cur = w.next.get();
            if w.key.get() == key && w.bitset & bitset != 0 {
                self.remove(w);
                f(w);
                done += 1;
            }
        }
        done
    }
}

/// Wakes waiter `w`, already off its list: the last touch of it.
fn wake_one(w: &Waiter) {
    let thread = w.thread;
    w.woken.store(true, Ordering::Release);
    sched::wake_thread(thread);
}

/// `FUTEX_WAIT` / `FUTEX_WAIT_BITSET`: sleeps while the word at `addr`
/// holds `val`, until woken by a wake whose bitset meets `bitset`, a signal
/// (EINTR), or the monotonic clock reaching `deadline` ns (ETIMEDOUT).
/// EAGAIN at once if the word holds something else.
pub fn wait(addr: u64, private: bool, val: u32, deadline: Option<u64>, bitset: u32) -> Result<(), i64> {
    if bitset == 0 {
        return Err(EINVAL);
    }
    let (key, _object) = key_of(addr, private)?;
    let me = current_thread().ok_or(EINVAL)?;
    let w = Waiter {
        key: Cell::new(key),
        bucket: AtomicUsize::new(key.bucket()),
        bitset,
        thread: sched::current(),
        woken: AtomicBool::new(false),
        next: Cell::new(core::ptr::null()),
    };
    {
        let mut list = TABLE[key.bucket()].lock();
        if read_user_u32(addr)? != val {
            return Err(EAGAIN);
        }
        list.push(&w);
    }
    let r = loop {
        if w.woken.load(Ordering::Acquire) {
            return Ok(());
        }
        if signal_pending_in(&me) {
            break Err(EINTR);
        }
        let now = time::monotonic_ns();
        let ticks = match deadline {
            Some(d) if d <= now => break Err(ETIMEDOUT),
            Some(d) => time::ticks() + (d - now).div_ceil(1_000_000),
            None => u64::MAX,
        };
        sched::sleep_until(&w as *const Waiter as usize, ticks, || !w.woken.load(Ordering::Acquire) && !signal_pending_in(&me));
    };
    // Off the queue, unless a waker took it off first (then it was woken:
    // success, as on Linux).
    loop {
        let b = w.bucket.load(Ordering::Acquire);
        let mut list = TABLE[b].lock();
        if w.bucket.load(Ordering::Relaxed) != b {
            continue; // requeued meanwhile
        }
        if w.woken.load(Ordering::Acquire) {
            return Ok(());
        }
        list.remove(&w);
        return r;
    }
}

/// `FUTEX_WAKE` / `FUTEX_WAKE_BITSET`: wakes up to `n` waiters on the word
/// at `addr` whose bitset meets `bitset`; returns how many.
pub fn wake(addr: u64, private: bool, n: usize, bitset: u32) -> Result<usize, i64> {
    if bitset == 0 {
        return Err(EINVAL);
    }
    let (key, _object) = key_of(addr, private)?;
    let mut list = TABLE[key.bucket()].lock();
    Ok(list.take(key, bitset, n, wake_one))
}

/// The two buckets of a requeue or a wake-op, locked in address order (one
/// lock when they are the same bucket).
fn lock_two(b1: usize, b2: usize) -> (vm::sync::SleepGuard<'static, List>, Option<vm::sync::SleepGuard<'static, List>>) {
    if b1 == b2 {
        return (TABLE[b1].lock(), None);
    }
    if b1 < b2 {
        let g1 = TABLE[b1].lock();
        (g1, Some(TABLE[b2].lock()))
    } else {
        let g2 = TABLE[b2].lock();
        (TABLE[b1].lock(), Some(g2))
    }
}

/// `FUTEX_REQUEUE` / `FUTEX_CMP_REQUEUE`: wakes up to `n_wake` waiters on
/// `addr` and moves up to `n_move` more to wait on `addr2`; with `cmp`,
/// first checks that `addr` still holds it (EAGAIN if not). Returns how
/// many were woken and moved.
pub fn requeue(addr: u64, addr2: u64, private: bool, n_wake: usize, n_move: usize, cmp: Option<u32>) -> Result<usize, i64> {
    let (k1, _o1) = key_of(addr, private)?;
    let (k2, _o2) = key_of(addr2, private)?;
    let (b1, b2) = (k1.bucket(), k2.bucket());
    let (mut g1, mut g2) = lock_two(b1, b2);
    if let Some(v) = cmp
        && read_user_u32(addr)? != v
    {
        return Err(EAGAIN);
    }
    let woken = g1.take(k1, BITSET_ANY, n_wake, wake_one);
    let mut moved: [*const Waiter; 16] = [core::ptr::null(); 16];
    let mut total = 0;
    // In rounds of 16, so that nothing is allocated.
    loop {
        let mut k = 0;
        let want = (n_move - total).min(moved.len());
        g1.take(k1, BITSET_ANY, want, |w| {
            moved[k] = w;
            k += 1;
        });
        for &w in &moved[..k] {
            // SAFETY: taken off the list just now with the lock held, and
            // not woken: still live on its thread's stack.
            let w = unsafe { &*w };
            w.key.set(k2);
            w.bucket.store(b2, Ordering::Release);
            match g2.as_mut() {
                Some(g) => g.push(w),
                None => g1.push(w),
            }
        }
        total += k;
        if k < want || total == n_move {
            break;
        }
    }
    Ok(woken + total)
}

/// `FUTEX_WAKE_OP`: applies `op` to the word at `addr2` atomically, wakes
/// up to `n` waiters on `addr`, and, if the old value of `addr2` passes
/// `op`'s comparison, up to `n2` on `addr2`. Returns how many were woken.
pub fn wake_op(addr: u64, addr2: u64, private: bool, n: usize, n2: usize, op: u32) -> Result<usize, i64> {
    let (k1, _o1) = key_of(addr, private)?;
    let (k2, _o2) = key_of(addr2, private)?;
    let shift = op >> 28 & 8 != 0;
    let kind = op >> 28 & 7;
    let cmp = op >> 24 & 15;
    let sext = |v: u32| ((v << 20) as i32 >> 20) as u32;
    let mut oparg = sext(op >> 12 & 0xfff);
    let cmparg = sext(op & 0xfff) as i32;
    if shift {
        oparg = 1u32.checked_shl(oparg & 31).unwrap_or(0);
    }
    if kind > 4 || cmp > 5 {
        return Err(crate::syscall::errno::ENOSYS);
    }
    let (mut g1, mut g2) = lock_two(k1.bucket(), k2.bucket());
    let mut old = read_user_u32(addr2)?;
    loop {
        let new = match kind {
            0 => oparg,
            1 => old.wrapping_add(oparg),
            2 => old | oparg,
            3 => old & !oparg,
            _ => old ^ oparg,
        };
        let seen = crate::syscall::uaccess::cmpxchg_user_u32(addr2, old, new)?;
        if seen == old {
            break;
        }
        old = seen;
    }
    let mut woken = g1.take(k1, BITSET_ANY, n, wake_one);
    let old = old as i32;
    let pass = match cmp {
        0 => old == cmparg,
        1 => old != cmparg,
        2 => old < cmparg,
        3 => old <= cmparg,
        4 => old > cmparg,
        _ => old >= cmparg,
    };
    if pass {
        let g = g2.as_mut().unwrap_or(&mut g1);
        woken += g.take(k2, BITSET_ANY, n2, wake_one);
    }
    Ok(woken)
}
