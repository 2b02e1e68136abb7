//! User processes: an address space and a thread that runs in ring 3.
//!
//! A process's thread sets its address space, loads the program into it
//! (the ELF loader maps the image's pages from a vm_object, so they arrive
//! through the ordinary fault path), and enters user mode with `iretq`. It
//! comes back only through a system call, an interrupt or an exception:
//! `exit` ends it with a status; a fault the VM cannot resolve, or any other
//! exception in user mode, kills it with a signal, printed on the console.
//! Either way it frees its memory at once, and its parent (or init, if the
//! parent is gone) collects the status with `wait4`, Linux-style.
//!
//! Signals have their default actions only (there is no handler delivery
//! yet): a signal that terminates is left pending and acted on when the
//! process next leaves the kernel (the end of a system call, or an interrupt
//! that came from user mode); sleeps in system calls end early with EINTR
//! so that happens promptly. Ignored signals, and those with an ignoring
//! default (SIGCHLD, SIGCONT, SIGURG, SIGWINCH), are dropped.
//!
//! The user stack starts at [`STACK_INITIAL`] bytes below [`STACK_TOP`] and
//! grows on fault, down to the process's `RLIMIT_STACK`; a fault beyond that
//! is a SIGSEGV.
//!
//! Resource limits (`getrlimit`, `setrlimit`, `prlimit64`) are Linux's, with
//! its defaults, inherited by a fork and kept across an exec. Enforced:
//! `RLIMIT_AS` (mmap, brk, stack growth: ENOMEM), `RLIMIT_NOFILE` (open,
//! dup: EMFILE), `RLIMIT_NPROC` (fork: EAGAIN), `RLIMIT_MEMLOCK` (mlock,
//! mlockall: ENOMEM, EPERM when 0) and `RLIMIT_STACK`. Everything runs as
//! root, but unlike Linux's root the limits hold for it too: they are what
//! keeps one program from taking the kernel's heap.

pub mod elf;
pub mod image;
pub mod programs;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use spin::Mutex;
use vm::map::Inherit;
use vm::pmap::Prot;
use x86_64::instructions::interrupts::without_interrupts;

use crate::kern::sched::{self, ThreadId};
use crate::mm::vmspace::AddressSpace;

/// Where flat programs are loaded, and the top of the user stack.
pub const CODE_BASE: u64 = 0x40_0000;
pub const STACK_TOP: u64 = 0x7FFF_FFFF_0000;
/// The stack mapped at start; it grows on fault down to the limit.
pub const STACK_INITIAL: u64 = 128 * 1024;
/// The stack's default size limit (Linux's default RLIMIT_STACK), and the
/// room below [`STACK_TOP`] that program images leave for the stack.
pub const STACK_LIMIT: u64 = 8 << 20;

/// Resource numbers (`RLIMIT_*`), indices into [`Process::limits`].
pub const RLIMIT_STACK: usize = 3;
pub const RLIMIT_NPROC: usize = 6;
pub const RLIMIT_NOFILE: usize = 7;
pub const RLIMIT_MEMLOCK: usize = 8;
pub const RLIMIT_AS: usize = 9;
pub const RLIMIT_SIGPENDING: usize = 11;
pub const RLIMIT_MSGQUEUE: usize = 12;
pub const RLIM_NLIMITS: usize = 16;
pub const RLIM_INFINITY: u64 = u64::MAX;
/// The most descriptors `RLIMIT_NOFILE` may allow (Linux's `fs.nr_open`).
pub const NR_OPEN: u64 = 1 << 20;

/// One resource limit: the soft limit, enforced, and the hard one, the
/// most the soft may be raised to (`cur <= max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rlimit {
    pub cur: u64,
    pub max: u64,
}

/// Linux's limits for init (`INIT_RLIMITS`, and `fork_init`'s process
/// count, which follows memory: half the threads whose kernel stacks would
/// take an eighth of it).
pub fn default_limits() -> [Rlimit; RLIM_NLIMITS] {
    let inf = Rlimit { cur: RLIM_INFINITY, max: RLIM_INFINITY };
    let mut l = [inf; RLIM_NLIMITS];
    // Linux's count of threads: what `max_processes` allows.
    let memory = vm::try_global().map_or(0, |pm| pm.pages().len() as u64 * PAGE);
    let threads = (memory / (8 * sched::STACK_SIZE as u64)).max(20);
    l[RLIMIT_STACK] = Rlimit { cur: STACK_LIMIT, max: RLIM_INFINITY };
    l[4 /* RLIMIT_CORE */] = Rlimit { cur: 0, max: RLIM_INFINITY };
    l[RLIMIT_NPROC] = Rlimit { cur: threads / 2, max: threads / 2 };
    l[RLIMIT_NOFILE] = Rlimit { cur: 1024, max: 4096 };
    l[RLIMIT_MEMLOCK] = Rlimit { cur: 8 << 20, max: 8 << 20 };
    l[RLIMIT_SIGPENDING] = Rlimit { cur: threads / 2, max: threads / 2 };
    l[RLIMIT_MSGQUEUE] = Rlimit { cur: 819_200, max: 819_200 };
    l[13 /* RLIMIT_NICE */] = Rlimit { cur: 0, max: 0 };
    l[14 /* RLIMIT_RTPRIO */] = Rlimit { cur: 0, max: 0 };
    l
}
/// How much the stack grows at least, at a time.
const STACK_GROW: u64 = 64 * 1024;
const PAGE: u64 = 4096;

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

