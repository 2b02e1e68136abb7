//! Threads: several in one process, sharing its address space, files and
//! signal actions (Linux's thread group). Each has its own id (`gettid`;
//! the first thread's is the pid), its kernel stack, FS base and FPU state
//! (the scheduler's thread that runs it), its signal mask, its own pending
//! signals (`tkill`, `tgkill`), its alternate signal stack, and the word
//! cleared and woken at its end (`set_tid_address`, `CLONE_CHILD_CLEARTID`:
//! what `pthread_join` waits on).
//!
//! A thread is made by `clone` with `CLONE_THREAD` ([`clone_thread`]) and
//! recorded in the process before it can run. It ends by `exit` (itself
//! alone), or with the rest: `exit_group`, a fatal signal, and an `execve`
//! in a sibling all end every other thread with a thread-directed SIGKILL
//! that each acts on at its next return to user mode, or at once if it
//! sleeps interruptibly. The last thread out ends the process
//! (`exit.rs`).

use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;
use x86_64::instructions::interrupts::without_interrupts;

use super::exit::resume_user;
use super::limits::{FORK_HEAP_RESERVE, RLIMIT_NPROC, Slot, max_processes, process_count};
use super::sigframe::FpuState;
use super::sigframe::{AltStack, SigInfo};
use super::signal::NSIG;
use super::{NEXT_PID, Process, SpawnError, TABLE, current_thread};
use crate::arch::trapframe::TrapFrame;
use crate::kern::sched;

/// One thread of a process.
///
/// Fields behind a `Mutex` are that mutex's, (R); the thread's own signal
/// state is touched by the thread itself, and by senders through atomics.
pub struct Thread {
    /// The id programs see (`gettid`); the first thread's is the pid. A
    /// thread that execs takes the pid as the only thread left. (A)
    tid: AtomicU64,
    /// The scheduler's thread that runs it (set before it first runs). (A)
    sched: AtomicU64,
    /// (C)
    pub process: Arc<Process>,
    /// Signals sent to this thread alone, bit n - 1 for signal n. (A)
    pub(super) pending: AtomicU64,
    /// What the handler of each is told (the first sending wins). (R)
    pub(super) sig_info: Mutex<[SigInfo; NSIG as usize]>,
    /// The signal mask (`rt_sigprocmask`), same layout. (A)
    pub blocked: AtomicU64,
    /// The alternate signal stack (`sigaltstack`). (R)
    pub altstack: Mutex<AltStack>,
    /// The mask `rt_sigsuspend` replaced, to be restored after the handler
    /// that ends it (its frame saves this one). (R)
    pub saved_mask: Mutex<Option<u64>>,
    /// Where a 0 is written and futex waiters woken at the thread's end,
    /// if the address space lives on (0: nowhere). (A)
    pub clear_child_tid: AtomicU64,
    /// Set as the thread starts to end, before its clear-child-tid wakes a
    /// joiner: from then on it is gone to `tkill` (ESRCH), as it will be
    /// from the tables a moment later. (A: SeqCst, pairs with the joiner's
    /// futex wait, which sees the 0 written after this.)
    pub exiting: core::sync::atomic::AtomicBool,
    /// Its place in the count of threads, for all but a first thread
    /// (whose process holds it). (C)
    _slot: Option<Slot>,
}

impl Thread {
    pub(super) fn new(tid: u64, process: Arc<Process>, blocked: u64, slot: Option<Slot>) -> Thread {
        Thread {
            tid: AtomicU64::new(tid),
            sched: AtomicU64::new(0),
            process,
            pending: AtomicU64::new(0),
            sig_info: Mutex::new([SigInfo::default(); NSIG as usize]),
            blocked: AtomicU64::new(blocked),
            altstack: Mutex::new(AltStack::default()),
            saved_mask: Mutex::new(None),
            clear_child_tid: AtomicU64::new(0),
            exiting: core::sync::atomic::AtomicBool::new(false),
            _slot: slot,
        }
    }

