//! The scheduler state's operations, all under the scheduler lock: the
//! list of all threads, the run queue (first in, first out; a thread runs
//! only on the CPUs of its affinity), the wakeup IPI to a halted CPU, the
//! sleeps that end by channel or by time, and the unlinking of the dead.

use super::*;

impl Sched {
    pub(super) fn threads(&self) -> Threads {
        Threads(self.all)
    }

    /// The record of the thread running on this CPU.
    pub(super) fn cur(&mut self) -> &mut Thread {
        // SAFETY: a CPU's current thread is live (a running thread is never
        // reaped, an idle one never freed), and `&mut self` means the lock
        // is held.
        unsafe { &mut *self.cpus[me()].current }
    }

    /// Whether `t` runs on some CPU now.
    pub(super) fn is_running(&self, t: *mut Thread) -> bool {
        self.cpus.iter().any(|c| c.current == t)
    }

    /// The record of thread `id`, if it is on the list.
    pub(super) fn find(&mut self, id: ThreadId) -> Option<&mut Thread> {
        // SAFETY: as for `threads`; `&mut self` means the lock is held.
        self.threads().find(|&t| unsafe { (*t).id } == id).map(|t| unsafe { &mut *t })
    }

    /// Puts `t` on the list of all threads, ready to run.
    pub(super) fn link(&mut self, t: *mut Thread) {
        // SAFETY: `t` is a fresh record, owned by the scheduler from here on.
        unsafe { (*t).next = self.all };
        self.all = t;
        self.count += 1;
        self.make_ready(t);
    }

    /// Queues `t` to run, unless it is queued already, and sends an IPI to
    /// a halted CPU that may run it.
    pub(super) fn make_ready(&mut self, t: *mut Thread) {
        if self.enqueue(t) {
            // SAFETY: `t` is on the list; the lock is held.
            let allowed = unsafe { (*t).affinity };
            self.kick_one(allowed & !(1 << me()));
        }
    }

    /// Queues `t` to run at the tail; false if it was queued already.
    pub(super) fn enqueue(&mut self, t: *mut Thread) -> bool {
        // SAFETY: `t` is on the list of all threads; the lock is held.
        let r = unsafe { &mut *t };
        r.state = State::Ready;
        if r.queued {
            return false;
        }
        r.queued = true;
        r.ready_next = ptr::null_mut();
        if self.ready_tail.is_null() {
            self.ready_head = t;
        } else {
            // SAFETY: the tail is a queued record, live on the list.
            unsafe { (*self.ready_tail).ready_next = t };
        }
        self.ready_tail = t;
        true
    }

    /// Wakes one halted CPU among `cpus`, if any is.
    pub(super) fn kick_one(&mut self, cpus: u64) {
        let halted = self.halted & cpus;
        if halted == 0 {
            return;
        }
        let n = halted.trailing_zeros() as usize;
        self.halted &= !(1 << n);
        if let Some(cpu) = percpu::cpu(n) {
            crate::arch::apic::send_ipi(
                cpu.apic_id.load(Ordering::Relaxed),
                crate::arch::apic::Ipi::Fixed(crate::arch::trapframe::VEC_WAKEUP),
            );
        }
    }

    /// Takes the first thread of the ready queue that CPU `cpu` may run,
    /// dropping from the queue on the way any that is no longer ready.
    pub(super) fn pop_ready(&mut self, cpu: usize) -> Option<*mut Thread> {
        let mut prev: *mut Thread = ptr::null_mut();
        let mut t = self.ready_head;
        while !t.is_null() {
            // SAFETY: a queued record is live on the list.
            let r = unsafe { &mut *t };
            let next = r.ready_next;
            let stale = r.state != State::Ready;
            if stale || r.affinity & (1 << cpu) != 0 {
                // Unlink `t`.
                if prev.is_null() {
                    self.ready_head = next;
                } else {
                    // SAFETY: `prev` is a queued record.
                    unsafe { (*prev).ready_next = next };
                }
                if self.ready_tail == t {
                    self.ready_tail = prev;
                }
                r.queued = false;
                r.ready_next = ptr::null_mut();
                if !stale {
                    return Some(t);
                }
            } else {
                prev = t;
            }
            t = next;
        }
        None
    }

    /// Whether a thread that CPU `cpu` may run is queued.
    pub(super) fn has_ready(&self, cpu: usize) -> bool {
        let mut t = self.ready_head;
        while !t.is_null() {
            // SAFETY: a queued record is live on the list.
            let r = unsafe { &*t };
            if r.state == State::Ready && r.affinity & (1 << cpu) != 0 {
                return true;
            }
            t = r.ready_next;
        }
        false
    }

    /// Ends the sleep of `t`: the one place a sleep ends, so that its
    /// deadline ends with it.
    pub(super) fn end_sleep(&mut self, t: *mut Thread) {
        // SAFETY: `t` is on the list; the lock is held.
        unsafe { (*t).wake_at = 0 };
        self.make_ready(t);
    }

    /// Makes every thread sleeping on `chan` ready.
    pub(super) fn wake_chan(&mut self, chan: usize) {
        for t in self.threads() {
            // SAFETY: listed records are live under the lock.
            if unsafe { (*t).state } == State::Sleeping(chan) {
                self.end_sleep(t);
            }
        }
    }

    /// Makes every thread whose timed sleep has ended ready.
    pub(super) fn expire_timeouts(&mut self, now: u64) {
        let mut next = u64::MAX;
        for t in self.threads() {
            // SAFETY: listed records are live under the lock.
            let (state, wake_at) = unsafe { ((*t).state, (*t).wake_at) };
            if let State::Sleeping(_) = state {
                if wake_at != 0 && wake_at <= now {
                    self.end_sleep(t);
                } else if wake_at != 0 {
                    next = next.min(wake_at);
                }
            }
        }
        self.set_next_timeout(next);
    }

    pub(super) fn set_next_timeout(&mut self, t: u64) {
        self.next_timeout = t;
        // Relaxed: a hint for the timer's look without the lock; the
        // decision is taken again under it.
        NEXT_TIMEOUT.store(t, Ordering::Relaxed);
    }

    /// Unlinks the dead threads and returns them as a chain through `next`,
    /// for the caller to free once the lock is dropped. (A dead thread is
    /// never running here: it died holding the lock, and the lock was let
    /// go only after the switch away from it.)
    pub(super) fn unlink_dead(&mut self) -> *mut Thread {
        let mut chain = ptr::null_mut();
        let mut link: *mut *mut Thread = &mut self.all;
        // SAFETY: `link` points at the list head or at the `next` field of
        // a listed record; the lock is held throughout. A dead thread is
        // never queued (it was running when it died, and nothing readies
        // it), so the ready queue does not name an unlinked record.
        unsafe {
            while !(*link).is_null() {
                let t = *link;
                if (*t).state == State::Dead {
                    debug_assert!(!self.is_running(t), "a dead thread still runs");
                    *link = (*t).next;
                    (*t).next = chain;
                    chain = t;
                    self.count -= 1;
                    self.dead -= 1;
                } else {
                    link = &mut (*t).next;
                }
            }
        }
        chain
    }
}