pub const SIGILL: u8 = 4;
pub const SIGBUS: u8 = 7;
pub const SIGFPE: u8 = 8;
pub const SIGKILL: u8 = 9;
pub const SIGSEGV: u8 = 11;
pub const SIGCHLD: u8 = 17;
pub const SIGCONT: u8 = 18;
pub const SIGSTOP: u8 = 19;
pub const SIGTSTP: u8 = 20;
pub const SIGTTIN: u8 = 21;
pub const SIGTTOU: u8 = 22;
pub const SIGURG: u8 = 23;
pub const SIGWINCH: u8 = 28;
/// Signals are 1..=NSIG.
pub const NSIG: u8 = 64;

/// `SIG_IGN` as a handler value (`SIG_DFL` is 0).
pub const SIG_IGN: u64 = 1;

/// A `struct sigaction` as the kernel sees it (`rt_sigaction`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SigAction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

/// A process's open files by descriptor, each with its close-on-exec flag.
pub type FileTable = Vec<Option<(Arc<crate::fs::OpenFile>, bool)>>;

pub struct Process {
    pub pid: u64,
    /// The parent's pid (0: started by the kernel); init's once the parent
    /// has gone.
    pub ppid: AtomicU64,
    parent: Mutex<Weak<Process>>,
    /// The process's thread.
    tid: AtomicU64,
    /// The program's name (for messages).
    pub name: Mutex<String>,
    /// The address space; None once the process has ended.
    space: Mutex<Option<Arc<AddressSpace>>>,
    /// 0 while running; then `1 << 16 | wstatus`. (A)
    status: AtomicU32,
    /// The heap of `brk`: where it starts (above the image) and its end.
    pub brk: Mutex<(u64, u64)>,
    /// The lowest address of the stack mapped so far. (A)
    pub stack_low: AtomicU64,
    /// `mlockall(MCL_FUTURE)`: new mappings are locked too.
    pub lock_future: AtomicBool,
    /// Children not yet waited for.
    children: Mutex<Vec<Arc<Process>>>,
    /// Signals sent and not yet acted on, bit n for signal n. (A)
    pending: AtomicU64,
    /// The signal mask (`rt_sigprocmask`), same layout. (A)
    pub blocked: AtomicU64,
    /// Signal actions, index n - 1 for signal n.
    pub actions: Mutex<[SigAction; NSIG as usize]>,
    /// Open files by descriptor, with the close-on-exec flag.
    pub files: Mutex<FileTable>,
    /// Resource limits by `RLIMIT_*` number.
    pub limits: Mutex<[Rlimit; RLIM_NLIMITS]>,
    /// Its place in the count of processes. (C)
    _slot: Slot,
}

/// Processes in existence, ended ones not yet waited for included. (A)
static PROCESS_COUNT: AtomicUsize = AtomicUsize::new(0);

/// A process's place in [`PROCESS_COUNT`], given back when its record is
/// freed: once its parent has waited for it.
struct Slot;

impl Slot {
    /// A place, or None if `limit` processes exist already. The count is
    /// taken before it is compared, so that two forks at once cannot both
    /// take the last place. Relaxed: the count guards no other data.
    fn take(limit: usize) -> Option<Slot> {
        if PROCESS_COUNT.fetch_add(1, Ordering::Relaxed) >= limit {
            PROCESS_COUNT.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Slot)
    }