    /// The thread's id (`gettid`).
    pub fn tid(&self) -> u64 {
        self.tid.load(Ordering::SeqCst)
    }

    pub(super) fn set_tid(&self, tid: u64) {
        self.tid.store(tid, Ordering::SeqCst);
    }

    /// The scheduler's id of the thread that runs it.
    pub fn sched_id(&self) -> sched::ThreadId {
        self.sched.load(Ordering::SeqCst)
    }

    /// Whether this is the process's first thread (its id is the pid).
    pub fn is_leader(&self) -> bool {
        self.tid() == self.process.pid
    }
}

/// Starts `t`, a thread of `t.process`, running `f`, and records it before
/// it can run: a thread can be found (by `kill`, by `wait`) from the
/// moment it exists, and cannot end before it is recorded. The first
/// thread records its process too. The table's lock is held across the two
/// steps: a new thread that starts at once on another CPU reaches the
/// tables only through that lock, so it finds itself recorded.
pub(super) fn start(name: &str, t: Arc<Thread>, f: impl FnOnce() + Send + 'static) -> Result<(), SpawnError> {
    // Made with interrupts on (its stack comes from the page allocator),
    // started with them off, so that it cannot run before it is in the
    // tables. Room in the process's list is made first: nothing below
    // allocates but the table's insertions.
    let p = t.process.clone();
    without_interrupts(|| p.threads.lock().try_reserve(1)).map_err(|_| SpawnError::NoMemory)?;
    let thread = sched::prepare_detached(name, f).ok_or(SpawnError::NoMemory)?;
    let mut unstarted = None;
    let r = without_interrupts(|| {
        let mut table = TABLE.lock();
        let mut threads = p.threads.lock();
        // Not into a process being ended or exec'd: the killing thread
        // sets its flag, then sends its kills under this lock, so a thread
        // added before it looks is killed and one after sees the flag.
        let ending = p.group_exit.load(Ordering::SeqCst) != 0 || p.exec_by.load(Ordering::SeqCst) != 0;
        if ending && !threads.is_empty() {
            unstarted = Some(thread);
            return Err(SpawnError::Interrupted);
        }
        let id = match thread.start() {
            Ok(id) => id,
            Err(th) => {
                unstarted = Some(th);
                return Err(SpawnError::NoMemory);
            }
        };
        t.sched.store(id, Ordering::SeqCst);
        // The tables' insertions allocate a tree node at most, which the
        // caller's check of the heap's reserve (FORK_HEAP_RESERVE) leaves
        // room for.
        if threads.is_empty() {
            table.processes.insert(p.pid, p.clone());
        }
        threads.push(t.clone());
        table.threads.insert(id, t);
        Ok(())
    });
    // Not started (no scheduler yet): freed here, with interrupts on.
    drop(unstarted);
    r
}

/// Starts the first thread of `p`, running `f`.
pub(super) fn start_first(name: &str, p: &Arc<Process>, f: impl FnOnce() + Send + 'static) -> Result<(), SpawnError> {
    let t = Arc::try_new(Thread::new(p.pid, p.clone(), 0, None)).map_err(|_| SpawnError::NoMemory)?;
    start(name, t, f)
}

/// What `clone` asks of a new thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadArgs {
    /// Its stack pointer (a thread must have its own).
    pub stack: u64,
    /// Its FS base (`CLONE_SETTLS`); the caller's otherwise.
    pub tls: Option<u64>,
    /// Where the caller's memory gets the new id, before the thread can
    /// run (`CLONE_PARENT_SETTID`).
    pub parent_tid: Option<u64>,
    /// Where it writes its id, before it first returns to user mode
    /// (`CLONE_CHILD_SETTID`).
    pub set_child_tid: Option<u64>,
    /// Where a 0 is written, and waiters woken, at its end
    /// (`CLONE_CHILD_CLEARTID`).
    pub clear_child_tid: Option<u64>,
}

