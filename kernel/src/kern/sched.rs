//! Kernel threads and a preemptive round-robin scheduler on one CPU, with
//! BSD-style sleep and wakeup on a wait channel (any address).
//!
//! A thread is a kernel stack and the stack pointer saved when it last
//! switched away. Switching ([`switch_stack`]) saves the callee-saved
//! registers and RFLAGS on the old stack and restores them from the new one,
//! so every thread that is not running sits inside `switch_stack`: in
//! [`yield_now`], in [`sleep_if`], or in the timer interrupt that preempted it.
//! A new thread's stack is built to "return" from `switch_stack` into
//! [`thread_start`].
//!
//! Locking: one scheduler lock (S), an [`IrqOffMutex`]: always taken with
//! interrupts already off, since the timer interrupt takes it too. It is
//! released before the stack switch; interrupts stay off across the switch
//! so nothing can run between the two. Sleeping is atomic with respect to
//! wakeup: [`sleep_if`] evaluates its condition under the scheduler lock, and
//! [`wakeup`] takes the same lock, so a wakeup cannot fall between the check
//! and the sleep. (With more CPUs the lock hand-off across the switch will
//! need the usual care; the VM never relies on interrupts being off.)
//!
//! **No allocation under the scheduler lock.** Everything `schedule` reaches
//! runs with interrupts off, so it must not wait for a lock whose holder
//! may be preempted, and the heap's lock is one a thread may hold anywhere.
//! Thread records are therefore allocated before the lock is taken and
//! freed after it is dropped: the threads form intrusive lists (every thread;
//! the ready queue) through their own records, so linking and unlinking
//! never allocate. A dead thread is unlinked and freed by [`reap`], which
//! runs with interrupts on (at the next spawn, join, yield or sleep of some
//! other thread), never inside the switch. Debug builds check it: the heap
//! panics when it is entered with the scheduler lock held
//! ([`lock_holder`]).
//!
//! Stacks are 32 KiB, with a canary word at the bottom checked at every
//! switch.

use alloc::boxed::Box;
use alloc::string::String;
use core::arch::naked_asm;
use core::fmt::Write;
use core::panic::Location;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use x86_64::instructions::interrupts;

use crate::kern::sync::{IrqOffGuard, IrqOffMutex};

/// Bytes of each kernel thread's stack.
pub const STACK_SIZE: usize = 32 * 1024;
/// Timer ticks a thread runs before it is preempted.
pub const TIME_SLICE_TICKS: u64 = 10;

const CANARY: u64 = 0x5AFE_57AC_CA7A_1157;

pub type ThreadId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Running,
    Ready,
    Sleeping(usize),
    Dead,
}

/// One thread. Every field is the scheduler lock's (S), except where said;
/// the record is allocated before it is linked and freed after it is
/// unlinked, both outside the lock.
struct Thread {
    /// (C)
    id: ThreadId,
    /// (C)
    name: String,
    state: State,
    /// The address space the thread runs in: its PML4 (0: the kernel's) and
    /// the `mm::vmspace::AddressSpace` it belongs to (0: none). Loaded at every
    /// switch to the thread; a new thread inherits its creator's.
    cr3: u64,
    space: usize,
    /// The thread's FS base (user TLS, `arch_prctl(ARCH_SET_FS)`).
    fs_base: u64,
    /// The thread's x87/SSE state while it is switched out (user programs
    /// use SSE; the kernel is built without it). None for the boot thread.
    /// (C: the box; its contents are the thread's own while it runs.)
    fpu: Option<Box<FpuArea>>,
    /// Tick at which a timed sleep ends (0: none).
    wake_at: u64,
    /// Saved stack pointer while not running.
    rsp: u64,
    /// The stack, in kernel virtual memory above a guard page (None for
    /// the boot thread, which runs on the boot stack). (C)
    stack: Option<crate::kern::kmem::KStack>,
    entry: Option<Entry>,
    /// The next thread of the list of all threads.
    next: *mut Thread,
    /// The next thread of the ready queue, and whether the thread is on it.
    ready_next: *mut Thread,
    queued: bool,
    /// The ranked locks the thread holds (debug builds check the lock order
    /// against it: `vm::witness`). The thread's own, touched with
    /// interrupts off; interrupt handlers use the interrupted thread's.
    held: vm::witness::Held,
}

