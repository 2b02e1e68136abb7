//! Kernel threads and a preemptive round-robin scheduler on every CPU,
//! with BSD-style sleep and wakeup on a wait channel (any address).
//!
//! A thread is a kernel stack and the stack pointer saved when it last
//! switched away. Switching ([`switch_stack`]) saves the callee-saved
//! registers and RFLAGS on the old stack and restores them from the new one,
//! so every thread that is not running sits inside `switch_stack`: in
//! [`yield_now`], in [`sleep_if`], or in the timer interrupt that preempted it.
//! A new thread's stack is built to "return" from `switch_stack` into
//! `thread_start`.
//!
//! **One run queue for all CPUs.** Ready threads wait in one FIFO queue
//! under the scheduler lock, and every CPU takes the first it may run (a
//! thread may be pinned: [`pin_to`]). The lock is taken anyway by every
//! sleep, wakeup and switch, and with the few CPUs this kernel targets
//! (up to 16; 2 to 8 in practice) the queue is short and the lock is held
//! for a few hundred instructions, so per-CPU queues would add stealing,
//! balancing and a second lock order for no measured gain. Threads migrate
//! freely: whichever CPU pops a thread runs it. A CPU with nothing to run
//! switches to its own idle thread, which zeroes free pages ahead of need
//! or halts; a wakeup that readies a thread while a CPU idles sends that
//! CPU an IPI ([`VEC_WAKEUP`](crate::arch::trapframe::VEC_WAKEUP)), so
//! the thread does not wait for the idle CPU's next timer tick.
//!
//! **The lock hand-off.** The scheduler lock (S), an [`IrqOffMutex`], is
//! always taken with interrupts already off, since the timer interrupt
//! takes it too. A thread that switches away holds it across the switch,
//! and the thread switched to lets it go (FreeBSD's and xv6's hand-off): by
//! dropping the guard it took before it switched away itself, or, for a
//! thread's first run, in `thread_start`. So from the moment a thread
//! marks itself sleeping or dead until its registers are saved on its
//! stack, no other CPU can see it: a wakeup cannot start it on another CPU
//! before it has left this one, and [`reap`] cannot free a stack that is
//! still in use. Sleeping is atomic with respect to wakeup: [`sleep_if`]
//! evaluates its condition under the lock, and [`wakeup`] takes it.
//!
//! **Preemption.** The timer on each CPU ends the running thread's slice
//! ([`TIME_SLICE_TICKS`]). A thread holding one of the VM's spin locks
//! (`vm::sync::Mutex`, taken with interrupts on) has preemption off
//! ([`preempt_disable`]): other CPUs may be spinning for that lock, so the
//! holder is not switched out; the timer leaves a request
//! (`PerCpu::need_resched`) that the last unlock honours.
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
use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::instructions::interrupts;

use crate::arch::percpu;
use crate::arch::percpu::MAX_CPUS;
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
    /// The CPUs that have the thread's pmap loaded (`X86Pmap::cpus`; null:
    /// the kernel's space, loaded everywhere).
    cpus: *const AtomicU64,
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
    /// The CPUs the thread may run on (bit n: CPU n).
    affinity: u64,
    /// The CPU it runs or last ran on.
    cpu: u32,
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

/// One CPU's part of the scheduler's state (S).
#[derive(Clone, Copy)]
struct CpuSched {
    /// The thread running on the CPU (null before the CPU joins).
    current: *mut Thread,
    /// The CPU's idle thread: run when nothing else is ready, never queued
    /// and not on the list of all threads.
    idle: *mut Thread,
}