    /// A place whatever the count: for the processes the kernel starts.
    fn always() -> Slot {
        PROCESS_COUNT.fetch_add(1, Ordering::Relaxed);
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        PROCESS_COUNT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many processes fork makes at most: as Linux bounds its threads
/// (`kernel.threads-max`), so that kernel stacks take at most an eighth of
/// memory. A fork bomb then gets EAGAIN while the machine still has memory
/// for everything else (at 128 MiB, 512 processes; Linux allows about 530).
/// A test may lower it ([`PROCESS_LIMIT`]).
pub fn max_processes() -> usize {
    match PROCESS_LIMIT.load(Ordering::Relaxed) {
        0 => {
            let memory = vm::global().pages().len() * PAGE as usize;
            (memory / (8 * sched::STACK_SIZE)).max(20)
        }
        n => n,
    }
}

/// The process limit when not 0, else the one memory gives. (A)
static PROCESS_LIMIT: AtomicUsize = AtomicUsize::new(0);

/// Processes in existence (ended ones not yet waited for included).
pub fn process_count() -> usize {
    PROCESS_COUNT.load(Ordering::Relaxed)
}

/// Live processes by the id of their thread.
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
            stack_low: AtomicU64::new(STACK_TOP - STACK_INITIAL),
            lock_future: AtomicBool::new(false),
            children: Mutex::new(Vec::new()),
            pending: AtomicU64::new(0),
            blocked: AtomicU64::new(0),
            actions: Mutex::new([SigAction::default(); NSIG as usize]),
            files: Mutex::new(files),
            limits: Mutex::new(match parent {
                Some(p) => *p.limits.lock(),
                None => default_limits(),
            }),
            _slot: slot,
        }
    }

    /// The soft limit of resource `r` (an `RLIMIT_*`).
    pub fn limit(&self, r: usize) -> u64 {
        self.limits.lock()[r].cur
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

/// A new address space with the initial stack mapped.
fn new_space() -> Result<Arc<AddressSpace>, SpawnError> {
    new_space_with_stack(STACK_INITIAL)
}

/// A new address space with `stack` bytes of stack mapped below
/// [`STACK_TOP`].
fn new_space_with_stack(stack: u64) -> Result<Arc<AddressSpace>, SpawnError> {
    let space = AddressSpace::new().map_err(|_| SpawnError::NoMemory)?;
    space
        .map
        .lock()
        .map(Some(STACK_TOP - stack), stack, Prot::RW, Prot::RW, Inherit::Copy, None, false)
        .map_err(|_| SpawnError::NoMemory)?;
    Ok(space)
}

/// The stack an exec maps at first: [`STACK_INITIAL`], or more when the
/// argument block needs it (with the same room to spare below it).
fn initial_stack_size(exec: &Exec) -> u64 {
    let need = exec.args.stack_bytes().next_multiple_of(PAGE);
    need.saturating_add(STACK_INITIAL / 2).clamp(STACK_INITIAL, STACK_LIMIT)
}

/// Starts the thread of process `p`, running `f`, and records it as `p`'s
/// before it can run: a process can be found (by `kill`, by `wait`) from
/// the moment its thread exists, and cannot end before it is recorded.
/// Interrupts are off across the two steps, so on one CPU the new thread
/// cannot run in between. (With more CPUs, threads will be created stopped.)
fn start_thread(name: &str, p: &Arc<Process>, f: impl FnOnce() + Send + 'static) -> Result<(), SpawnError> {
    // Made with interrupts on (its stack comes from the page allocator),
    // started with them off, so that it cannot run before it is in the
    // process table.
    let thread = sched::prepare_detached(name, f).ok_or(SpawnError::NoMemory)?;
    let mut unstarted = None;
    let r = without_interrupts(|| {
        let tid = match thread.start() {
            Ok(tid) => tid,
            Err(t) => {
                unstarted = Some(t);
                return Err(SpawnError::NoMemory);
            }
        };
        p.tid.store(tid, Ordering::SeqCst);
        PROCESSES.lock().insert(tid, p.clone());
        Ok(())
    });
    // Not started (no scheduler yet): freed here, with interrupts on.
    drop(unstarted);
    r
}

/// Loads `p`'s address space for the current thread: the first thing every
/// process thread does (it starts in the kernel's).
fn become_process(p: Arc<Process>) {
    let space = p.space().expect("a new process has its address space");
    sched::set_address_space(space.pmap.root(), Arc::as_ptr(&space) as usize);
}

/// Starts `program` (flat code, entered at its first byte) in a new process.
pub fn spawn(name: &str, program: &'static [u8]) -> Result<Arc<Process>, SpawnError> {
    let space = new_space()?;
    let code_len = (program.len() as u64).next_multiple_of(PAGE).max(PAGE);
    space
        .map
        .lock()
        .map(Some(CODE_BASE), code_len, Prot::RW, Prot::ALL, Inherit::Copy, None, false)
        .map_err(|_| SpawnError::NoMemory)?;
    let proc = Arc::new(Process::new(None, name));
    *proc.space.lock() = Some(space);
    let p = proc.clone();
    start_thread(name, &proc, move || {
        become_process(p);
        // Load the program through the fault path, then make it read-only
        // and executable.
        if crate::syscall::uaccess::copy_to_user(CODE_BASE, program).is_err() {
            exit_current(Status::Signaled(SIGSEGV));
        }
        if let Some(space) = current().and_then(|me| me.space()) {
            let _ = space.map.lock().protect(CODE_BASE, CODE_BASE + code_len, Prot::READ | Prot::EXEC);
        }
        enter_user(CODE_BASE, STACK_TOP)
    })?;
    Ok(proc)
}

/// Starts a process that runs no program: its thread runs `f` in the
/// kernel, in the process's own address space (its stack mapped, nothing
/// else), with kernel access to user pages allowed, and the process exits
/// with status 0 when `f` returns. For the kernel's own scenarios that set
/// up a process's memory and look at it (`vmstate`).
pub fn spawn_kernel(name: &str, f: impl FnOnce(&Arc<Process>) + Send + 'static) -> Result<Arc<Process>, SpawnError> {
    let proc = Arc::new(Process::new(None, name));
    *proc.space.lock() = Some(new_space()?);
    let p = proc.clone();
    start_thread(name, &proc, move || {
        become_process(p.clone());
        crate::arch::cpu::stac();
        f(&p);
        crate::arch::cpu::clac();
        drop(p);
        exit_current(Status::Exited(0))
    })?;
    Ok(proc)
}

/// What a new program image needs: its bytes, arguments and environment.
pub struct Exec {
    pub image: crate::proc::image::Image,
    pub args: crate::proc::elf::ArgBlock,
}

/// A seed for AT_RANDOM.
fn random_bytes() -> [u8; 16] {
    let t = crate::kern::time::rdtsc();
    let mut random = [0u8; 16];
    random[..8].copy_from_slice(&t.to_le_bytes());
    random[8..].copy_from_slice(&(t.rotate_left(29) ^ 0x9E37_79B9_7F4A_7C15).to_le_bytes());
    random
}

/// Loads `exec` into `space`, which must be the current thread's address
/// space, and builds the initial stack: returns the entry point, the stack
/// pointer and the end of the image (where the heap starts).
fn load_image(space: &AddressSpace, exec: &Exec) -> Result<(u64, u64, u64), crate::proc::elf::ElfError> {
    let loaded = crate::proc::elf::load(space, &exec.image)?;
    let sp = crate::proc::elf::initial_stack(STACK_TOP, &exec.args, &loaded, random_bytes())?;
    Ok((loaded.entry, sp, loaded.end))
}

/// Starts the static ELF executable of `exec` in a new process, a child of
/// `parent` (None: of the kernel).
pub fn spawn_exec(name: &str, exec: Exec, parent: Option<&Arc<Process>>) -> Result<Arc<Process>, SpawnError> {
    // Check the image before a thread exists, so a bad one is an error here.
    crate::proc::elf::check(exec.image.bytes(), exec.image.len()).map_err(SpawnError::Load)?;
    let proc = Arc::new(Process::new(parent, name));
    let stack = initial_stack_size(&exec);
    *proc.space.lock() = Some(new_space_with_stack(stack)?);
    proc.stack_low.store(STACK_TOP - stack, Ordering::SeqCst);
    let p = proc.clone();
    start_thread(name, &proc, move || {
        become_process(p);
        let Some(space) = current().and_then(|me| me.space()) else { exit_current(Status::Exited(127)) };
        let started = load_image(&space, &exec);
        drop(space);
        drop(exec);
        match started {
            Ok((entry, sp, end)) => {
                if let Some(me) = current() {
                    *me.brk.lock() = (end, end);
                }
                enter_user(entry, sp)
            }
            Err(e) => {
                crate::kprintln!("pid {}: cannot load the program: {e:?}", current_pid());
                exit_current(Status::Exited(127))
            }
        }
    })?;
    if let Some(parent) = parent {
        parent.children.lock().push(proc.clone());
    }
    Ok(proc)
}

/// Starts the static ELF executable `image` in a new process with `argv`.
pub fn spawn_elf(name: &str, image: &'static [u8], argv: &[&str]) -> Result<Arc<Process>, SpawnError> {
    let argv: Vec<&[u8]> = argv.iter().map(|a| a.as_bytes()).collect();
    let args = crate::proc::elf::ArgBlock::from_strs(&argv, &[b"PATH=/bin"]).map_err(SpawnError::Load)?;
    let exec = Exec { image: crate::proc::image::Image::Static(image), args };
    spawn_exec(name, exec, None)
}

/// Starts init (`/bin/init` with `argv`): the parent of orphans.
pub fn start_init(argv: &[&str]) -> Result<Arc<Process>, SpawnError> {
    let p = spawn_elf("init", crate::proc::programs::bin("init"), argv)?;
    *INIT.lock() = Arc::downgrade(&p);
    Ok(p)
}

/// `execve`: replaces the current process's program with `exec`. On
/// success the system call returns into the new program: `tf` is rewritten
/// to its entry. On failure nothing has changed.
pub fn exec(tf: &mut crate::arch::trapframe::TrapFrame, name: &str, exec: Exec) -> Result<(), SpawnError> {
    let me = current().ok_or(SpawnError::NoMemory)?;
    crate::proc::elf::check(exec.image.bytes(), exec.image.len()).map_err(SpawnError::Load)?;
    let old = me.space().ok_or(SpawnError::NoMemory)?;
    let stack = initial_stack_size(&exec);
    let space = new_space_with_stack(stack)?;
    sched::set_address_space(space.pmap.root(), Arc::as_ptr(&space) as usize);
    let (entry, sp, end) = match load_image(&space, &exec) {
        Ok(v) => v,
        Err(e) => {
            sched::set_address_space(old.pmap.root(), Arc::as_ptr(&old) as usize);
            return Err(SpawnError::Load(e));
        }
    };
    // The point of no return: the old image goes.
    let replaced = without_interrupts(|| me.space.lock().replace(space));
    drop(replaced);
    drop(old);
    *me.brk.lock() = (end, end);
    me.stack_low.store(STACK_TOP - stack, Ordering::SeqCst);
    me.lock_future.store(false, Ordering::SeqCst);
    *me.name.lock() = name.into();
    // Close-on-exec descriptors close.
    let closing: Vec<_> = {
        let mut files = me.files.lock();
        files.iter_mut().filter(|s| s.as_ref().is_some_and(|(_, cloexec)| *cloexec)).filter_map(|s| s.take()).collect()
    };
    drop(closing);
    // Handlers do not survive an exec; ignored signals stay ignored.
    for a in me.actions.lock().iter_mut() {
        if a.handler != SIG_IGN {
            *a = SigAction::default();
        }
    }
    sched::set_fs_base(0);
    let (cs, ss) = (tf.cs, tf.ss);
    *tf = crate::arch::trapframe::TrapFrame::default();
    tf.cs = cs;
    tf.ss = ss;
    tf.rip = entry;
    tf.rsp = sp;
    tf.rflags = 0x202;
    Ok(())
}

/// `fork`: a child with a copy-on-write copy of the address space, which
/// returns to user mode where the parent made the call, with 0 in RAX.
/// Returns the child's pid to the parent.
pub fn fork(tf: &crate::arch::trapframe::TrapFrame) -> Result<u64, SpawnError> {
    let parent = current().ok_or(SpawnError::NoMemory)?;
    // RLIMIT_NPROC: every process counts, ended ones not yet waited for
    // too (there is one user, root), as Linux counts a user's.
    if process_count() as u64 >= parent.limit(RLIMIT_NPROC) {
        return Err(SpawnError::TooMany);
    }
    let slot = Slot::take(max_processes()).ok_or(SpawnError::TooMany)?;
    // The map's entry tree allocates without a way to fail: refuse the
    // fork while the heap, grown as far as free pages allow, would have
    // less than a kernel stack and a margin to spare.
    if crate::kern::heap::available() < FORK_HEAP_RESERVE {
        return Err(SpawnError::NoMemory);
    }
    // Everything that can fail is done before the child can run, and what
    // was made so far is dropped on the way out: the child process (and
    // with it its address space, whose map drop releases its references).
    let mut files = Vec::new();
    {
        let theirs = parent.files.lock();
        files.try_reserve_exact(theirs.len()).map_err(|_| SpawnError::NoMemory)?;
        files.extend(theirs.iter().cloned());
    }
    parent.children.lock().try_reserve(1).map_err(|_| SpawnError::NoMemory)?;
    let space = parent.space().ok_or(SpawnError::NoMemory)?.fork().map_err(|_| SpawnError::NoMemory)?;
    let name = parent.name.lock().clone();
    let child = Arc::try_new(Process::in_slot(Some(&parent), &name, files, slot)).map_err(|_| SpawnError::NoMemory)?;
    *child.space.lock() = Some(space);
    *child.brk.lock() = *parent.brk.lock();
    child.stack_low.store(parent.stack_low.load(Ordering::SeqCst), Ordering::SeqCst);
    child.blocked.store(parent.blocked.load(Ordering::SeqCst), Ordering::SeqCst);
    *child.actions.lock() = *parent.actions.lock();
    let mut frame = tf.clone();
    frame.rax = 0;
    let fs = x86_64::registers::model_specific::FsBase::read().as_u64();
    let c = child.clone();
    start_thread("user", &child, move || {
        become_process(c);
        sched::set_fs_base(fs);
        // SAFETY: `frame` is a user-mode frame (the parent's system call),
        // kept in this closure's frame, which is never returned to.
        unsafe { resume_user(&frame) }
    })?;
    let pid = child.pid;
    // Room was reserved above.
    parent.children.lock().push(child);
    Ok(pid)
}

/// Heap a fork leaves free at least: a kernel stack and a margin for the
/// allocations that cannot fail (entry-tree nodes).
const FORK_HEAP_RESERVE: usize = crate::kern::sched::STACK_SIZE + 128 * 1024;

/// Why `wait4` returned without a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitError {
    /// No such child.
    NoChild,
    /// A signal ended the wait.
    Interrupted,
}