/// A thread's entry: its closure, boxed, and the functions that run it and
/// drop it unrun. Running moves the closure out and frees its box before
/// calling it: the entry of a process's thread never returns (it leaves
/// through `exit`), and a `Box<dyn FnOnce>` called in place keeps its
/// memory until the call returns, which would leak it.
struct Entry {
    data: *mut (),
    run: unsafe fn(*mut ()),
    drop: unsafe fn(*mut ()),
}

// SAFETY: `data` is a `Box<F>` with `F: Send`, owned by the entry alone.
unsafe impl Send for Entry {}

impl Entry {
    /// Boxes `f`; `None` when memory is short.
    fn new<F: FnOnce() + Send + 'static>(f: F) -> Option<Entry> {
        /// # Safety
        /// `p` is the entry's own `Box<F>`, used once.
        unsafe fn run<F: FnOnce()>(p: *mut ()) {
            // SAFETY: as the function's contract says. The box is freed at
            // the end of this statement, before the call.
            let f = *unsafe { Box::from_raw(p as *mut F) };
            f()
        }
        /// # Safety
        /// As for `run`.
        unsafe fn drop<F>(p: *mut ()) {
            // SAFETY: as for `run`.
            core::mem::drop(unsafe { Box::from_raw(p as *mut F) })
        }
        let data = Box::into_raw(Box::try_new(f).ok()?) as *mut ();
        Some(Entry { data, run: run::<F>, drop: drop::<F> })
    }

    fn run(self) {
        let me = core::mem::ManuallyDrop::new(self);
        // SAFETY: `data` is `run`'s own box, and `me` is never used again
        // (nor dropped).
        unsafe { (me.run)(me.data) }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        // SAFETY: an entry dropped unrun still owns its box.
        unsafe { (self.drop)(self.data) }
    }
}

/// The scheduler's state (S). The lists link thread records through their
/// own fields; a record is on the list of all threads from [`Sched::link`]
/// to [`reap`], and is only followed under the lock.
struct Sched {
    /// Every thread, newest first.
    all: *mut Thread,
    /// The ready queue, first to run at the head.
    ready_head: *mut Thread,
    ready_tail: *mut Thread,
    current: *mut Thread,
    /// Threads on `all`, and of those the dead.
    count: usize,
    dead: usize,
    next_id: ThreadId,
    /// Tick at which the current thread's slice ends.
    slice_end: u64,
    /// The earliest `wake_at` of a sleeping thread (u64::MAX: none).
    next_timeout: u64,
}

// SAFETY: the raw pointers name thread records owned by the scheduler and
// only followed with its lock held.
unsafe impl Send for Sched {}

/// An iterator over the list of all threads.
struct Threads(*mut Thread);

impl Iterator for Threads {
    type Item = *mut Thread;
    fn next(&mut self) -> Option<*mut Thread> {
        let t = self.0;
        if t.is_null() {
            return None;
        }
        // SAFETY: a record on the list of all threads is live while the
        // lock is held, and the iterator is only used under it.
        self.0 = unsafe { (*t).next };
        Some(t)
    }
}

impl Sched {
    fn threads(&self) -> Threads {
        Threads(self.all)
    }

    /// The running thread's record.
    fn cur(&mut self) -> &mut Thread {
        // SAFETY: `current` is on the list of all threads (a running thread
        // is never reaped), and `&mut self` means the lock is held.
        unsafe { &mut *self.current }
    }

