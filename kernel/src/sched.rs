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
//! Locking: one scheduler lock, always taken with interrupts disabled. It is
//! released before the stack switch; interrupts stay off across the switch so
//! nothing can run between the two. Sleeping is atomic with respect to
//! wakeup: [`sleep_if`] evaluates its condition under the scheduler lock, and
//! [`wakeup`] takes the same lock, so a wakeup cannot fall between the check
//! and the sleep. (With more CPUs the lock hand-off across the switch will
//! need the usual care; the VM never relies on interrupts being off.)
//!
//! Stacks are 32 KiB from the kernel heap, with a canary word at the bottom
//! checked at every switch; proper guard pages come with kernel-space mappings.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::arch::naked_asm;
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;
use x86_64::instructions::interrupts;

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

struct Thread {
    name: String,
    state: State,
    /// The address space the thread runs in: its PML4 (0: the kernel's) and
    /// the `vmspace::AddressSpace` it belongs to (0: none). Loaded at every
    /// switch to the thread; a new thread inherits its creator's.
    cr3: u64,
    space: usize,
    /// The thread's FS base (user TLS, `arch_prctl(ARCH_SET_FS)`).
    fs_base: u64,
    /// The thread's x87/SSE state while it is switched out (user programs
    /// use SSE; the kernel is built without it). None for the boot thread.
    fpu: Option<Box<FpuArea>>,
    /// Tick at which a timed sleep ends (0: none).
    wake_at: u64,
    /// Saved stack pointer while not running.
    rsp: u64,
    /// The stack (None for the boot thread, which runs on the boot stack).
    stack: Option<Box<[u64]>>,
    entry: Option<Entry>,
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
    fn new<F: FnOnce() + Send + 'static>(f: F) -> Entry {
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
        Entry { data: Box::into_raw(Box::new(f)) as *mut (), run: run::<F>, drop: drop::<F> }
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

struct Sched {
    threads: BTreeMap<ThreadId, Thread>,
    ready: VecDeque<ThreadId>,
    current: ThreadId,
    next_id: ThreadId,
    /// Tick at which the current thread's slice ends.
    slice_end: u64,
    /// The earliest `wake_at` of a sleeping thread (u64::MAX: none).
    next_timeout: u64,
}

static SCHED: Mutex<Option<Sched>> = Mutex::new(None);
/// The kernel's own PML4, loaded for threads with no address space. (C)
static KERNEL_CR3: AtomicU64 = AtomicU64::new(0);

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
            let cur = s.current;
            let t = s.threads.get_mut(&cur).unwrap();
            t.cr3 = cr3;
            t.space = space;
        }
        load_cr3(cr3);
        crate::vmspace::set_current(space);
    });
}

/// Context switches so far. (A)
pub static SWITCHES: AtomicU64 = AtomicU64::new(0);

/// An FXSAVE area.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
pub struct FpuArea([u8; 512]);

/// The clean x87/SSE state new threads start with.
static FPU_INITIAL: spin::Once<FpuArea> = spin::Once::new();

/// Enables SSE for user programs (CR0.MP on, EM off; CR4.OSFXSR and
/// OSXMMEXCPT on) and records the clean state threads start with.
fn init_fpu() {
    use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
    // SAFETY: setting these bits enables SSE instructions and FXSAVE; the
    // kernel itself is built without SSE, so nothing changes for it.
    unsafe {
        Cr0::update(|f| {
            f.remove(Cr0Flags::EMULATE_COPROCESSOR);
            f.insert(Cr0Flags::MONITOR_COPROCESSOR);
        });
        Cr4::update(|f| f.insert(Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE));
    }
    let mut area = FpuArea([0; 512]);
    // SAFETY: fninit resets the x87 state; the area is ours and aligned.
    unsafe {
        core::arch::asm!("fninit");
        core::arch::x86_64::_fxsave64(area.0.as_mut_ptr());
    }
    FPU_INITIAL.call_once(|| area);
}

/// Makes the running (boot) context thread 0, "main".
pub fn init() {
    init_fpu();
    interrupts::without_interrupts(|| {
        let mut threads = BTreeMap::new();
        threads.insert(0, Thread {
                name: "main".into(),
                state: State::Running,
                cr3: 0,
                space: 0,
                fs_base: 0,
                fpu: None,
                wake_at: 0,
                rsp: 0,
                stack: None,
                entry: None,
            });
        *SCHED.lock() = Some(Sched { threads, ready: VecDeque::new(), current: 0, next_id: 1, slice_end: 0, next_timeout: u64::MAX });
        KERNEL_CR3.store(x86_64::registers::control::Cr3::read_raw().0.start_address().as_u64(), Ordering::Relaxed);
    });
}