/// `wait4(pid, …)`: waits for a child (any if `pid` is -1) to end, removes
/// it, and returns its pid and status; with `nohang`, `Ok(None)` if none has
/// ended yet.
pub fn wait_child(pid: i64, nohang: bool) -> Result<Option<(u64, Status)>, WaitError> {
    let me = current().ok_or(WaitError::NoChild)?;
    let matches = |c: &Arc<Process>| pid == -1 || c.pid as i64 == pid;
    loop {
        {
            let mut children = me.children.lock();
            if !children.iter().any(matches) {
                return Err(WaitError::NoChild);
            }
            if let Some(i) = children.iter().position(|c| matches(c) && c.status().is_some()) {
                let c = children.remove(i);
                let status = c.status().unwrap_or(Status::Exited(0));
                return Ok(Some((c.pid, status)));
            }
        }
        if nohang {
            return Ok(None);
        }
        if signal_pending() {
            return Err(WaitError::Interrupted);
        }
        // The children's lock is only tried under the scheduler lock: if it
        // is held, go round again rather than wait for it there.
        sched::sleep_if(me.chan(), || {
            me.children.try_lock().is_some_and(|ch| !ch.iter().any(|c| matches(c) && c.status().is_some()))
                && !signal_pending_in(&me)
        });
    }
}