/// The scheduler's state (S). The lists link thread records through their
/// own fields; a record is on the list of all threads from [`Sched::link`]
/// to [`reap`], and is only followed under the lock.
struct Sched {
    /// Every thread but the idle ones, newest first.
    all: *mut Thread,
    /// The ready queue, first to run at the head.
    ready_head: *mut Thread,
    ready_tail: *mut Thread,
    cpus: [CpuSched; MAX_CPUS],
    /// CPUs halted in their idle thread, waiting for an IPI (bit n: CPU n).
    /// A CPU sets its bit before it halts, and the CPU that readies a
    /// thread for it clears the bit as it sends the IPI.
    halted: u64,
    /// Threads on `all`, and of those the dead.
    count: usize,
    dead: usize,
    next_id: ThreadId,
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

/// The running CPU's number (read with interrupts off, or where any answer would do).
fn me() -> usize {
    percpu::this().id as usize
}

static SCHED: IrqOffMutex<Option<Sched>> = IrqOffMutex::ranked(None, &vm::witness::order::SCHED);

/// The earliest timed sleep's end, as `Sched::next_timeout`: the timer
/// looks here before it takes the lock. (A)
static NEXT_TIMEOUT: AtomicU64 = AtomicU64::new(u64::MAX);

/// Each CPU's tick at which its running thread's slice ends: written by
/// the CPU at each switch, read by its own timer. (A; the CPU's own.)
static SLICE_END: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Turns on the lock-order check (debug builds): each thread's held locks
/// are kept in its record from now on.
pub fn start_lock_order_checks() {
    vm::witness::set_held(|f| {
        interrupts::without_interrupts(|| {
            let held = percpu::this().held.load(Ordering::Relaxed);
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

/// Loads thread `t`'s address space on this CPU, leaving `old`'s CPU set
/// (`arch::tlb::switch_space`).
fn load_space(cpu: &percpu::PerCpu, old_cpus: *const AtomicU64, t: &Thread) {
    let cr3 = if t.cr3 == 0 { KERNEL_CR3.load(Ordering::Relaxed) } else { t.cr3 };
    // SAFETY: a thread's CPU set is its pmap's, alive while the thread
    // runs in that space (a space is dropped only after its threads have
    // left it: exit, exec); `old_cpus` was the running thread's until now.
    let (old, new) = unsafe { (old_cpus.as_ref(), t.cpus.as_ref()) };
    crate::arch::tlb::switch_space(cpu, cr3, old, new);
}

/// Makes the current thread run in address space `pmap` / `space` (None,
/// 0: the kernel's) from now on, and loads it.
pub fn set_address_space(pmap: Option<&alloc::sync::Arc<crate::arch::pmap::X86Pmap>>, space: usize) {
    interrupts::without_interrupts(|| {
        let cpu = percpu::this();
        let mut g = SCHED.lock();
        if let Some(s) = g.as_mut() {
            let t = s.cur();
            let old = t.cpus;
            t.cr3 = pmap.map_or(0, |p| p.root());
            t.cpus = pmap.map_or(ptr::null(), |p| p.cpus() as *const AtomicU64);
            t.space = space;
            load_space(cpu, old, t);
        }
        cpu.space.store(space, Ordering::Relaxed);
    });
}

/// The running thread's address space, as given to [`set_address_space`]
/// (0: none). One GS-relative load (`PerCpu::space`), written at every
/// switch with interrupts off.
pub fn current_space() -> usize {
    percpu::read_own_u64(percpu::OFF_SPACE) as usize
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

/// Switches to the next ready thread this CPU may run, or to its idle
/// thread; the caller has already set its own state (Ready and queued,
/// Sleeping, or Dead). Interrupts must be off; they stay off across the
/// switch, and the lock is handed to the thread switched to (see the
/// module docs). Allocates and frees nothing.
#[inline(never)]
fn schedule(mut guard: IrqOffGuard<'_, Option<Sched>>) {
    debug_assert!(!interrupts::are_enabled());
    let cpu = percpu::this();
    debug_assert!(cpu.preempt.load(Ordering::Relaxed) == 0, "switch with preemption off (a spin lock held)");
    let me = cpu.id as usize;
    let s = guard.as_mut().unwrap();
    let cur = s.cpus[me].current;
    let idle = s.cpus[me].idle;
    let next = match s.pop_ready(me) {
        Some(t) => t,
        // Nothing to run: the idle thread goes on idling, and any other
        // goes to it (a thread that yields, if it may run here, was found
        // in the queue; one still queued now waits for another CPU).
        None => idle,
    };
    cpu.need_resched.store(false, Ordering::Relaxed);
    if next == cur {
        s.cur().state = State::Running;
        return;
    }
    // The idle thread has no slice: its timer ticks look at timeouts only.
    let slice_end = if next == idle { u64::MAX } else { crate::kern::time::ticks() + TIME_SLICE_TICKS };
    SLICE_END[me].store(slice_end, Ordering::Relaxed);
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
    s.cpus[me].current = next;
    // SAFETY: `next` was queued or is this CPU's idle thread: live.
    let next_t = unsafe { &mut *next };
    next_t.state = State::Running;
    next_t.cpu = me as u32;
    if let Some(area) = next_t.fpu.as_ref() {
        // SAFETY: the area holds a state saved by fxsave (or the initial one).
        unsafe { core::arch::x86_64::_fxrstor64(area.0.as_ptr()) };
    }
    let next_rsp = next_t.rsp;
    // The next thread's address space, and its kernel stack for traps and
    // system calls from user mode.
    // SAFETY: `cur` is live (see `cur`).
    load_space(cpu, unsafe { (*cur).cpus }, next_t);
    cpu.space.store(next_t.space, Ordering::Relaxed);
    cpu.thread.store(next_t.id, Ordering::Relaxed);
    x86_64::registers::model_specific::FsBase::write(x86_64::VirtAddr::new_truncate(next_t.fs_base));
    if let Some(st) = &next_t.stack {
        let top = st.top();
        crate::arch::gdt::set_kernel_stack(top);
    }
    // The lock stays in the old thread's record of held locks (it let go
    // of it when it resumes); the new thread's record is the CPU's now.
    cpu.held.store(&mut next_t.held, Ordering::Relaxed);
    // SAFETY: `save` points into the current thread's record, which stays
    // live while the thread is switched out (a Dead one is reaped only once
    // the lock, held across this switch, is let go); `next_rsp` was saved
    // by switch_stack or built by spawn. Interrupts are off until the
    // resumed context restores its own RFLAGS.
    unsafe { switch_stack(save, next_rsp) };
    // Back in this thread, on whatever CPU switched to it: that CPU took
    // the lock to do so, and this thread's guard lets it go.
    drop(guard);
    // Counted on the way back in (which also keeps the call above from
    // becoming a jump, so a switched-out thread's saved return address is
    // in this function, where `write_threads` shows it).
    SWITCHES.fetch_add(1, Ordering::Relaxed);
}

/// A CPU's idle thread: zeroes free pages ahead of need
/// (`PhysMem::zero_idle`) or halts until an interrupt, and switches to any
/// thread that becomes ready for this CPU.
fn idle_loop() -> ! {
    loop {
        // The zeroing runs with interrupts on, as halting does.
        interrupts::enable();
        let zeroed = vm::try_global().is_some_and(|pm| pm.zero_idle());
        interrupts::disable();
        let mut g = SCHED.lock();
        let me = me();
        let Some(s) = g.as_mut() else { continue };
        if s.has_ready(me) {
            s.halted &= !(1 << me);
            s.cur().state = State::Ready;
            schedule(g);
            continue;
        }
        if zeroed {
            continue;
        }
        // Halt until an interrupt: the timer's, a device's, or the IPI of a
        // CPU that readied a thread for this one (which clears the bit). The
        // bit is set under the lock, after the queue was seen empty, so a
        // thread readied after that look sends the IPI; `sti; hlt` takes it
        // even if it arrives before the halt.
        s.halted |= 1 << me;
        drop(g);
        interrupts::enable_and_hlt();
        interrupts::disable();
        let mut g = SCHED.lock();
        if let Some(s) = g.as_mut() {
            s.halted &= !(1 << me);
        }
    }
}

/// Frees the records and stacks of dead threads. Runs with interrupts on
/// and no spin lock held, so that the heap is never entered from inside
/// the switch.
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
        let cur = s.cpus[me()].current;
        s.enqueue(cur);
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
    let cpu = percpu::this();
    let me = cpu.id as usize;
    let now = crate::kern::time::ticks();
    // Most ticks change nothing: look first without the lock.
    let timeouts = now >= NEXT_TIMEOUT.load(Ordering::Relaxed);
    if !timeouts && !slice_over && now < SLICE_END[me].load(Ordering::Relaxed) {
        return;
    }
    let mut g = SCHED.lock();
    let Some(s) = g.as_mut() else { return };
    if now >= s.next_timeout {
        s.expire_timeouts(now);
    }
    // Decided afresh: a request from the timer is served or void now (set
    // again below if a spin lock is still held).
    cpu.need_resched.store(false, Ordering::Relaxed);
    // The idle thread picks up what became ready itself; a thread on its
    // way to sleep (in `sleep_if`'s frame, interrupts on a moment) is not
    // requeued.
    let cur = s.cpus[me].current;
    if cur == s.cpus[me].idle || !s.has_ready(me) || s.cur().state != State::Running {
        return;
    }
    if now < SLICE_END[me].load(Ordering::Relaxed) && !slice_over {
        return;
    }
    if cpu.preempt.load(Ordering::Relaxed) != 0 {
        // A spin lock is held: the last unlock yields.
        cpu.need_resched.store(true, Ordering::Relaxed);
        return;
    }
    s.enqueue(cur);
    schedule(g);
}

/// Turns preemption off on this CPU until the matching
/// [`preempt_enable`]: the running thread stays on it. Nests. (The VM's
/// spin locks call it: `vm::sync::SpinHooks`.)
#[inline(always)]
pub fn preempt_disable() {
    percpu::preempt_off();
}

/// Undoes one [`preempt_disable`]; the last one yields if the timer asked
/// for it meanwhile.
#[inline(always)]
pub fn preempt_enable() {
    if percpu::preempt_on() {
        resched_if_asked();
    }
}

#[inline(always)]
fn resched_if_asked() {
    // Relaxed: the CPU's own flag; if the thread moved to another CPU
    // since the unlock, that CPU's flag is about its current thread, which
    // is this one.
    if percpu::this().need_resched.load(Ordering::Relaxed) && interrupts::are_enabled() && !crate::kern::sync::in_interrupt() {
        resched_now();
    }
}

#[cold]
#[inline(never)]
fn resched_now() {
    interrupts::without_interrupts(preempt_now);
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
        let next = s.next_timeout.min(deadline);
        s.set_next_timeout(next);
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

/// Restricts the current thread to CPU `cpu` (None: any CPU), and moves it
/// there. Returns false if no such CPU runs.
pub fn pin_to(cpu: Option<usize>) -> bool {
    match cpu {
        Some(n) if percpu::cpu(n).is_some() => set_affinity(1 << n),
        Some(_) => return false,
        None => set_affinity(u64::MAX),
    }
    true
}

/// The CPUs the current thread may run on (bit n: CPU n).
pub fn affinity() -> u64 {
    interrupts::without_interrupts(|| SCHED.lock().as_mut().map_or(u64::MAX, |s| s.cur().affinity))
}

/// Restricts the current thread to the CPUs of `mask`, and moves it to one
/// of them if it runs elsewhere.
pub fn set_affinity(mask: u64) {
    with_sched(|mut g| {
        let Some(s) = g.as_mut() else { return };
        s.cur().affinity = mask;
        if mask & (1 << me()) == 0 {
            let cur = s.cpus[me()].current;
            s.make_ready(cur);
            schedule(g);
        }
    });
}

/// The CPU the current thread runs on now. (It may run elsewhere by the
/// time the caller looks, unless it is pinned or preemption is off.)
pub fn current_cpu() -> usize {
    interrupts::without_interrupts(me)
}

/// Writes every thread but the running ones: its id, name and state, and
/// a backtrace from where it switched away. For reports of a kernel that
/// seems stuck. The list is read under the scheduler lock, and written
/// (the writer may allocate) after it is dropped, with reaping held off so
/// that every listed record stays.
pub fn write_threads(w: &mut dyn Write) {
    const MAX: usize = 64;
    let mut shown = [(ptr::null::<Thread>(), State::Dead, 0u64, 0u32); MAX];
    REAP_HOLD.fetch_add(1, Ordering::SeqCst);
    let (n, more) = interrupts::without_interrupts(|| {
        let g = SCHED.lock();
        let Some(s) = g.as_ref() else { return (0, 0) };
        let mut n = 0;
        let mut more = 0;
        for t in s.threads().filter(|&t| !s.is_running(t)) {
            if n == MAX {
                more += 1;
                continue;
            }
            // SAFETY: listed records are live under the lock.
            let r = unsafe { &*t };
            shown[n] = (t as *const Thread, r.state, r.rsp, r.cpu);
            n += 1;
        }
        (n, more)
    });
    for &(t, state, rsp, cpu) in &shown[..n] {
        // SAFETY: the record stays: records are freed only by `reap`,
        // which is held off.
        let t = unsafe { &*t };
        let _ = writeln!(w, "thread {} {:?}: {:?} (last on CPU {cpu})", t.id, t.name, state);
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

/// Threads that exist (dead ones not yet reaped included; idle ones not),
/// and of those the dead.
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

/// The current thread's id: one GS-relative load (`PerCpu::thread`).
pub fn current() -> ThreadId {
    percpu::read_own_u64(percpu::OFF_THREAD)
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

mod park;
mod runq;
mod spawn;
mod tests;

pub use park::with_other_cpus_parked;
pub use spawn::*;
