//! User processes: an address space, open files and signal actions, and
//! one or more threads that run in ring 3 (`thread.rs`).
//!
//! A process's first thread sets its address space, loads the program into
//! it (the ELF loader maps the image's pages from a vm_object, so they
//! arrive through the ordinary fault path), and enters user mode with
//! `iretq`. A thread comes back only through a system call, an interrupt or
//! an exception: `exit` ends it, `exit_group` the process; a fault the VM
//! cannot resolve, or any other exception in user mode, kills the process
//! with a signal, printed on the console (unless it has a handler for a
//! fault's SIGSEGV or SIGBUS, which then runs on the faulting thread with
//! the fault's `si_addr` and `si_code`). The last thread out frees the
//! memory, and the parent (or init, if the parent is gone) collects the
//! status with `wait4`, Linux-style.
//!
//! A signal is sent to a process (any thread that does not block it may
//! take it; one that can is woken) or to one thread (`tkill`, `tgkill`, a
//! fault). It is left pending and acted on when a thread next leaves the
//! kernel (the end of a system call, or an interrupt or fault that came
//! from user mode): its handler runs on a Linux frame (`sigframe.rs`, with
//! `SA_ONSTACK` and `sigaltstack`, `SA_NODEFER`, `SA_RESETHAND`, the
//! action's mask) and `rt_sigreturn` comes back, or its default action ends
//! the process. Sleeps in system calls end early with EINTR so that happens
//! promptly (and `SA_RESTART` restarts the calls Linux restarts). Ignored
//! signals, and those with an ignoring default (SIGCHLD, SIGCONT, SIGURG,
//! SIGWINCH), are dropped.
//!
//! Locks: a process's and a thread's fields behind a `Mutex` are taken
//! with interrupts on (a sibling may hold one while preempted), except the
//! table's, a process's list of threads and its address-space slot, always
//! taken with them off and held only for a copy, atomics, wakeups and list
//! changes.
//!
//! The user stack starts at [`STACK_INITIAL`] bytes below [`STACK_TOP`] and
//! grows on fault, down to the process's `RLIMIT_STACK`; a fault beyond that
//! is a SIGSEGV. The growth is the VM map's (`vm::map`'s stacks, FreeBSD's
//! `vm_map_growstack`); the process gives its map the limits it grows
//! within ([`Process::update_map_limits`]) whenever they change.
//!
//! Resource limits (`getrlimit`, `setrlimit`, `prlimit64`) are Linux's, with
//! its defaults, inherited by a fork and kept across an exec. Enforced:
//! `RLIMIT_AS` (mmap, brk, stack growth: ENOMEM), `RLIMIT_NOFILE` (open,
//! dup: EMFILE), `RLIMIT_NPROC` (fork and new threads: EAGAIN), `RLIMIT_MEMLOCK` (mlock,
//! mlockall: ENOMEM, EPERM when 0) and `RLIMIT_STACK`. Everything runs as
//! root, but unlike Linux's root the limits hold for it too: they are what
//! keeps one program from taking the kernel's heap.

mod deliver;
pub mod elf;
mod exec;
mod exit;
mod fork;
pub mod futex;
pub mod image;
pub mod itimer;
mod layout;
mod limits;
pub mod programs;
mod sigframe;
mod signal;
pub(crate) mod thread;

pub use deliver::*;
pub use exec::*;
pub use exit::*;
pub use fork::*;
pub use layout::*;
pub use limits::*;
pub use sigframe::{
    AltStack, BUS_ADRERR, BUS_OBJERR, CLD_EXITED, CLD_KILLED, SEGV_ACCERR, SEGV_MAPERR, SI_TKILL, SI_USER, SIGINFO_SIZE,
    SS_DISABLE, SS_ONSTACK, SigInfo,
};
pub use signal::*;
pub use thread::*;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};

use spin::Mutex;
use vm::map::Inherit;
use vm::pmap::Prot;
use x86_64::instructions::interrupts::without_interrupts;

use crate::kern::sched::{self, ThreadId};
use crate::mm::vmspace::AddressSpace;

/// How a process ended (what `wait4` will report).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Exited(i32),
    Signaled(u8),
}