/// Returns to user mode with the registers of `tf`.
///
/// `tf` may be anywhere (fork's is in the new thread's entry closure, on
/// the kernel heap), so it is first copied onto the running kernel stack,
/// with interrupts off, and restored from there. RSP must never point at
/// the frame itself while a trap can be taken: the CPU would push its
/// frame, and the handler its calls, over whatever lies below `tf`.
/// `iretq` turns interrupts back on with the user's RFLAGS.
///
/// # Safety
/// `tf` is a user-mode frame (user CS and SS, canonical user RIP and RSP),
/// not within the stack below the caller's RSP.
#[unsafe(naked)]
unsafe extern "C" fn resume_user(tf: *const crate::arch::trapframe::TrapFrame) -> ! {
    core::arch::naked_asm!(
        "cli",
        "sub rsp, {size}",
        "mov rsi, rdi",
        "mov rdi, rsp",
        "mov ecx, {words}",
        "rep movsq",
        "jmp {ret}",
        size = const core::mem::size_of::<crate::arch::trapframe::TrapFrame>(),
        words = const core::mem::size_of::<crate::arch::trapframe::TrapFrame>() / 8,
        ret = sym crate::arch::idt::trap_return,
    )
}

/// Enters user mode at `rip` with stack `rsp`; never returns.
fn enter_user(rip: u64, rsp: u64) -> ! {
    use crate::arch::gdt::{USER_CODE_SELECTOR, USER_DATA_SELECTOR};
    // SAFETY: builds an interrupt-return frame to ring 3 with the user
    // selectors, interrupts enabled in the user context, and the given
    // address and stack in the current address space; general registers are
    // cleared so nothing of the kernel leaks to the program.
    unsafe {
        core::arch::asm!(
            "push {ss}", "push {rsp}", "push 0x202", "push {cs}", "push {rip}",
            "xor eax, eax", "xor ebx, ebx", "xor ecx, ecx", "xor edx, edx", "xor esi, esi",
            "xor edi, edi", "xor ebp, ebp", "xor r8d, r8d", "xor r9d, r9d", "xor r10d, r10d",
            "xor r11d, r11d", "xor r12d, r12d", "xor r13d, r13d", "xor r14d, r14d", "xor r15d, r15d",
            "iretq",
            ss = in(reg) USER_DATA_SELECTOR as u64,
            rsp = in(reg) rsp,
            cs = in(reg) USER_CODE_SELECTOR as u64,
            rip = in(reg) rip,
            options(noreturn),
        )
    }
}