    /// The record of thread `id`, if it is on the list.
    fn find(&mut self, id: ThreadId) -> Option<&mut Thread> {
        // SAFETY: as for `threads`; `&mut self` means the lock is held.
        self.threads().find(|&t| unsafe { (*t).id } == id).map(|t| unsafe { &mut *t })
    }

    /// Puts `t` on the list of all threads, ready to run.
    fn link(&mut self, t: *mut Thread) {
        // SAFETY: `t` is a fresh record, owned by the scheduler from here on.
        unsafe { (*t).next = self.all };
        self.all = t;
        self.count += 1;
        self.make_ready(t);
    }

    /// Queues `t` to run, unless it is queued already.
    fn make_ready(&mut self, t: *mut Thread) {
        // SAFETY: `t` is on the list of all threads; the lock is held.
        let r = unsafe { &mut *t };
        r.state = State::Ready;
        if r.queued {
            return;
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
    }

    /// Takes the first thread of the ready queue that is still ready.
    fn pop_ready(&mut self) -> Option<*mut Thread> {
        while !self.ready_head.is_null() {
            let t = self.ready_head;
            // SAFETY: a queued record is live on the list.
            let r = unsafe { &mut *t };
            self.ready_head = r.ready_next;
            if self.ready_head.is_null() {
                self.ready_tail = ptr::null_mut();
            }
            r.queued = false;
            if r.state == State::Ready {
                return Some(t);
            }
        }
        None
    }

    fn has_ready(&self) -> bool {
        !self.ready_head.is_null()
    }

    /// Ends the sleep of `t`: the one place a sleep ends, so that its
    /// deadline ends with it.
    fn end_sleep(&mut self, t: *mut Thread) {
        // SAFETY: `t` is on the list; the lock is held.
        unsafe { (*t).wake_at = 0 };
        self.make_ready(t);
    }

    /// Makes every thread sleeping on `chan` ready.
    fn wake_chan(&mut self, chan: usize) {
        for t in self.threads() {
            // SAFETY: listed records are live under the lock.
            if unsafe { (*t).state } == State::Sleeping(chan) {
                self.end_sleep(t);
            }
        }
    }

    /// Makes every thread whose timed sleep has ended ready.
    fn expire_timeouts(&mut self, now: u64) {
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
        self.next_timeout = next;
    }

    /// Unlinks the dead threads other than the current one and returns them
    /// as a chain through `next`, for the caller to free once the lock is
    /// dropped.
    fn unlink_dead(&mut self) -> *mut Thread {
        let mut chain = ptr::null_mut();
        let mut link: *mut *mut Thread = &mut self.all;
        // SAFETY: `link` points at the list head or at the `next` field of
        // a listed record; the lock is held throughout. A dead thread is
        // never queued (it was running when it died, and nothing readies
        // it), so the ready queue does not name an unlinked record.
        unsafe {
            while !(*link).is_null() {
                let t = *link;
                if (*t).state == State::Dead && t != self.current {
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

static SCHED: IrqOffMutex<Option<Sched>> = IrqOffMutex::ranked(None, &vm::witness::order::SCHED);

/// The running thread's held locks (null before threads run). Written at a
/// switch with interrupts off, after the scheduler lock is let go (so that
/// its release is the old thread's); read with interrupts off. (A; the
/// CPU's own.)
static CURRENT_HELD: AtomicPtr<vm::witness::Held> = AtomicPtr::new(ptr::null_mut());

/// Turns on the lock-order check (debug builds): each thread's held locks
/// are kept in its record from now on.
pub fn start_lock_order_checks() {
    vm::witness::set_held(|f| {
        interrupts::without_interrupts(|| {
            let held = CURRENT_HELD.load(Ordering::Relaxed);
            if !held.is_null() {
                // SAFETY: the running thread's record, alive while it runs;
                // interrupts are off, so nothing else touches its stack of
                // held locks meanwhile.
                f(unsafe { &mut *held });
            }
        })
    });
}
/// The kernel's own PML4, loaded for threads with no address space. (C)
static KERNEL_CR3: AtomicU64 = AtomicU64::new(0);

/// Where the scheduler lock was taken, if this CPU holds it: the heap
/// refuses to run under it. (Another CPU's hold is no reason to refuse.)
pub fn lock_holder() -> Option<&'static Location<'static>> {
    SCHED.held_here()
}

/// Loads the address space `cr3` (0: the kernel's) on the CPU.
fn load_cr3(cr3: u64) {
    use x86_64::registers::control::{Cr3, Cr3Flags};
    use x86_64::structures::paging::PhysFrame;
    let target = if cr3 == 0 { KERNEL_CR3.load(Ordering::Relaxed) } else { cr3 };
    if Cr3::read_raw().0.start_address().as_u64() != target {
        // SAFETY: every address space maps the kernel half as the kernel's
        // own tables do, so the kernel keeps running across the switch.
        unsafe { Cr3::write(PhysFrame::containing_address(x86_64::PhysAddr::new(target)), Cr3Flags::empty()) };
    }
}

/// Makes the current thread run in address space `cr3` / `space` (0, 0:
/// the kernel's) from now on, and loads it.
pub fn set_address_space(cr3: u64, space: usize) {
    interrupts::without_interrupts(|| {
        let mut g = SCHED.lock();
        if let Some(s) = g.as_mut() {
            let t = s.cur();
            t.cr3 = cr3;
            t.space = space;
        }
        load_cr3(cr3);
        CURRENT_SPACE.store(space, Ordering::SeqCst);
    });
}

/// The running thread's address space (`mm::vmspace::AddressSpace`, 0:
/// none), as the page-fault handler needs it: loaded at every switch. (A;
/// SeqCst, written with interrupts off and read by the same CPU's faults.)
static CURRENT_SPACE: AtomicUsize = AtomicUsize::new(0);

/// The running thread's address space, as given to [`set_address_space`]
/// (0: none).
pub fn current_space() -> usize {
    CURRENT_SPACE.load(Ordering::SeqCst)
}

/// Context switches so far. (A)
pub static SWITCHES: AtomicU64 = AtomicU64::new(0);

/// Saves the callee-saved registers and RFLAGS on the current stack, stores
/// the stack pointer at `save`, and resumes the context saved at `next`.
#[unsafe(naked)]
unsafe extern "C" fn switch_stack(save: *mut u64, next: u64) {
    naked_asm!(
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "pushfq",
        "mov [rdi], rsp",
        "mov rsp, rsi",
        "popfq",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
    )
}

/// Switches to the next ready thread, if any; the caller has already set
/// its own state (Ready and queued, Sleeping, or Dead). Interrupts must be
/// off; they stay off across the switch. Allocates and frees nothing.
#[inline(never)]
fn schedule(mut guard: IrqOffGuard<'_, Option<Sched>>) {
    debug_assert!(!interrupts::are_enabled());
    let s = guard.as_mut().unwrap();
    let cur = s.current;
    let Some(next) = s.pop_ready() else {
        // Nothing else can run. A thread that is still runnable continues;
        // one that sleeps waits here for an interrupt to wake something.
        if s.cur().state == State::Ready {
            s.cur().state = State::Running;
            return;
        }
        drop(guard);
        let ready = |g: &IrqOffGuard<'_, Option<Sched>>| {
            // SAFETY: the lock is held through `g`; `current` is listed.
            g.as_ref().is_some_and(|s| s.has_ready() || unsafe { (*s.current).state } == State::Ready)
        };
        loop {
            // Idle: zero a free page ahead of need (`PhysMem::zero_idle`),
            // or else wait for an interrupt. The zeroing runs with
            // interrupts on, as halting does: an interrupt may make threads
            // ready, but none runs until this loop looks, so the page in
            // transit is seen by no thread.
            interrupts::enable();
            let zeroed = vm::try_global().is_some_and(|pm| pm.zero_idle());
            interrupts::disable();
            if !zeroed && !ready(&SCHED.lock()) {
                interrupts::enable_and_hlt();
                interrupts::disable();
            }
            let g = SCHED.lock();
            if ready(&g) {
                return schedule(g);
            }
        }
    };
    if next == cur {
        s.cur().state = State::Running;
        return;
    }
    let now = crate::kern::time::ticks();
    s.slice_end = now + TIME_SLICE_TICKS;
    if let Some(area) = s.cur().fpu.as_mut() {
        // SAFETY: a 512-byte, 16-byte aligned area owned by the thread.
        unsafe { core::arch::x86_64::_fxsave64(area.0.as_mut_ptr()) };
    }
    if let Some(st) = &s.cur().stack {
        // SAFETY: the stack's lowest word, mapped while the thread lives.
        let canary = unsafe { (st.bottom() as *const u64).read() };
        assert!(canary == CANARY, "kernel thread {:?} overflowed its stack", s.cur().name);
    }
    let save = &mut s.cur().rsp as *mut u64;
    s.current = next;
    let next_t = s.cur();
    next_t.state = State::Running;
    if let Some(area) = next_t.fpu.as_ref() {
        // SAFETY: the area holds a state saved by fxsave (or the initial one).
        unsafe { core::arch::x86_64::_fxrstor64(area.0.as_ptr()) };
    }
    let next_rsp = next_t.rsp;
    // The next thread's address space, and its kernel stack for traps and
    // system calls from user mode.
    load_cr3(next_t.cr3);
    CURRENT_SPACE.store(next_t.space, Ordering::SeqCst);
    x86_64::registers::model_specific::FsBase::write(x86_64::VirtAddr::new_truncate(next_t.fs_base));
    if let Some(st) = &next_t.stack {
        let top = st.top();
        crate::arch::gdt::set_kernel_stack(top);
    }
    let next_held = &mut next_t.held as *mut vm::witness::Held;
    drop(guard);
    CURRENT_HELD.store(next_held, Ordering::Relaxed);
    // SAFETY: `save` points into the current thread's record, which stays
    // on the list while the thread runs or is switched out (a Dead one is
    // reaped only by another thread, after this switch); `next_rsp` was
    // saved by switch_stack or built by spawn. Interrupts are off until the
    // resumed context restores its own RFLAGS.
    unsafe { switch_stack(save, next_rsp) };
    // Counted on the way back in (which also keeps the call above from
    // becoming a jump, so a switched-out thread's saved return address is
    // in this function, where `write_threads` shows it).
    SWITCHES.fetch_add(1, Ordering::Relaxed);
}

/// Frees the records and stacks of dead threads other than the current
/// one. Runs with interrupts on and no spin lock held, so that the heap
/// is never entered from inside the switch.
pub fn reap() {
    if !interrupts::are_enabled() || REAP_HOLD.load(Ordering::SeqCst) != 0 {
        return;
    }
    let mut chain = interrupts::without_interrupts(|| {
        let mut g = SCHED.lock();
        match g.as_mut() {
            Some(s) if s.dead > 0 => s.unlink_dead(),
            _ => ptr::null_mut(),
        }
    });
    while !chain.is_null() {
        // SAFETY: `unlink_dead` took these records off every list; they
        // are ours alone now.
        let t = unsafe { Box::from_raw(chain) };
        chain = t.next;
        drop(t);
    }
}

/// Readers of thread records outside the scheduler lock (`write_threads`);
/// [`reap`] waits for them to be done. (A)
static REAP_HOLD: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// Runs `f` with interrupts off and the scheduler lock held, then reaps if
/// interrupts were on at entry: the common frame of the calls below.
fn with_sched<R>(f: impl FnOnce(IrqOffGuard<'_, Option<Sched>>) -> R) -> R {
    let r = interrupts::without_interrupts(|| f(SCHED.lock()));
    reap();
    r
}

/// Gives the CPU to the next ready thread.
pub fn yield_now() {
    with_sched(|mut g| {
        let Some(s) = g.as_mut() else { return };
        let cur = s.current;
        s.make_ready(cur);
        schedule(g);
    });
}

/// Called from the timer interrupt (after EOI): preempts the current thread
/// when its time slice is over and another is ready.
pub fn preempt() {
    preempt_if(false)
}

/// As [`preempt`] when the time slice is over: from a trap at a point
/// where a timer interrupt could have come (interrupts on).
pub fn preempt_now() {
    preempt_if(true)
}

fn preempt_if(slice_over: bool) {
    let mut g = SCHED.lock();
    let Some(s) = g.as_mut() else { return };
    let now = crate::kern::time::ticks();
    if now >= s.next_timeout {
        s.expire_timeouts(now);
    }
    // A thread idling in `schedule` (sleeping, interrupts let in) picks up
    // what became ready itself.
    if !s.has_ready() || (now < s.slice_end && !slice_over) || s.cur().state != State::Running {
        return;
    }
    let cur = s.current;
    s.make_ready(cur);
    schedule(g);
}

/// Sleeps on `chan` if `cond()` is true, with `cond` evaluated under the
/// scheduler lock (so a [`wakeup`] cannot slip in between). Returns whether
/// it slept. Without a scheduler, does nothing and returns false.
#[track_caller]
pub fn sleep_if(chan: usize, cond: impl FnOnce() -> bool) -> bool {
    vm::witness::may_sleep(core::panic::Location::caller());
    with_sched(|mut g| {
        let Some(s) = g.as_mut() else { return false };
        if !cond() {
            return false;
        }
        s.cur().state = State::Sleeping(chan);
        schedule(g);
        true
    })
}

/// Like [`sleep_if`], but the sleep also ends at timer tick `deadline` (a
/// wakeup on `chan`, or [`wake_thread`], ends it earlier). Returns whether it
/// slept.
#[track_caller]
pub fn sleep_until(chan: usize, deadline: u64, cond: impl FnOnce() -> bool) -> bool {
    vm::witness::may_sleep(core::panic::Location::caller());
    with_sched(|mut g| {
        let Some(s) = g.as_mut() else { return false };
        if !cond() || crate::kern::time::ticks() >= deadline {
            return false;
        }
        let t = s.cur();
        t.state = State::Sleeping(chan);
        t.wake_at = deadline;
        s.next_timeout = s.next_timeout.min(deadline);
        schedule(g);
        true
    })
}

/// Ends the sleep of thread `id`, whatever it sleeps on (to deliver a
/// signal). Every sleeper re-checks its condition, so the early wakeup is
/// harmless to one that must go on waiting.
pub fn wake_thread(id: ThreadId) {
    interrupts::without_interrupts(|| {
        let mut g = SCHED.lock();
        let Some(s) = g.as_mut() else { return };
        if let Some(t) = s.find(id)
            && let State::Sleeping(_) = t.state
        {
            let t = t as *mut Thread;
            s.end_sleep(t);
        }
    });
}

/// Wakes every thread sleeping on `chan`.
pub fn wakeup(chan: usize) {
    interrupts::without_interrupts(|| {
        let mut g = SCHED.lock();
        let Some(s) = g.as_mut() else { return };
        s.wake_chan(chan);
    });
}

/// Writes every thread but the current one: its id, name and state, and a
/// backtrace from where it switched away. For reports of a kernel that
/// seems stuck. The list is read under the scheduler lock, and written
/// (the writer may allocate) after it is dropped, with reaping held off so
/// that every listed record stays.
pub fn write_threads(w: &mut dyn Write) {
    const MAX: usize = 64;
    let mut shown = [(ptr::null::<Thread>(), State::Dead, 0u64); MAX];
    REAP_HOLD.fetch_add(1, Ordering::SeqCst);
    let (n, more) = interrupts::without_interrupts(|| {
        let g = SCHED.lock();
        let Some(s) = g.as_ref() else { return (0, 0) };
        let mut n = 0;
        let mut more = 0;
        for t in s.threads().filter(|&t| t != s.current) {
            if n == MAX {
                more += 1;
                continue;
            }
            // SAFETY: listed records are live under the lock.
            let r = unsafe { &*t };
            shown[n] = (t as *const Thread, r.state, r.rsp);
            n += 1;
        }
        (n, more)
    });
    for &(t, state, rsp) in &shown[..n] {
        // SAFETY: the record stays: records are freed only by `reap`,
        // which is held off.
        let t = unsafe { &*t };
        let _ = writeln!(w, "thread {} {:?}: {:?}", t.id, t.name, state);
        if state == State::Dead {
            continue;
        }
        // switch_stack left rflags, r15, r14, r13, r12, rbx, rbp and its
        // return address at the saved RSP (spawn builds the same frame for
        // a thread that has not run yet).
        // SAFETY: the thread was switched out when listed, so its saved RSP
        // pointed at that frame on its stack, which lives as long as its
        // record. (Had it run since, the words read are stale, not freed.)
        let (rbp, ret) = unsafe { (*((rsp + 48) as *const u64), *((rsp + 56) as *const u64)) };
        crate::kern::backtrace::write_from(w, ret, rbp);
    }
    if more > 0 {
        let _ = writeln!(w, "... and {more} more threads");
    }
    REAP_HOLD.fetch_sub(1, Ordering::SeqCst);
}

/// Threads that exist (dead ones not yet reaped included), and of those
/// the dead.
pub fn counts() -> (usize, usize) {
    interrupts::without_interrupts(|| SCHED.lock().as_ref().map_or((0, 0), |s| (s.count, s.dead)))
}

/// Ends the current thread. Its record and stack are freed by a later
/// [`reap`] in another thread.
pub fn exit() -> ! {
    interrupts::disable();
    let mut g = SCHED.lock();
    let s = g.as_mut().expect("exit without a scheduler");
    let cur = s.cur();
    let id = cur.id;
    assert!(id != 0, "the main thread cannot exit");
    cur.state = State::Dead;
    s.dead += 1;
    s.wake_chan(thread_chan(id));
    schedule(g);
    unreachable!("a dead thread was scheduled again");
}

fn thread_chan(id: ThreadId) -> usize {
    // An address nothing else sleeps on: inside the scheduler's static.
    (&SCHED as *const _ as usize).wrapping_add(1 + id as usize)
}

/// The current thread's id.
pub fn current() -> ThreadId {
    interrupts::without_interrupts(|| SCHED.lock().as_mut().map_or(0, |s| s.cur().id))
}

/// Sets the current thread's FS base (kept across switches).
pub fn set_fs_base(base: u64) {
    interrupts::without_interrupts(|| {
        if let Some(s) = SCHED.lock().as_mut() {
            s.cur().fs_base = base;
        }
        x86_64::registers::model_specific::FsBase::write(x86_64::VirtAddr::new_truncate(base));
    });
}

/// Waits for thread `id` to end.
pub fn join(id: ThreadId) {
    loop {
        let done = interrupts::without_interrupts(|| {
            let mut g = SCHED.lock();
            let Some(s) = g.as_mut() else { return true };
            match s.find(id).map(|t| t.state) {
                None | Some(State::Dead) => return true,
                _ => {}
            }
            s.cur().state = State::Sleeping(thread_chan(id));
            schedule(g);
            false
        });
        if done {
            break;
        }
    }
    reap();
}

mod spawn;
mod tests;

pub use spawn::*;