impl Status {
    /// Linux's wait status: exit code << 8, or the signal number.
    pub fn wstatus(self) -> u32 {
        match self {
            Status::Exited(c) => ((c as u32) & 0xff) << 8,
            Status::Signaled(s) => (s as u32) & 0x7f,
        }
    }

    fn from_wstatus(w: u32) -> Status {
        if w & 0x7f == 0 { Status::Exited(((w >> 8) & 0xff) as i32) } else { Status::Signaled((w & 0x7f) as u8) }
    }

    /// The shell's view: the exit code, or 128 + the signal.
    pub fn shell_code(self) -> u8 {
        match self {
            Status::Exited(c) => c as u8,
            Status::Signaled(s) => 128u8.wrapping_add(s),
        }
    }
}

/// A process's open files by descriptor, each with its close-on-exec flag.
pub type FileTable = Vec<Option<(Arc<crate::fs::OpenFile>, bool)>>;

///
/// Fields behind a `Mutex` are that mutex's, (R): each its own, small
/// lock, held for a copy or an update and never across a sleep.
pub struct Process {
    /// (C)
    pub pid: u64,
    /// The parent's pid (0: started by the kernel); init's once the parent
    /// has gone. (A)
    pub ppid: AtomicU64,
    /// (R)
    parent: Mutex<Weak<Process>>,
    /// The program's name (for messages). (R)
    pub name: Mutex<String>,
    /// The address space; None once the process has ended. (R; the map
    /// inside is the map lock's, (M))
    space: Mutex<Option<Arc<AddressSpace>>>,
    /// 0 while running; then `1 << 16 | wstatus`. (A)
    status: AtomicU32,
    /// The heap of `brk`: where it starts (above the image) and its end. (R)
    pub brk: Mutex<(u64, u64)>,
    /// `mlockall(MCL_FUTURE)`: new mappings are locked too. (A)
    pub lock_future: AtomicBool,
    /// With `MCL_ONFAULT` as well: locked as their pages are faulted in. (A)
    pub lock_future_on_fault: AtomicBool,
    /// Children not yet waited for. (R)
    children: Mutex<Vec<Arc<Process>>>,
    /// Signals sent to the process and not yet acted on, bit n - 1 for
    /// signal n (any thread that does not block one may take it; each
    /// thread has its own set too, [`Thread`]). (A)
    pending: AtomicU64,
    /// The signal the parent is sent at the process's exit: SIGCHLD, or
    /// what `clone` asked (0: none). `wait4` tells the two kinds apart
    /// (`__WCLONE`, `__WALL`). (A)
    pub exit_signal: AtomicU8,
    /// Signal actions, index n - 1 for signal n. (R)
    pub actions: Mutex<[SigAction; NSIG as usize]>,
    /// What the handler of each pending signal is told (index n - 1 for
    /// signal n; the first sending wins, as a standard signal does not
    /// queue). (R)
    pub sig_info: Mutex<[sigframe::SigInfo; NSIG as usize]>,
    /// The real-time interval timer (`setitimer`, `alarm`). (A, inside)
    pub itimer: itimer::RealTimer,
    /// Open files by descriptor, with the close-on-exec flag. (R)
    pub files: Mutex<FileTable>,
    /// Resource limits by `RLIMIT_*` number. (R)
    pub limits: Mutex<[Rlimit; RLIM_NLIMITS]>,
    /// Its threads, the first (whose id is the pid) while it lives. Taken
    /// with interrupts off, after the table's lock when both are. (R)
    threads: Mutex<Vec<Arc<Thread>>>,
    /// How the process ends, once a thread has ended it for all
    /// (`exit_group`, a fatal signal): `1 << 16 | wstatus`; 0 before. The
    /// first to set it wins. (A)
    group_exit: AtomicU32,
    /// The thread whose `execve` is ending the others (0: none). (A)
    exec_by: AtomicU64,
    /// Its place in the count of processes and threads. (C)
    _slot: Slot,
}

/// Live processes and threads. (R, taken with interrupts off)
struct Table {
    /// Processes by pid, from their first thread's start until their last
    /// thread's end.
    processes: BTreeMap<u64, Arc<Process>>,
    /// Threads by the scheduler's id of the thread that runs them.
    threads: BTreeMap<ThreadId, Arc<Thread>>,
}