/// Ends the current process with `status`: frees its address space, hands
/// its children to init, records the status, wakes whoever waits (its
/// parent, a kernel waiter) and ends the thread.
pub fn exit_current(status: Status) -> ! {
    // Tearing the address space down may wait (for pages being paged out,
    // for paging in progress): with interrupts on, whatever the way here
    // (a trap handler comes with them off).
    x86_64::instructions::interrupts::enable();
    let me = without_interrupts(|| {
        let mut processes = PROCESSES.lock();
        let me = processes.remove(&sched::current());
        if me.is_some() {
            EXITING.fetch_add(1, Ordering::SeqCst);
        }
        me
    });
    sched::set_address_space(0, 0);
    if let Some(p) = me {
        let space = without_interrupts(|| p.space.lock().take());
        drop(space);
        let files = core::mem::take(&mut *p.files.lock());
        drop(files);
        if p.pending.swap(0, Ordering::SeqCst) != 0 {
            PENDING_ANY.fetch_sub(1, Ordering::SeqCst);
        }
        let orphans = core::mem::take(&mut *p.children.lock());
        let init = INIT.lock().upgrade().filter(|i| !Arc::ptr_eq(i, &p) && i.status().is_none());
        if let Some(init) = init {
            for c in &orphans {
                c.ppid.store(init.pid, Ordering::SeqCst);
                *c.parent.lock() = Arc::downgrade(&init);
            }
            init.children.lock().extend(orphans);
            sched::wakeup(init.chan());
        }
        p.status.store(1 << 16 | status.wstatus(), Ordering::SeqCst);
        EXITING.fetch_sub(1, Ordering::SeqCst);
        sched::wakeup(p.chan());
        if let Some(parent) = p.parent.lock().upgrade() {
            sched::wakeup(parent.chan());
        }
    }
    sched::exit()
}

/// Kills the current process for an exception taken in user mode.
///
/// Neither this nor its callers may hold anything owned (a `String`, an
/// `Arc`) when `exit_current` is called: it never returns, so such a value
/// is never dropped. The report is made in its own frame, which is gone by
/// then, and `what` is formatted in place, not into a heap string (a
/// cloned name and a formatted message here once cost 64 bytes of heap
/// per crashed process).
pub fn kill_current(signal: u8, what: core::fmt::Arguments<'_>, addr: u64, rip: u64) -> ! {
    report_kill(signal, what, addr, rip);
    exit_current(Status::Signaled(signal))
}

/// The console line of [`kill_current`]: printed under the name's lock, so
/// nothing is copied.
fn report_kill(signal: u8, what: core::fmt::Arguments<'_>, addr: u64, rip: u64) {
    let pid = current_pid();
    match current() {
        Some(p) => {
            let name = p.name.lock();
            crate::kprintln!("pid {pid} ({name}): killed by signal {signal}: {what} at {addr:#x}, rip {rip:#x}");
        }
        None => crate::kprintln!("pid {pid} (): killed by signal {signal}: {what} at {addr:#x}, rip {rip:#x}"),
    }
}

// ---- signals ---------------------------------------------------------------

/// What a signal does to a process that has not asked otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Disposition {
    Ignore,
    Terminate,
}

