//! User processes: an address space and a thread that runs in ring 3.
//!
//! A process's thread sets its address space, loads the program into it
//! through the ordinary fault path (so its pages are VM pages like any
//! other), and enters user mode with `iretq`. It comes back only through a
//! system call or an exception: `exit` ends it with a status; a fault the VM
//! cannot resolve, or any other exception in user mode, kills it with a
//! signal, printed on the console. Either way it frees everything it held
//! and whoever waits for it gets the status, Linux-style.
//!
//! For now programs are flat, position-independent code (the ELF loader and
//! the C programs come next); the built-in ones below are written in
//! assembly against the Linux system-call ABI.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;
use vm::map::Inherit;
use vm::pmap::Prot;

use crate::sched::{self, ThreadId};
use crate::vmspace::AddressSpace;

/// Where programs are loaded, and the user stack.
pub const CODE_BASE: u64 = 0x40_0000;
pub const STACK_TOP: u64 = 0x7FFF_FFFF_0000;
pub const STACK_SIZE: u64 = 64 * 1024;

/// How a process ended (what `wait4` will report).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Exited(i32),
    Signaled(u8),
}

pub const SIGILL: u8 = 4;
pub const SIGFPE: u8 = 8;
pub const SIGSEGV: u8 = 11;

pub struct Process {
    pub pid: u64,
    /// The parent's pid (0: started by the kernel).
    pub ppid: u64,
    pub space: Arc<AddressSpace>,
    status: Mutex<Option<Status>>,
    /// The heap of `brk`: where it starts (above the image) and its end.
    pub brk: Mutex<(u64, u64)>,
    /// Children not yet waited for.
    children: Mutex<alloc::vec::Vec<Arc<Process>>>,
}

/// Live processes by the id of their thread.
static PROCESSES: Mutex<BTreeMap<ThreadId, Arc<Process>>> = Mutex::new(BTreeMap::new());
static NEXT_PID: AtomicU64 = AtomicU64::new(1);

/// Why a process could not be started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnError {
    NoMemory,
}

pub fn current() -> Option<Arc<Process>> {
    let tid = sched::current();
    x86_64::instructions::interrupts::without_interrupts(|| PROCESSES.lock().get(&tid).cloned())
}

/// The pid of the process the current thread runs, 0 if none.
pub fn current_pid() -> u64 {
    current().map_or(0, |p| p.pid)
}

impl Process {
    fn new(ppid: u64, space: Arc<AddressSpace>) -> Process {
        Process {
            pid: NEXT_PID.fetch_add(1, Ordering::Relaxed),
            ppid,
            space,
            status: Mutex::new(None),
            brk: Mutex::new((0, 0)),
            children: Mutex::new(alloc::vec::Vec::new()),
        }
    }
}

/// Starts `program` (flat code, entered at its first byte) in a new process.
pub fn spawn(name: &str, program: &'static [u8]) -> Result<Arc<Process>, SpawnError> {
    let space = AddressSpace::new().map_err(|_| SpawnError::NoMemory)?;
    let code_len = (program.len() as u64).next_multiple_of(4096).max(4096);
    {
        let mut map = space.map.lock();
        map.map(Some(CODE_BASE), code_len, Prot::RW, Prot::ALL, Inherit::Copy, None, false)
            .map_err(|_| SpawnError::NoMemory)?;
        map.map(Some(STACK_TOP - STACK_SIZE), STACK_SIZE, Prot::RW, Prot::RW, Inherit::Copy, None, false)
            .map_err(|_| SpawnError::NoMemory)?;
    }
    let proc = Arc::new(Process::new(0, space));
    let p = proc.clone();
    sched::spawn(name, move || {
        let root = p.space.pmap.root();
        let ptr = Arc::as_ptr(&p.space) as usize;
        x86_64::instructions::interrupts::without_interrupts(|| PROCESSES.lock().insert(sched::current(), p));
        sched::set_address_space(root, ptr);
        // Load the program through the fault path, then make it read-only
        // and executable.
        if crate::syscall::copy_to_user(CODE_BASE, program).is_err() {
            exit_current(Status::Signaled(SIGSEGV));
        }
        if let Some(me) = current() {
            let _ = me.space.map.lock().protect(CODE_BASE, CODE_BASE + code_len, Prot::READ | Prot::EXEC);
        }
        enter_user(CODE_BASE, STACK_TOP)
    })
    .ok_or(SpawnError::NoMemory)?;
    Ok(proc)
}