/// Saves the callee-saved registers and RFLAGS on the current stack, stores
/// the stack pointer at `save`, and resumes the context saved at `next`.
#[unsafe(naked)]
unsafe extern "C" fn switch_stack(save: *mut u64, next: u64) {
    naked_asm!(
        "push rbp", "push rbx", "push r12", "push r13", "push r14", "push r15", "pushfq",
        "mov [rdi], rsp",
        "mov rsp, rsi",
        "popfq", "pop r15", "pop r14", "pop r13", "pop r12", "pop rbx", "pop rbp",
        "ret",
    )
}

/// Where a new thread starts: runs its entry with interrupts on, then exits.
extern "C" fn thread_start() -> ! {
    let entry = interrupts::without_interrupts(|| {
        let mut s = SCHED.lock();
        let s = s.as_mut().unwrap();
        let cur = s.current;
        s.threads.get_mut(&cur).and_then(|t| t.entry.take())
    });
    interrupts::enable();
    if let Some(f) = entry {
        f.run();
    }
    exit()
}

/// Starts a kernel thread running `f` in the current thread's address
/// space. Fails (`None`) when memory is short.
pub fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Option<ThreadId> {
    spawn_in(name, None, f)
}

/// Starts a kernel thread running `f` in the kernel's address space: for a
/// thread that sets its own (a process's), which must not start in its
/// creator's, which may be gone by the time it first runs.
pub fn spawn_detached(name: &str, f: impl FnOnce() + Send + 'static) -> Option<ThreadId> {
    spawn_in(name, Some((0, 0)), f)
}

/// Starts a thread; `space` is its (cr3, address space), or None for the
/// creator's.
fn spawn_in(name: &str, space: Option<(u64, usize)>, f: impl FnOnce() + Send + 'static) -> Option<ThreadId> {
    let words = STACK_SIZE / 8;
    let mut stack: Vec<u64> = Vec::new();
    stack.try_reserve_exact(words).ok()?;
    stack.resize(words, 0);
    let mut stack = stack.into_boxed_slice();
    stack[0] = CANARY;
    // The frame switch_stack pops: rflags, r15, r14, r13, r12, rbx, rbp, ret.
    let top = words - 2; // keep the entry 16-byte aligned after `ret`
    let frame = [0x2u64, 0, 0, 0, 0, 0, 0, thread_start as *const () as u64];
    let base = top - frame.len();
    stack[base..top].copy_from_slice(&frame);
    let rsp = &stack[base] as *const u64 as u64;
    let entry = Entry::new(f);
    let fpu = Box::new(FPU_INITIAL.get().copied().unwrap_or(FpuArea([0; 512])));
    interrupts::without_interrupts(|| {
        let mut s = SCHED.lock();
        let s = s.as_mut()?;
        let id = s.next_id;
        s.next_id += 1;
        let (cr3, space) = space.unwrap_or((s.threads[&s.current].cr3, s.threads[&s.current].space));
        s.threads.insert(
            id,
            Thread { name: name.into(), state: State::Ready, cr3, space, fs_base: 0, fpu: Some(fpu), wake_at: 0, rsp, stack: Some(stack), entry: Some(entry) },
        );
        s.ready.push_back(id);
        Some(id)
    })
}