fn disposition(p: &Process, sig: u8) -> Disposition {
    if sig == SIGKILL {
        return Disposition::Terminate;
    }
    let handler = p.actions.lock()[sig as usize - 1].handler;
    if handler == SIG_IGN {
        return Disposition::Ignore;
    }
    match sig {
        SIGCHLD | SIGCONT | SIGURG | SIGWINCH => Disposition::Ignore,
        // No job control: stopping is not supported, so the stop signals are
        // dropped (SIGSTOP too, which cannot be caught or ignored).
        SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU => {
            log::warn!("pid {}: stop signal {sig} dropped: no job control", p.pid);
            Disposition::Ignore
        }
        // A handler cannot run until signal delivery exists: the default
        // action applies.
        _ => Disposition::Terminate,
    }
}

/// True if `p` is init. A program's signals to init are dropped unless init
/// has a handler for them (Linux's SIGNAL_UNKILLABLE): init ends only by
/// itself. With no handler delivery yet, that is all of them.
pub fn is_init(p: &Arc<Process>) -> bool {
    INIT.lock().upgrade().is_some_and(|i| Arc::ptr_eq(&i, p))
}

/// Sends signal `sig` (1..=64) to `p`.
pub fn send_signal(p: &Arc<Process>, sig: u8) {
    if sig == 0 || sig > NSIG || p.status().is_some() || disposition(p, sig) == Disposition::Ignore {
        return;
    }
    if p.pending.fetch_or(1 << (sig - 1), Ordering::SeqCst) == 0 {
        PENDING_ANY.fetch_add(1, Ordering::SeqCst);
    }
    sched::wake_thread(p.tid.load(Ordering::SeqCst));
}

impl Process {
    /// Signals sent and not yet acted on (bit n - 1 for signal n).
    pub fn pending_signals(&self) -> u64 {
        self.pending.load(Ordering::SeqCst)
    }
}

fn deliverable(p: &Process) -> u64 {
    let kill = 1u64 << (SIGKILL - 1);
    p.pending.load(Ordering::SeqCst) & (!p.blocked.load(Ordering::SeqCst) | kill)
}

fn signal_pending_in(p: &Process) -> bool {
    PENDING_ANY.load(Ordering::Relaxed) != 0 && deliverable(p) != 0
}

/// True if the current process has a signal to act on (a sleeping system
/// call then returns EINTR).
pub fn signal_pending() -> bool {
    PENDING_ANY.load(Ordering::Relaxed) != 0 && current().is_some_and(|p| deliverable(&p) != 0)
}

/// Acts on the current process's pending signals: called on the way back to
/// user mode. Every signal acted on terminates.
pub fn check_signals() {
    if PENDING_ANY.load(Ordering::Relaxed) == 0 {
        return;
    }
    let Some(p) = current() else { return };
    let bits = deliverable(&p);
    if bits == 0 {
        return;
    }
    let sig = bits.trailing_zeros() as u8 + 1;
    drop(p);
    // The parent learns it from wait4; the console only in the kernel's log
    // (a fault's kill, above, is reported on the console as a crash).
    log::info!("pid {}: killed by signal {sig}", current_pid());
    exit_current(Status::Signaled(sig))
}