static TABLE: Mutex<Table> = Mutex::new(Table { processes: BTreeMap::new(), threads: BTreeMap::new() });
/// Process and thread ids, one space as on Linux (a process's id is its
/// first thread's).
static NEXT_PID: AtomicU64 = AtomicU64::new(1);
/// Pending sets (of processes and of threads) that are not empty: a quick
/// test on the way out. (A)
static PENDING_ANY: AtomicU32 = AtomicU32::new(0);
/// Processes that have left `PROCESSES` in `exit_current` and are still
/// freeing what they hold. Counted under the `PROCESSES` lock as they
/// leave it, so that a process is always either listed or counted until
/// its status is set. (A)
static EXITING: AtomicU32 = AtomicU32::new(0);
/// Init, the parent of orphans.
static INIT: Mutex<Weak<Process>> = Mutex::new(Weak::new());

/// Why a process could not be started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnError {
    NoMemory,
    /// As many processes as memory allows exist already ([`max_processes`]),
    /// or as many as the parent's RLIMIT_NPROC allows.
    TooMany,
    /// The program could not be loaded.
    Load(crate::proc::elf::ElfError),
    /// The process is being ended (an `execve` while a sibling thread
    /// ends the process, or execs itself).
    Interrupted,
}

/// The process the current thread runs.
pub fn current() -> Option<Arc<Process>> {
    let tid = sched::current();
    without_interrupts(|| TABLE.lock().threads.get(&tid).map(|t| t.process.clone()))
}

/// The current thread, if it is a process's.
pub fn current_thread() -> Option<Arc<Thread>> {
    let tid = sched::current();
    without_interrupts(|| TABLE.lock().threads.get(&tid).cloned())
}

/// The pid of the process the current thread runs, 0 if none.
pub fn current_pid() -> u64 {
    current().map_or(0, |p| p.pid)
}

/// The live process with `pid`.
pub fn by_pid(pid: u64) -> Option<Arc<Process>> {
    without_interrupts(|| TABLE.lock().processes.get(&pid).cloned())
}

/// The live thread whose id is `tid`.
pub fn thread_by_tid(tid: u64) -> Option<Arc<Thread>> {
    without_interrupts(|| TABLE.lock().threads.values().find(|t| t.tid() == tid).cloned())
}

/// Every live process.
pub fn all() -> Vec<Arc<Process>> {
    without_interrupts(|| TABLE.lock().processes.values().cloned().collect())
}

/// True if no process is running, nor still ending: one that has left the
/// list of live processes may still be freeing its memory.
pub fn none_left() -> bool {
    without_interrupts(|| TABLE.lock().processes.is_empty() && EXITING.load(Ordering::SeqCst) == 0)
}

impl Process {
    /// Pages mapped in the process's address space: its resident set.
    pub fn resident_pages(&self) -> u64 {
        self.space().map_or(0, |s| s.map.lock().pmap().resident_count() as u64)
    }

    fn new(parent: Option<&Arc<Process>>, name: &str) -> Process {
        let console = crate::fs::OpenFile::console();
        // Descriptors 0, 1 and 2: the console, one open file as on a terminal.
        let files = alloc::vec![Some((console.clone(), false)), Some((console.clone(), false)), Some((console, false))];
        Self::with_files(parent, name, files)
    }

    /// A process with the descriptor table `files`.
    fn with_files(parent: Option<&Arc<Process>>, name: &str, files: FileTable) -> Process {
        // Processes the kernel starts are not held to the limit.
        Self::in_slot(parent, name, files, Slot::always())
    }

    fn in_slot(parent: Option<&Arc<Process>>, name: &str, files: FileTable, slot: Slot) -> Process {
        Process {
            pid: NEXT_PID.fetch_add(1, Ordering::Relaxed),
            ppid: AtomicU64::new(parent.map_or(0, |p| p.pid)),
            parent: Mutex::new(parent.map_or_else(Weak::new, Arc::downgrade)),
            name: Mutex::new(name.into()),
            space: Mutex::new(None),
            status: AtomicU32::new(0),
            brk: Mutex::new((0, 0)),
            lock_future: AtomicBool::new(false),
            lock_future_on_fault: AtomicBool::new(false),
            children: Mutex::new(Vec::new()),
            pending: AtomicU64::new(0),
            exit_signal: AtomicU8::new(SIGCHLD),
            actions: Mutex::new([SigAction::default(); NSIG as usize]),
            sig_info: Mutex::new([sigframe::SigInfo::default(); NSIG as usize]),
            itimer: itimer::RealTimer::default(),
            files: Mutex::new(files),
            limits: Mutex::new(match parent {
                Some(p) => *p.limits.lock(),
                None => default_limits(),
            }),
            threads: Mutex::new(Vec::new()),
            group_exit: AtomicU32::new(0),
            exec_by: AtomicU64::new(0),
            _slot: slot,
        }
    }