/// Switches to the next ready thread, if any; the caller has already set
/// its own state (Ready and queued, Sleeping, or Dead). Interrupts must be
/// off; they stay off across the switch.
fn schedule(mut guard: spin::MutexGuard<'_, Option<Sched>>) {
    debug_assert!(!interrupts::are_enabled());
    let s = guard.as_mut().unwrap();
    let cur = s.current;
    let next = loop {
        match s.ready.pop_front() {
            Some(id) if s.threads.get(&id).is_some_and(|t| t.state == State::Ready) => break Some(id),
            Some(_) => continue,
            None => break None,
        }
    };
    let Some(next) = next else {
        // Nothing else can run. A thread that is still runnable continues;
        // one that sleeps waits here for an interrupt to wake something.
        let state = s.threads[&cur].state;
        if state == State::Ready {
            s.threads.get_mut(&cur).unwrap().state = State::Running;
            return;
        }
        drop(guard);
        let ready = |g: &spin::MutexGuard<'_, Option<Sched>>| {
            g.as_ref().is_some_and(|s| !s.ready.is_empty() || s.threads[&s.current].state == State::Ready)
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
        s.threads.get_mut(&cur).unwrap().state = State::Running;
        return;
    }
    let now = crate::time::ticks();
    s.slice_end = now + TIME_SLICE_TICKS;
    s.current = next;
    if let Some(area) = s.threads.get_mut(&cur).unwrap().fpu.as_mut() {
        // SAFETY: a 512-byte, 16-byte aligned area owned by the thread.
        unsafe { core::arch::x86_64::_fxsave64(area.0.as_mut_ptr()) };
    }
    let next_t = s.threads.get_mut(&next).unwrap();
    next_t.state = State::Running;
    if let Some(area) = next_t.fpu.as_ref() {
        // SAFETY: the area holds a state saved by fxsave (or the initial one).
        unsafe { core::arch::x86_64::_fxrstor64(area.0.as_ptr()) };
    }
    let next_rsp = next_t.rsp;
    // The next thread's address space, and its kernel stack for traps and
    // system calls from user mode.
    load_cr3(next_t.cr3);
    crate::vmspace::set_current(next_t.space);
    x86_64::registers::model_specific::FsBase::write(x86_64::VirtAddr::new_truncate(next_t.fs_base));
    if let Some(st) = &next_t.stack {
        let top = st.as_ptr() as u64 + (st.len() * 8) as u64;
        crate::arch::gdt::set_kernel_stack(top);
        crate::syscall::set_kernel_stack(top);
    }
    let save = &mut s.threads.get_mut(&cur).unwrap().rsp as *mut u64;
    if let Some(st) = &s.threads[&cur].stack {
        assert!(st[0] == CANARY, "kernel thread {:?} overflowed its stack", s.threads[&cur].name);
    }
    SWITCHES.fetch_add(1, Ordering::Relaxed);
    drop(guard);
    // SAFETY: `save` points into the current thread's record, which stays
    // in the map while the thread exists (a Dead one is reaped only by
    // another thread, after this switch); `next_rsp` was saved by
    // switch_stack or built by spawn. Interrupts are off until the resumed
    // context restores its own RFLAGS.
    unsafe { switch_stack(save, next_rsp) };
    reap();
}

/// Frees the stacks of dead threads other than the current one.
fn reap() {
    let dead: Vec<Thread> = {
        let mut g = SCHED.lock();
        let Some(s) = g.as_mut() else { return };
        let cur = s.current;
        let ids: Vec<ThreadId> =
            s.threads.iter().filter(|(id, t)| **id != cur && t.state == State::Dead).map(|(id, _)| *id).collect();
        ids.into_iter().filter_map(|id| s.threads.remove(&id)).collect()
    };
    drop(dead);
}

/// Gives the CPU to the next ready thread.
pub fn yield_now() {
    interrupts::without_interrupts(|| {
        let mut g = SCHED.lock();
        let Some(s) = g.as_mut() else { return };
        let cur = s.current;
        s.threads.get_mut(&cur).unwrap().state = State::Ready;
        s.ready.push_back(cur);
        schedule(g);
    });
}

/// Called from the timer interrupt (after EOI): preempts the current thread
/// when its time slice is over and another is ready.
pub fn preempt() {
    let mut g = SCHED.lock();
    let Some(s) = g.as_mut() else { return };
    let now = crate::time::ticks();
    if now >= s.next_timeout {
        s.expire_timeouts(now);
    }
    // A thread idling in `schedule` (sleeping, interrupts let in) picks up
    // what became ready itself.
    if s.ready.is_empty() || now < s.slice_end || s.threads[&s.current].state != State::Running {
        return;
    }
    let cur = s.current;
    s.threads.get_mut(&cur).unwrap().state = State::Ready;
    s.ready.push_back(cur);
    schedule(g);
}

/// Sleeps on `chan` if `cond()` is true, with `cond` evaluated under the
/// scheduler lock (so a [`wakeup`] cannot slip in between). Returns whether
/// it slept. Without a scheduler, does nothing and returns false.
pub fn sleep_if(chan: usize, cond: impl FnOnce() -> bool) -> bool {
    interrupts::without_interrupts(|| {
        let mut g = SCHED.lock();
        let Some(s) = g.as_mut() else { return false };
        if !cond() {
            return false;
        }
        let cur = s.current;
        s.threads.get_mut(&cur).unwrap().state = State::Sleeping(chan);
        schedule(g);
        true
    })
}