/// Drops pending signals that `p` now ignores (after `rt_sigaction`).
pub fn discard_ignored(p: &Process) {
    for sig in 1..=NSIG {
        let bit = 1u64 << (sig - 1);
        if p.pending.load(Ordering::SeqCst) & bit != 0
            && disposition(p, sig) == Disposition::Ignore
            && p.pending.fetch_and(!bit, Ordering::SeqCst) == bit
        {
            PENDING_ANY.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The current process's zombie child with `pid`, if any (kill on a zombie
/// succeeds and does nothing).
pub fn is_zombie_child(pid: u64) -> bool {
    current().is_some_and(|me| me.children.lock().iter().any(|c| c.pid == pid && c.status().is_some()))
}

/// Out of memory: kills the process with the largest resident set (init,
/// when it is init, last of all), saying so with `why`. False when there
/// is no process. (The pageout daemon's choice, given to it at boot.)
pub fn kill_largest(why: core::fmt::Arguments) -> bool {
    let is_init = |p: &Process| p.pid == 1 && p.name.lock().as_str() == "init";
    let Some(p) = all().into_iter().max_by_key(|p| (!is_init(p), p.resident_pages())) else { return false };
    crate::kprintln!(
        "pid {} ({}): killed: out of memory ({} resident pages; {why})",
        p.pid,
        p.name.lock().as_str(),
        p.resident_pages()
    );
    send_signal(&p, SIGKILL);
    true
}

// ---- the stack ---------------------------------------------------------------

/// Grows the current process's stack down to cover `addr` if `addr` is in
/// the stack's range below what is mapped, within the limit, and nothing else
/// is mapped in the way. Returns whether it did (the fault is then retried).
pub fn grow_stack(addr: u64) -> bool {
    let Some(p) = current() else { return false };
    let Some(space) = p.space() else { return false };
    let limit = p.limit(RLIMIT_STACK);
    let floor = STACK_TOP.saturating_sub(limit).max(0x1_0000);
    let low = p.stack_low.load(Ordering::SeqCst);
    if addr >= low || addr < floor {
        if addr < floor && addr >= floor.saturating_sub(STACK_GROW) {
            crate::kprintln!("pid {}: stack overflow: {addr:#x} is beyond the {} KiB stack limit", p.pid, limit >> 10);
        }
        return false;
    }
    let want = addr & !(PAGE - 1);
    let mut new_low = want.min(low - STACK_GROW).max(floor);
    let mut map = space.map.lock();
    // Stop at anything mapped below the stack.
    for e in map.entries() {
        if e.start < low && e.end > new_low {
            new_low = new_low.max(e.end);
        }
    }
    if new_low > want {
        return false;
    }
    // RLIMIT_AS (and RLIMIT_MEMLOCK when new memory is locked): grow by
    // what the fault needs if the usual step is too much.
    let mut room = p.limit(RLIMIT_AS).saturating_sub(map.size());
    if p.lock_future.load(Ordering::SeqCst) {
        room = room.min(p.limit(RLIMIT_MEMLOCK).saturating_sub(map.wired_size()));
    }
    if low - new_low > room {
        new_low = want;
        if low - new_low > room {
            return false;
        }
    }
    if map.map(Some(new_low), low - new_low, Prot::RW, Prot::RW, Inherit::Copy, None, false).is_err() {
        return false;
    }
    p.stack_low.store(new_low, Ordering::SeqCst);
    drop(map);
    if p.lock_future.load(Ordering::SeqCst) {
        let _ = vm::fault::wire(&space.map, new_low, low);
    }
    true
}

// The built-in programs: position-independent x86_64 code on the Linux ABI.
core::arch::global_asm!(
    ".section .rodata.user_programs, \"a\"",
    // write(1, "hello from user mode\n", 21); exit(rax): exits with the count.
    ".global user_hello_start",
    "user_hello_start:",
    "mov eax, 1",
    "mov edi, 1",
    "lea rsi, [rip + 1f]",
    "mov edx, 21",
    "syscall",
    "mov edi, eax",
    "mov eax, 231",
    "syscall",
    "ud2",
    "1: .ascii \"hello from user mode\\n\"",
    ".global user_hello_end",
    "user_hello_end:",
    // write(1, 0xdead0000, 8): a bad pointer; exit(-rax), i.e. 14 for EFAULT.
    ".global user_efault_start",
    "user_efault_start:",
    "mov eax, 1",
    "mov edi, 1",
    "mov rsi, 0xdead0000",
    "mov edx, 8",
    "syscall",
    "neg eax",
    "mov edi, eax",
    "mov eax, 231",
    "syscall",
    "ud2",
    ".global user_efault_end",
    "user_efault_end:",
    // A store to an unmapped address: killed by SIGSEGV.
    ".global user_segv_start",
    "user_segv_start:",
    "mov rax, 0x10",
    "mov qword ptr [rax], 1",
    "ud2",
    ".global user_segv_end",
    "user_segv_end:",
    // A store into its own (read-only) code: killed by SIGSEGV.
    ".global user_rowrite_start",
    "user_rowrite_start:",
    "lea rax, [rip]",
    "mov byte ptr [rax], 0x90",
    "ud2",
    ".global user_rowrite_end",
    "user_rowrite_end:",
    // Touch 16 stack pages, write a pattern and read it back; exit(0) if it
    // held, exit(1) if not.
    ".global user_stack_start",
    "user_stack_start:",
    "mov rcx, 16",
    "mov rbx, rsp",
    "2: sub rbx, 4096",
    "mov [rbx], rcx",
    "dec rcx",
    "jnz 2b",
    "mov rcx, 16",
    "mov rbx, rsp",
    "3: sub rbx, 4096",
    "cmp [rbx], rcx",
    "jne 4f",
    "dec rcx",
    "jnz 3b",
    "xor edi, edi",
    "mov eax, 231",
    "syscall",
    "4: mov edi, 1",
    "mov eax, 231",
    "syscall",
    "ud2",
    ".global user_stack_end",
    "user_stack_end:",
    ".text",
);

unsafe extern "C" {
    static user_hello_start: u8;
    static user_hello_end: u8;
    static user_efault_start: u8;
    static user_efault_end: u8;
    static user_segv_start: u8;
    static user_segv_end: u8;
    static user_rowrite_start: u8;
    static user_rowrite_end: u8;
    static user_stack_start: u8;
    static user_stack_end: u8;
}

macro_rules! program {
    ($start:ident, $end:ident) => {{
        // SAFETY: the two labels bound one program in read-only data, start
        // before end; the bytes are never written.
        unsafe {
            let s = &raw const $start;
            let e = &raw const $end;
            core::slice::from_raw_parts(s, e as usize - s as usize)
        }
    }};
}

/// The built-in programs by name.
pub fn builtin(name: &str) -> Option<&'static [u8]> {
    Some(match name {
        "hello" => program!(user_hello_start, user_hello_end),
        "efault" => program!(user_efault_start, user_efault_end),
        "segv" => program!(user_segv_start, user_segv_end),
        "rowrite" => program!(user_rowrite_start, user_rowrite_end),
        "stack" => program!(user_stack_start, user_stack_end),
        _ => return None,
    })
}

pub(crate) mod tests;
