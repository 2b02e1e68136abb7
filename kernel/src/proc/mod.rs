//! User processes: an address space and a thread that runs in ring 3.
//!
//! A process's thread sets its address space, loads the program into it
//! (the ELF loader maps the image's pages from a vm_object, so they arrive
//! through the ordinary fault path), and enters user mode with `iretq`. It
//! comes back only through a system call, an interrupt or an exception:
//! `exit` ends it with a status; a fault the VM cannot resolve, or any other
//! exception in user mode, kills it with a signal, printed on the console
//! (unless it has a handler for a fault's SIGSEGV or SIGBUS, which then runs
//! with the fault's `si_addr` and `si_code`). Either way it frees its memory
//! at once, and its parent (or init, if the parent is gone) collects the
//! status with `wait4`, Linux-style.
//!
//! A signal is left pending and acted on when the process next leaves the
//! kernel (the end of a system call, or an interrupt or fault that came from
//! user mode): its handler runs on a Linux frame (`sigframe.rs`, with
//! `SA_ONSTACK` and `sigaltstack`, `SA_NODEFER`, `SA_RESETHAND`, the
//! action's mask) and `rt_sigreturn` comes back, or its default action ends
//! the process. Sleeps in system calls end early with EINTR so that happens
//! promptly (no system call is restarted yet, `SA_RESTART` or not). Ignored
//! signals, and those with an ignoring default (SIGCHLD, SIGCONT, SIGURG,
//! SIGWINCH), are dropped.
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
//! dup: EMFILE), `RLIMIT_NPROC` (fork: EAGAIN), `RLIMIT_MEMLOCK` (mlock,
//! mlockall: ENOMEM, EPERM when 0) and `RLIMIT_STACK`. Everything runs as
//! root, but unlike Linux's root the limits hold for it too: they are what
//! keeps one program from taking the kernel's heap.

mod deliver;
pub mod elf;
mod exec;
mod exit;
mod fork;
pub mod image;
pub mod itimer;
mod layout;
mod limits;
pub mod programs;
mod sigframe;
mod signal;

pub use deliver::*;
pub use exec::*;
pub use exit::*;
pub use fork::*;
pub use layout::*;
pub use limits::*;
pub use sigframe::{
    AltStack, BUS_ADRERR, BUS_OBJERR, CLD_EXITED, CLD_KILLED, SEGV_ACCERR, SEGV_MAPERR, SI_TKILL, SI_USER, SS_DISABLE,
    SS_ONSTACK, SigInfo,
};
pub use signal::*;

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
    /// The process's thread. (A)
    tid: AtomicU64,
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
    /// Children not yet waited for. (R)
    children: Mutex<Vec<Arc<Process>>>,
    /// Signals sent and not yet acted on, bit n for signal n. (A)
    pending: AtomicU64,
    /// The signal the parent is sent at the process's exit: SIGCHLD, or
    /// what `clone` asked (0: none). `wait4` tells the two kinds apart
    /// (`__WCLONE`, `__WALL`). (A)
    pub exit_signal: AtomicU8,
    /// The signal mask (`rt_sigprocmask`), same layout. (A)
    pub blocked: AtomicU64,
    /// Signal actions, index n - 1 for signal n. (R)
    pub actions: Mutex<[SigAction; NSIG as usize]>,
    /// The alternate signal stack (`sigaltstack`). (R)
    pub altstack: Mutex<sigframe::AltStack>,
    /// What the handler of each pending signal is told (index n - 1 for
    /// signal n; the first sending wins, as a standard signal does not
    /// queue). (R)
    pub sig_info: Mutex<[sigframe::SigInfo; NSIG as usize]>,
    /// The real-time interval timer (`setitimer`, `alarm`). (A, inside)
    pub itimer: itimer::RealTimer,
    /// The mask `rt_sigsuspend` replaced, to be restored after the handler
    /// that ends it (its frame saves this one). (R)
    pub saved_mask: Mutex<Option<u64>>,
    /// Open files by descriptor, with the close-on-exec flag. (R)
    pub files: Mutex<FileTable>,
    /// Resource limits by `RLIMIT_*` number. (R)
    pub limits: Mutex<[Rlimit; RLIM_NLIMITS]>,
    /// Its place in the count of processes. (C)
    _slot: Slot,
}

/// Live processes by the id of their thread. (R: the table's lock)
static PROCESSES: Mutex<BTreeMap<ThreadId, Arc<Process>>> = Mutex::new(BTreeMap::new());
static NEXT_PID: AtomicU64 = AtomicU64::new(1);
/// Processes with a signal pending (a quick test on the way out). (A)
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
}

pub fn current() -> Option<Arc<Process>> {
    let tid = sched::current();
    without_interrupts(|| PROCESSES.lock().get(&tid).cloned())
}

/// The pid of the process the current thread runs, 0 if none.
pub fn current_pid() -> u64 {
    current().map_or(0, |p| p.pid)
}

/// The live process with `pid`.
pub fn by_pid(pid: u64) -> Option<Arc<Process>> {
    without_interrupts(|| PROCESSES.lock().values().find(|p| p.pid == pid).cloned())
}

/// Every live process.
pub fn all() -> Vec<Arc<Process>> {
    without_interrupts(|| PROCESSES.lock().values().cloned().collect())
}

/// True if no process is running, nor still ending: one that has left the
/// list of live processes may still be freeing its memory.
pub fn none_left() -> bool {
    without_interrupts(|| PROCESSES.lock().is_empty() && EXITING.load(Ordering::SeqCst) == 0)
}

impl Process {
    /// Pages mapped in the process's address space: its resident set.
    pub fn resident_pages(&self) -> u64 {
        let space = self.space.lock().clone();
        space.map_or(0, |s| s.map.lock().pmap().resident_count() as u64)
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
            tid: AtomicU64::new(0),
            name: Mutex::new(name.into()),
            space: Mutex::new(None),
            status: AtomicU32::new(0),
            brk: Mutex::new((0, 0)),
            lock_future: AtomicBool::new(false),
            children: Mutex::new(Vec::new()),
            pending: AtomicU64::new(0),
            exit_signal: AtomicU8::new(SIGCHLD),
            blocked: AtomicU64::new(0),
            actions: Mutex::new([SigAction::default(); NSIG as usize]),
            altstack: Mutex::new(AltStack::default()),
            sig_info: Mutex::new([sigframe::SigInfo::default(); NSIG as usize]),
            saved_mask: Mutex::new(None),
            itimer: itimer::RealTimer::default(),
            files: Mutex::new(files),
            limits: Mutex::new(match parent {
                Some(p) => *p.limits.lock(),
                None => default_limits(),
            }),
            _slot: slot,
        }
    }

    /// The id of the process's thread.
    pub fn tid(&self) -> u64 {
        self.tid.load(Ordering::SeqCst)
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