/// `clone(CLONE_THREAD|…)`: a new thread of the current process that
/// returns to user mode where the caller made the call, with 0 in RAX and
/// the stack and TLS of `args`. Returns its id.
pub fn clone_thread(tf: &TrapFrame, args: ThreadArgs) -> Result<u64, SpawnError> {
    let me = current_thread().ok_or(SpawnError::NoMemory)?;
    let p = me.process.clone();
    // Threads count against RLIMIT_NPROC and the bound on kernel stacks,
    // as Linux counts tasks.
    if process_count() as u64 >= p.limit(RLIMIT_NPROC) {
        return Err(SpawnError::TooMany);
    }
    let slot = Slot::take(max_processes()).ok_or(SpawnError::TooMany)?;
    if crate::kern::heap::available() < FORK_HEAP_RESERVE {
        return Err(SpawnError::NoMemory);
    }
    let tid = NEXT_PID.fetch_add(1, Ordering::Relaxed);
    let t = Thread::new(tid, p.clone(), me.blocked.load(Ordering::SeqCst), Some(slot));
    t.clear_child_tid.store(args.clear_child_tid.unwrap_or(0), Ordering::SeqCst);
    let t = Arc::try_new(t).map_err(|_| SpawnError::NoMemory)?;
    let space = p.space().ok_or(SpawnError::NoMemory)?;
    let begin = Begin::new(tf, Some(args.stack), args.tls, tid, args.parent_tid, args.set_child_tid);
    start("user", t, move || {
        sched::set_address_space(Some(&space.pmap), Arc::as_ptr(&space) as usize);
        drop(space);
        begin.enter()
    })?;
    Ok(tid)
}

/// How a cloned thread or a fork child begins: where its parent's `clone`
/// returns, with 0 in RAX, the parent's FPU state (rounding modes,
/// exception masks, as on Linux), its FS base, and its id written where
/// `CLONE_CHILD_SETTID` asked.
pub(super) struct Begin {
    frame: TrapFrame,
    fpu: FpuState,
    fs: u64,
    id: u64,
    set_child_tid: Option<u64>,
}

impl Begin {
    /// Taken in the parent's `clone` (frame `tf`), with `stack` and `tls`
    /// if it gave them. The parent's copy of `id` (`CLONE_PARENT_SETTID`)
    /// is written now, before the new thread can run: one that ends at
    /// once clears the same word (glibc's pd->tid), and a write after that
    /// would leave pthread_join waiting for good. A bad address does not
    /// undo the clone, as on Linux.
    pub(super) fn new(
        tf: &TrapFrame,
        stack: Option<u64>,
        tls: Option<u64>,
        id: u64,
        parent_tid: Option<u64>,
        set_child_tid: Option<u64>,
    ) -> Begin {
        let mut frame = tf.clone();
        frame.rax = 0;
        if let Some(sp) = stack {
            frame.rsp = sp;
        }
        let fs = tls.unwrap_or_else(|| x86_64::registers::model_specific::FsBase::read().as_u64());
        if let Some(at) = parent_tid {
            let _ = crate::syscall::uaccess::copy_to_user(at, &(id as u32).to_le_bytes());
        }
        Begin { frame, fpu: FpuState::capture(), fs, id, set_child_tid }
    }

    /// In the new thread, its address space loaded: enters user mode.
    pub(super) fn enter(self) -> ! {
        self.fpu.restore();
        sched::set_fs_base(self.fs);
        if let Some(at) = self.set_child_tid {
            // As Linux: a bad address is the new thread's to find out.
            let _ = crate::syscall::uaccess::copy_to_user(at, &(self.id as u32).to_le_bytes());
        }
        // SAFETY: `frame` is a user-mode frame (the parent's system call),
        // kept in this function's frame, which is never returned to.
        unsafe { resume_user(&self.frame) }
    }
}