/// Ends the sleep of thread `id`: the one place a sleep ends, so that its
/// deadline ends with it.
fn end_sleep(id: ThreadId, t: &mut Thread, ready: &mut VecDeque<ThreadId>) {
    t.state = State::Ready;
    t.wake_at = 0;
    ready.push_back(id);
}

impl Sched {
    /// Makes every thread sleeping on `chan` ready.
    fn wake_chan(&mut self, chan: usize) {
        let Sched { threads, ready, .. } = self;
        for (id, t) in threads.iter_mut() {
            if t.state == State::Sleeping(chan) {
                end_sleep(*id, t, ready);
            }
        }
    }

    /// Makes every thread whose timed sleep has ended ready.
    fn expire_timeouts(&mut self, now: u64) {
        let mut next = u64::MAX;
        let Sched { threads, ready, .. } = self;
        for (id, t) in threads.iter_mut() {
            if let State::Sleeping(_) = t.state {
                if t.wake_at != 0 && t.wake_at <= now {
                    end_sleep(*id, t, ready);
                } else if t.wake_at != 0 {
                    next = next.min(t.wake_at);
                }
            }
        }
        self.next_timeout = next;
    }
}

/// Like [`sleep_if`], but the sleep also ends at timer tick `deadline` (a
/// wakeup on `chan`, or [`wake_thread`], ends it earlier). Returns whether it
/// slept.
pub fn sleep_until(chan: usize, deadline: u64, cond: impl FnOnce() -> bool) -> bool {
    interrupts::without_interrupts(|| {
        let mut g = SCHED.lock();
        let Some(s) = g.as_mut() else { return false };
        if !cond() || crate::time::ticks() >= deadline {
            return false;
        }
        let cur = s.current;
        let t = s.threads.get_mut(&cur).unwrap();
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
        if let Some(t) = s.threads.get_mut(&id) {
            if let State::Sleeping(_) = t.state {
                end_sleep(id, t, &mut s.ready);
            }
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
/// seems stuck.
pub fn write_threads(w: &mut dyn Write) {
    interrupts::without_interrupts(|| {
        let g = SCHED.lock();
        let Some(s) = g.as_ref() else { return };
        for (id, t) in s.threads.iter().filter(|(id, _)| **id != s.current) {
            let _ = writeln!(w, "thread {id} {:?}: {:?}", t.name, t.state);
            if t.state == State::Dead {
                continue;
            }
            // switch_stack left rflags, r15, r14, r13, r12, rbx, rbp and
            // its return address at the saved RSP (spawn builds the same
            // frame for a thread that has not run yet).
            // SAFETY: the thread is not running (one CPU, interrupts off,
            // the scheduler lock held), so its saved RSP points at that
            // frame on its stack, which lives as long as its record.
            let (rbp, ret) = unsafe { (*((t.rsp + 48) as *const u64), *((t.rsp + 56) as *const u64)) };
            crate::backtrace::write_from(w, ret, rbp);
        }
    })
}

/// Ends the current thread.
pub fn exit() -> ! {
    interrupts::disable();
    let mut g = SCHED.lock();
    let s = g.as_mut().expect("exit without a scheduler");
    let cur = s.current;
    assert!(cur != 0, "the main thread cannot exit");
    s.threads.get_mut(&cur).unwrap().state = State::Dead;
    s.wake_chan(thread_chan(cur));
    schedule(g);
    unreachable!("a dead thread was scheduled again");
}

fn thread_chan(id: ThreadId) -> usize {
    // An address nothing else sleeps on: inside the scheduler's static.
    (&SCHED as *const _ as usize).wrapping_add(1 + id as usize)
}

/// The current thread's id.
pub fn current() -> ThreadId {
    interrupts::without_interrupts(|| SCHED.lock().as_ref().map_or(0, |s| s.current))
}

/// Sets the current thread's FS base (kept across switches).
pub fn set_fs_base(base: u64) {
    interrupts::without_interrupts(|| {
        if let Some(s) = SCHED.lock().as_mut() {
            let cur = s.current;
            s.threads.get_mut(&cur).unwrap().fs_base = base;
        }
        x86_64::registers::model_specific::FsBase::write(x86_64::VirtAddr::new_truncate(base));
    });
}

/// Waits for thread `id` to end.
pub fn join(id: ThreadId) {
    interrupts::without_interrupts(|| loop {
        let mut g = SCHED.lock();
        let Some(s) = g.as_mut() else { return };
        match s.threads.get(&id).map(|t| t.state) {
            None | Some(State::Dead) => return,
            _ => {}
        }
        let cur = s.current;
        s.threads.get_mut(&cur).unwrap().state = State::Sleeping(thread_chan(id));
        schedule(g);
    })
}

mod tests {
    use alloc::sync::Arc;

    /// A thread whose entry never returns (as a process's) leaves nothing
    /// of it on the heap once it has exited and been reaped.
    #[ktest]
    fn entries_that_never_return_are_freed() {
        let spawn_all = || {
            let ids: alloc::vec::Vec<ThreadId> = (0..32)
                .map(|i| {
                    let big = [i as u8; 2048];
                    spawn("no-return", move || {
                        core::hint::black_box(&big);
                        exit()
                    })
                    .unwrap()
                })
                .collect();
            for id in ids {
                join(id);
            }
            // The dead are reaped at the next switch.
            yield_now();
        };
        // Once first, so that the scheduler's own tables have grown.
        spawn_all();
        let (before, _) = crate::heap::usage();
        spawn_all();
        let (after, _) = crate::heap::usage();
        assert!(after < before + 4096, "heap grew by {} bytes over 32 threads whose entries never return", after - before);
    }

    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use ktest::ktest;

    use super::*;

    #[ktest]
    fn threads_run_and_are_joined() {
        let counter = Arc::new(AtomicU64::new(0));
        let ids: Vec<ThreadId> = (0..4)
            .map(|i| {
                let c = counter.clone();
                spawn("adder", move || {
                    for _ in 0..100 {
                        c.fetch_add(i + 1, Ordering::SeqCst);
                        yield_now();
                    }
                })
                .unwrap()
            })
            .collect();
        for id in ids {
            join(id);
        }
        assert_eq!(counter.load(Ordering::SeqCst), 100 * (1 + 2 + 3 + 4));
    }

    /// A thread that never yields is preempted by the timer, so another runs.
    #[ktest]
    fn the_timer_preempts() {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let spinner = spawn("spinner", move || {
            while !s.load(Ordering::SeqCst) {
                core::hint::spin_loop();
            }
        })
        .unwrap();
        // Let the spinner run; the main thread only gets the CPU back if the
        // timer takes it away from the spinner.
        yield_now();
        stop.store(true, Ordering::SeqCst);
        join(spinner);
    }

    /// The thread list names a sleeping thread, its state, and where it
    /// sleeps.
    #[ktest]
    fn threads_are_listed_with_backtraces() {
        static GO: AtomicBool = AtomicBool::new(false);
        GO.store(false, Ordering::SeqCst);
        let chan = &GO as *const _ as usize;
        let sleeper = spawn("sleeper", move || {
            while !GO.load(Ordering::SeqCst) {
                sleep_if(chan, || !GO.load(Ordering::SeqCst));
            }
        })
        .unwrap();
        yield_now();
        let mut out = String::new();
        write_threads(&mut out);
        GO.store(true, Ordering::SeqCst);
        wakeup(chan);
        join(sleeper);
        let line = alloc::format!("thread {sleeper} \"sleeper\": Sleeping({chan})");
        assert!(out.contains(&line), "no {line:?} in:\n{out}");
        assert!(out.contains("kernel::sched::schedule"), "no backtrace from the switch in:\n{out}");
    }

    /// Sleep and wakeup: a ping-pong of 50 rounds on one channel.
    #[ktest]
    fn sleep_and_wakeup_ping_pong() {
        static TURN: AtomicU64 = AtomicU64::new(0);
        TURN.store(0, Ordering::SeqCst);
        let chan = &TURN as *const _ as usize;
        let wait_for = move |v: u64| {
            while TURN.load(Ordering::SeqCst) != v {
                sleep_if(chan, || TURN.load(Ordering::SeqCst) != v);
            }
        };
        let other = spawn("pong", move || {
            for i in 0..50u64 {
                wait_for(2 * i + 1);
                TURN.store(2 * i + 2, Ordering::SeqCst);
                wakeup(chan);
            }
        })
        .unwrap();
        let before = SWITCHES.load(Ordering::Relaxed);
        for i in 0..50u64 {
            TURN.store(2 * i + 1, Ordering::SeqCst);
            wakeup(chan);
            wait_for(2 * i + 2);
        }
        join(other);
        assert_eq!(TURN.load(Ordering::SeqCst), 100);
        assert!(SWITCHES.load(Ordering::Relaxed) - before >= 100, "each round is two switches");
    }
}