    /// Runs `f` on each of the process's threads, with interrupts off and
    /// the list locked: `f` only reads or sets atomics, or wakes.
    pub fn each_thread(&self, mut f: impl FnMut(&Arc<Thread>)) {
        without_interrupts(|| self.threads.lock().iter().for_each(&mut f))
    }

    /// The process's thread count.
    pub fn thread_count(&self) -> usize {
        without_interrupts(|| self.threads.lock().len())
    }

    /// The soft limit of resource `r` (an `RLIMIT_*`).
    pub fn limit(&self, r: usize) -> u64 {
        self.limits.lock()[r].cur
    }

    /// What the process's map may grow to: its stack (RLIMIT_STACK), the
    /// map (RLIMIT_AS), and, after `mlockall(MCL_FUTURE)`, its wired
    /// memory (RLIMIT_MEMLOCK).
    pub fn map_limits(&self) -> vm::map::MapLimits {
        let l = *self.limits.lock();
        vm::map::MapLimits {
            stack: l[RLIMIT_STACK].cur,
            size: l[RLIMIT_AS].cur,
            wire_future: self.lock_future.load(Ordering::SeqCst).then_some(l[RLIMIT_MEMLOCK].cur),
            lock_on_fault: self.lock_future_on_fault.load(Ordering::SeqCst),
            step: STACK_GROW,
            lowest: STACK_LOWEST,
        }
    }

    /// Gives the map the limits as they are now: after `setrlimit`,
    /// `mlockall` and `munlockall`, and for a new address space.
    pub fn update_map_limits(&self) {
        if let Some(space) = self.space() {
            space.map.lock().set_limits(self.map_limits());
        }
    }

    /// The open file of descriptor `fd`.
    pub fn file(&self, fd: u64) -> Option<Arc<crate::fs::OpenFile>> {
        let files = self.files.lock();
        files.get(usize::try_from(fd).ok()?)?.as_ref().map(|(f, _)| f.clone())
    }

    /// Puts `f` at the lowest free descriptor at or above `min`; None if
    /// every descriptor below `RLIMIT_NOFILE` is taken, or the table cannot
    /// grow (EMFILE either way).
    pub fn add_file(&self, f: Arc<crate::fs::OpenFile>, cloexec: bool, min: usize) -> Option<u64> {
        let max = self.limit(RLIMIT_NOFILE).min(NR_OPEN) as usize;
        let mut files = self.files.lock();
        let slot = (min..max).find(|&i| files.get(i).is_none_or(|s| s.is_none()))?;
        if slot >= files.len() {
            let more = slot + 1 - files.len();
            files.try_reserve(more).ok()?;
            files.resize(slot + 1, None);
        }
        files[slot] = Some((f, cloexec));
        Some(slot as u64)
    }

    /// The address space (None once the process has ended).
    pub fn space(&self) -> Option<Arc<AddressSpace>> {
        without_interrupts(|| self.space.lock().clone())
    }

    fn chan(self: &Arc<Self>) -> usize {
        Arc::as_ptr(self) as usize
    }

    /// How the process ended, if it has.
    pub fn status(&self) -> Option<Status> {
        match self.status.load(Ordering::SeqCst) {
            0 => None,
            w => Some(Status::from_wstatus(w & 0xffff)),
        }
    }

    /// Waits for the process to end and returns how.
    pub fn wait(self: &Arc<Self>) -> Status {
        loop {
            if let Some(s) = self.status() {
                return s;
            }
            sched::sleep_if(self.chan(), || self.status().is_none());
        }
    }
}

pub(crate) mod tests;