/// Starts the static ELF executable `image` in a new process with `argv`.
pub fn spawn_elf(name: &str, image: &'static [u8], argv: &'static [&'static str]) -> Result<Arc<Process>, SpawnError> {
    let space = AddressSpace::new().map_err(|_| SpawnError::NoMemory)?;
    space
        .map
        .lock()
        .map(Some(STACK_TOP - STACK_SIZE), STACK_SIZE, Prot::RW, Prot::RW, Inherit::Copy, None, false)
        .map_err(|_| SpawnError::NoMemory)?;
    let proc = Arc::new(Process::new(0, space));
    let p = proc.clone();
    sched::spawn(name, move || {
        let space = p.space.clone();
        x86_64::instructions::interrupts::without_interrupts(|| PROCESSES.lock().insert(sched::current(), p));
        sched::set_address_space(space.pmap.root(), Arc::as_ptr(&space) as usize);
        let started = crate::elf::load(&space, image).and_then(|loaded| {
            let t = crate::time::rdtsc();
            let mut random = [0u8; 16];
            random[..8].copy_from_slice(&t.to_le_bytes());
            random[8..].copy_from_slice(&(t.rotate_left(29) ^ 0x9E37_79B9_7F4A_7C15).to_le_bytes());
            let sp = crate::elf::initial_stack(STACK_TOP, argv, &loaded, random)?;
            if let Some(me) = current() {
                *me.brk.lock() = (loaded.end, loaded.end);
            }
            Ok((loaded.entry, sp))
        });
        drop(space);
        match started {
            Ok((entry, sp)) => enter_user(entry, sp),
            Err(e) => {
                crate::kprintln!("pid {}: cannot load the program: {e:?}", current_pid());
                exit_current(Status::Exited(127))
            }
        }
    })
    .ok_or(SpawnError::NoMemory)?;
    Ok(proc)
}

/// Embedded bytes aligned for the ELF parser, which reads headers in place.
#[repr(C, align(8))]
struct Aligned<B: ?Sized>(B);

/// The C programs of `user/`, built with musl by `kernel/build.rs`.
pub static HELLO_ELF: &[u8] = &HELLO_ALIGNED.0;
static HELLO_ALIGNED: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/hello")));
pub static MEMORY_ELF: &[u8] = &MEMORY_ALIGNED.0;
static MEMORY_ALIGNED: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/memory")));
pub static FORK_ELF: &[u8] = &FORK_ALIGNED.0;
static FORK_ALIGNED: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/fork")));

/// `fork`: a child with a copy-on-write copy of the address space, which
/// returns to user mode where the parent made the call, with 0 in RAX.
/// Returns the child's pid to the parent.
pub fn fork(tf: &crate::arch::trap::TrapFrame) -> Result<u64, SpawnError> {
    let parent = current().ok_or(SpawnError::NoMemory)?;
    let space = parent.space.fork().map_err(|_| SpawnError::NoMemory)?;
    let child = Arc::new(Process::new(parent.pid, space));
    *child.brk.lock() = *parent.brk.lock();
    let mut frame = tf.clone();
    frame.rax = 0;
    let fs = x86_64::registers::model_specific::FsBase::read().as_u64();
    let c = child.clone();
    sched::spawn("user", move || {
        let space = c.space.clone();
        x86_64::instructions::interrupts::without_interrupts(|| PROCESSES.lock().insert(sched::current(), c));
        sched::set_address_space(space.pmap.root(), Arc::as_ptr(&space) as usize);
        drop(space);
        sched::set_fs_base(fs);
        // SAFETY: `frame` is a user-mode frame (the parent's system call),
        // kept in this closure's frame, which is never returned to.
        unsafe { resume_user(&frame) }
    })
    .ok_or(SpawnError::NoMemory)?;
    let pid = child.pid;
    parent.children.lock().push(child);
    Ok(pid)
}

/// `wait4(pid, …)`: waits for a child (any if `pid` is -1) to end, removes it,
/// and returns its pid and status. `None` if there is no such child; with
/// `nohang`, `Some((0, _))` if it has not ended.
pub fn wait_child(pid: i64, nohang: bool) -> Option<(u64, Status)> {
    let me = current()?;
    let child = {
        let children = me.children.lock();
        let found = children.iter().find(|c| pid == -1 || c.pid as i64 == pid)?;
        found.clone()
    };
    if nohang && child.status.lock().is_none() {
        return Some((0, Status::Exited(0)));
    }
    let status = child.wait();
    me.children.lock().retain(|c| !Arc::ptr_eq(c, &child));
    Some((child.pid, status))
}

/// Returns to user mode with the registers of `tf`.
///
/// # Safety
/// `tf` is a user-mode frame (user CS and SS, canonical user RIP and RSP).
#[unsafe(naked)]
unsafe extern "C" fn resume_user(tf: *const crate::arch::trap::TrapFrame) -> ! {
    core::arch::naked_asm!(
        "mov rsp, rdi",
        "pop r15", "pop r14", "pop r13", "pop r12", "pop r11", "pop r10", "pop r9",
        "pop r8", "pop rbp", "pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rbx",
        "pop rax",
        "add rsp, 16",
        "iretq",
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

/// Ends the current process with `status`: records it, wakes the waiter,
/// leaves the address space (freed with the last reference) and ends the
/// thread.
pub fn exit_current(status: Status) -> ! {
    let me = x86_64::instructions::interrupts::without_interrupts(|| PROCESSES.lock().remove(&sched::current()));
    sched::set_address_space(0, 0);
    if let Some(p) = me {
        *p.status.lock() = Some(status);
        sched::wakeup(Arc::as_ptr(&p) as usize);
    }
    sched::exit()
}

/// Kills the current process for an exception taken in user mode.
pub fn kill_current(signal: u8, what: &str, addr: u64, rip: u64) -> ! {
    crate::kprintln!("pid {}: killed by signal {signal}: {what} at {addr:#x}, rip {rip:#x}", current_pid());
    exit_current(Status::Signaled(signal))
}

impl Process {
    /// Waits for the process to end and returns how.
    pub fn wait(self: &Arc<Self>) -> Status {
        let chan = Arc::as_ptr(self) as usize;
        loop {
            if let Some(s) = *self.status.lock() {
                return s;
            }
            sched::sleep_if(chan, || self.status.try_lock().is_some_and(|s| s.is_none()));
        }
    }
}

// The built-in programs: position-independent x86_64 code on the Linux ABI.
core::arch::global_asm!(
    ".section .rodata.user_programs, \"a\"",
    // write(1, "hello from user mode\n", 21); exit(rax): exits with the count.
    ".global user_hello_start", "user_hello_start:",
    "mov eax, 1", "mov edi, 1", "lea rsi, [rip + 1f]", "mov edx, 21", "syscall",
    "mov edi, eax", "mov eax, 231", "syscall", "ud2",
    "1: .ascii \"hello from user mode\\n\"",
    ".global user_hello_end", "user_hello_end:",
    // write(1, 0xdead0000, 8): a bad pointer; exit(-rax), i.e. 14 for EFAULT.
    ".global user_efault_start", "user_efault_start:",
    "mov eax, 1", "mov edi, 1", "mov rsi, 0xdead0000", "mov edx, 8", "syscall",
    "neg eax", "mov edi, eax", "mov eax, 231", "syscall", "ud2",
    ".global user_efault_end", "user_efault_end:",
    // A store to an unmapped address: killed by SIGSEGV.
    ".global user_segv_start", "user_segv_start:",
    "mov rax, 0x10", "mov qword ptr [rax], 1", "ud2",
    ".global user_segv_end", "user_segv_end:",
    // A store into its own (read-only) code: killed by SIGSEGV.
    ".global user_rowrite_start", "user_rowrite_start:",
    "lea rax, [rip]", "mov byte ptr [rax], 0x90", "ud2",
    ".global user_rowrite_end", "user_rowrite_end:",
    // Touch 16 stack pages, write a pattern and read it back; exit(0) if it
    // held, exit(1) if not.
    ".global user_stack_start", "user_stack_start:",
    "mov rcx, 16", "mov rbx, rsp",
    "2: sub rbx, 4096", "mov [rbx], rcx", "dec rcx", "jnz 2b",
    "mov rcx, 16", "mov rbx, rsp",
    "3: sub rbx, 4096", "cmp [rbx], rcx", "jne 4f", "dec rcx", "jnz 3b",
    "xor edi, edi", "mov eax, 231", "syscall",
    "4: mov edi, 1", "mov eax, 231", "syscall", "ud2",
    ".global user_stack_end", "user_stack_end:",
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

mod tests {
    use ktest::ktest;

    use super::*;

    fn run(name: &str) -> Status {
        let p = spawn(name, builtin(name).unwrap()).unwrap();
        p.wait()
    }

    /// A program writes to the console and exits with write's result.
    #[ktest]
    fn hello_from_user_mode() {
        assert_eq!(run("hello"), Status::Exited(21));
    }

    /// A bad pointer to write is EFAULT, not a kernel fault.
    #[ktest]
    fn bad_pointer_is_efault() {
        assert_eq!(run("efault"), Status::Exited(14));
    }

    /// A store to an unmapped address kills only the process, with SIGSEGV.
    #[ktest]
    fn unmapped_store_is_sigsegv() {
        assert_eq!(run("segv"), Status::Signaled(SIGSEGV));
        assert_eq!(run("hello"), Status::Exited(21), "the kernel goes on");
    }

    /// A store to read-only memory kills the process with SIGSEGV.
    #[ktest]
    fn read_only_store_is_sigsegv() {
        assert_eq!(run("rowrite"), Status::Signaled(SIGSEGV));
    }

    /// An unmodified static musl program: start-up (TLS through
    /// arch_prctl, set_tid_address), printf flushed through writev at exit.
    #[ktest]
    fn musl_hello() {
        let p = spawn_elf("hello", HELLO_ELF, &["hello"]).unwrap();
        assert_eq!(p.wait(), Status::Exited(42));
    }

    /// malloc, mmap's errors, MAP_FIXED(_NOREPLACE), mprotect and munmap,
    /// checked by user/memory.c (which passes on Linux too).
    #[ktest]
    fn musl_memory_calls() {
        let p = spawn_elf("memory", MEMORY_ELF, &["memory"]).unwrap();
        assert_eq!(p.wait(), Status::Exited(0));
    }

    /// fork, copy-on-write between parent and children, wait4 statuses
    /// (exit codes and SIGSEGV), checked by user/fork.c (passes on Linux).
    #[ktest(timeout = 60)]
    fn musl_fork_and_wait() {
        let p = spawn_elf("fork", FORK_ELF, &["fork"]).unwrap();
        assert_eq!(p.wait(), Status::Exited(0));
    }

    /// User stack pages fault in on demand and keep their data.
    #[ktest]
    fn user_stack_faults_in() {
        assert_eq!(run("stack"), Status::Exited(0));
    }
}
