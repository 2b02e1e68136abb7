//! System calls on the Linux x86_64 ABI: `syscall` enters at
//! [`syscall_entry`] with the number in RAX and arguments in RDI, RSI, RDX,
//! R10, R8, R9; the result (or `-errno`) goes back in RAX.
//!
//! The entry switches to the thread's kernel stack, builds the same
//! [`TrapFrame`] as an interrupt, calls [`syscall_dispatch`], and returns
//! with `sysretq` — or with `iretq` when the return address is not
//! canonical, since `sysretq` would then fault in kernel mode on the user's
//! stack (the classic SYSRET hazard).
//!
//! User memory is reached with [`copy_from_user`] / [`copy_to_user`]: they
//! check the range is in the user half, then copy; a fault the VM cannot
//! resolve makes the page-fault handler resume at the copy's recovery point,
//! so a bad pointer is `-EFAULT`, never a kernel panic (FreeBSD's
//! `pcb_onfault`).
//!
//! The user's RSP and the thread's kernel stack pointer are kept in the
//! CPU's block (`arch::percpu`), reached through the GS base after `swapgs`.

pub mod errno;
pub mod fd;
pub mod file;
pub mod mem;
pub mod proc;
pub mod thread;
pub mod uaccess;

use core::arch::naked_asm;
use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::registers::model_specific::{Efer, EferFlags, Msr};

use crate::arch::percpu;
use crate::arch::pmap::USER_END;
use crate::arch::trapframe::TrapFrame;
use crate::syscall::errno::{EINTR, EINVAL, ENOSYS, ENOTTY, EPERM};

const MSR_STAR: u32 = 0xC000_0081;
const MSR_LSTAR: u32 = 0xC000_0082;
const MSR_FMASK: u32 = 0xC000_0084;

/// Enables `syscall`/`sysret` and points them at the entry.
pub fn init() {
    // SAFETY: EFER.SCE, STAR, LSTAR and FMASK exist on every x86_64 CPU; the
    // selectors match the GDT's layout (gdt.rs); the entry is below.
    unsafe {
        Efer::update(|f| f.insert(EferFlags::SYSTEM_CALL_EXTENSIONS));
        // sysret: CS = 0x10 + 16 | 3 = user code, SS = 0x10 + 8 | 3 = user
        // data; syscall: CS = 0x08, SS = 0x10.
        Msr::new(MSR_STAR).write((0x10u64 << 48) | (0x08u64 << 32));
        Msr::new(MSR_LSTAR).write(syscall_entry as *const () as u64);
        // Clear IF, TF, DF and AC on entry.
        Msr::new(MSR_FMASK).write(0x200 | 0x100 | 0x400 | 0x4_0000);
    }
}

/// The `syscall` entry. On entry: RCX = user RIP, R11 = user RFLAGS, RSP =
/// user stack, GS base the user's, interrupts off (FMASK). The CPU's
/// block (`arch::percpu`) holds the kernel stack and a word for the user's
/// RSP; the exit swaps the GS base back as its last step before
/// `sysretq` or `iretq`, with interrupts off.
#[unsafe(naked)]
unsafe extern "C" fn syscall_entry() {
    naked_asm!(
        "swapgs",
        "mov gs:[{user_rsp}], rsp",
        "mov rsp, gs:[{kstack}]",
        // The frame an interrupt from user mode would leave.
        "push {uds}",                       // ss
        "push qword ptr gs:[{user_rsp}]",   // rsp
        "push r11",                         // rflags
        "push {ucs}",                       // cs
        "push rcx",                         // rip
        "push 0",                           // error code
        "push 0x80",                        // 'vector': a system call
        "push rax", "push rbx", "push rcx", "push rdx", "push rsi", "push rdi", "push rbp",
        "push r8", "push r9", "push r10", "push r11", "push r12", "push r13", "push r14",
        "push r15",
        "mov rdi, rsp",
        "cld",
        "call {dispatch}",
        "pop r15", "pop r14", "pop r13", "pop r12", "pop r11", "pop r10", "pop r9",
        "pop r8", "pop rbp", "pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rbx",
        "pop rax",
        "add rsp, 16",
        // [rsp]: rip, cs, rflags, rsp, ss. After rt_sigreturn, and with a
        // non-canonical RIP, the return is by iretq.
        "cmp qword ptr gs:[{force_iret}], 0",
        "jne 3f",
        "mov r11, [rsp]",
        "shr r11, 47",
        "jnz 2f",
        "mov rcx, [rsp]",
        "mov r11, [rsp + 16]",
        "mov rsp, [rsp + 24]",
        "swapgs",
        "sysretq",
        "3:",
        "mov qword ptr gs:[{force_iret}], 0",
        "2:",
        "swapgs",
        "iretq",
        user_rsp = const percpu::OFF_USER_RSP,
        force_iret = const percpu::OFF_FORCE_IRET,
        kstack = const percpu::OFF_KERNEL_STACK,
        uds = const crate::arch::gdt::USER_DATA_SELECTOR as u64,
        ucs = const crate::arch::gdt::USER_CODE_SELECTOR as u64,
        dispatch = sym syscall_dispatch,
    )
}

pub const SYS_READ: u64 = 0;
pub const SYS_WRITE: u64 = 1;
pub const SYS_OPEN: u64 = 2;
pub const SYS_CLOSE: u64 = 3;
pub const SYS_STAT: u64 = 4;
pub const SYS_FSTAT: u64 = 5;
pub const SYS_LSTAT: u64 = 6;
pub const SYS_LSEEK: u64 = 8;
pub const SYS_PREAD64: u64 = 17;
pub const SYS_PWRITE64: u64 = 18;
pub const SYS_ACCESS: u64 = 21;
pub const SYS_DUP: u64 = 32;
pub const SYS_DUP2: u64 = 33;
pub const SYS_FSYNC: u64 = 74;
pub const SYS_FDATASYNC: u64 = 75;
pub const SYS_FTRUNCATE: u64 = 77;
pub const SYS_GETDENTS64: u64 = 217;
pub const SYS_GETCWD: u64 = 79;
pub const SYS_UNLINK: u64 = 87;
pub const SYS_OPENAT: u64 = 257;
pub const SYS_NEWFSTATAT: u64 = 262;
pub const SYS_UNLINKAT: u64 = 263;
pub const SYS_FACCESSAT: u64 = 269;
pub const SYS_DUP3: u64 = 292;
pub const SYS_PIPE: u64 = 22;
pub const SYS_PIPE2: u64 = 293;
pub const SYS_FCNTL: u64 = 72;
pub const SYS_POLL: u64 = 7;
pub const SYS_PPOLL: u64 = 271;
pub const SYS_PIDFD_SEND_SIGNAL: u64 = 424;
pub const SYS_PIDFD_OPEN: u64 = 434;
pub const SYS_PROCESS_MRELEASE: u64 = 448;
pub const SYS_MMAP: u64 = 9;
pub const SYS_MPROTECT: u64 = 10;
pub const SYS_MUNMAP: u64 = 11;
pub const SYS_BRK: u64 = 12;
pub const SYS_RT_SIGACTION: u64 = 13;
pub const SYS_RT_SIGPROCMASK: u64 = 14;
pub const SYS_RT_SIGRETURN: u64 = 15;
pub const SYS_SIGALTSTACK: u64 = 131;
pub const SYS_RT_SIGSUSPEND: u64 = 130;
pub const SYS_RT_SIGTIMEDWAIT: u64 = 128;
pub const SYS_RT_SIGQUEUEINFO: u64 = 129;
pub const SYS_RT_TGSIGQUEUEINFO: u64 = 297;
pub const SYS_GETITIMER: u64 = 36;
pub const SYS_ALARM: u64 = 37;
pub const SYS_SETITIMER: u64 = 38;
pub const SYS_IOCTL: u64 = 16;
pub const SYS_WRITEV: u64 = 20;
pub const SYS_SCHED_YIELD: u64 = 24;
pub const SYS_MREMAP: u64 = 25;
pub const SYS_MSYNC: u64 = 26;
pub const SYS_MINCORE: u64 = 27;
pub const SYS_MADVISE: u64 = 28;
pub const SYS_PAUSE: u64 = 34;
pub const SYS_NANOSLEEP: u64 = 35;
pub const SYS_GETPID: u64 = 39;
pub const SYS_CLONE: u64 = 56;
pub const SYS_FORK: u64 = 57;
pub const SYS_VFORK: u64 = 58;
pub const SYS_EXECVE: u64 = 59;
pub const SYS_EXIT: u64 = 60;
pub const SYS_WAIT4: u64 = 61;
pub const SYS_KILL: u64 = 62;
pub const SYS_UNAME: u64 = 63;
pub const SYS_GETTIMEOFDAY: u64 = 96;
pub const SYS_GETRLIMIT: u64 = 97;
pub const SYS_RT_SIGPENDING: u64 = 127;
pub const SYS_GETUID: u64 = 102;
pub const SYS_GETGID: u64 = 104;
pub const SYS_GETEUID: u64 = 107;
pub const SYS_GETEGID: u64 = 108;
pub const SYS_GETPPID: u64 = 110;
pub const SYS_MLOCK: u64 = 149;
pub const SYS_MLOCK2: u64 = 325;
pub const SYS_MUNLOCK: u64 = 150;
pub const SYS_MLOCKALL: u64 = 151;
pub const SYS_MUNLOCKALL: u64 = 152;
pub const SYS_ARCH_PRCTL: u64 = 158;
pub const SYS_GETTID: u64 = 186;
pub const SYS_TKILL: u64 = 200;
pub const SYS_TIME: u64 = 201;
pub const SYS_FUTEX: u64 = 202;
pub const SYS_SET_TID_ADDRESS: u64 = 218;
pub const SYS_CLOCK_GETTIME: u64 = 228;
pub const SYS_CLOCK_GETRES: u64 = 229;
pub const SYS_CLOCK_NANOSLEEP: u64 = 230;
pub const SYS_EXIT_GROUP: u64 = 231;
pub const SYS_TGKILL: u64 = 234;
pub const SYS_SETRLIMIT: u64 = 160;
pub const SYS_PRLIMIT64: u64 = 302;

const ARCH_SET_FS: u64 = 0x1002;
const ARCH_GET_FS: u64 = 0x1003;

/// Dispatches a system call; the result goes to the frame's RAX. On the way
/// out, a pending signal that terminates the process is acted on.
extern "C" fn syscall_dispatch(tf: &mut TrapFrame) {
    use crate::syscall::{file, mem, proc as sys};
    // System calls run with interrupts on, preemptible, as page faults do:
    // they sleep for I/O, and the disk completes by interrupt. They are off
    // again from the last line here to `sysretq` (the entry restores the
    // user's stack pointer there).
    x86_64::instructions::interrupts::enable();
    const AT_FDCWD: i64 = -100;
    let (nr, a0, a1, a2, a3, a4, a5) = (tf.rax, tf.rdi, tf.rsi, tf.rdx, tf.r10, tf.r8, tf.r9);
    let mut restored_frame = false;
    let r: i64 = match nr {
        SYS_READ => file::read(a0, a1, a2),
        SYS_WRITE => file::write(a0, a1, a2),
        SYS_WRITEV => file::writev(a0, a1, a2),
        SYS_OPEN => file::openat(AT_FDCWD, a0, a1, a2),
        SYS_OPENAT => file::openat(a0 as i32 as i64, a1, a2, a3),
        SYS_CLOSE => file::close(a0),
        SYS_PREAD64 => file::pread_pwrite(a0, a1, a2, a3, false),
        SYS_PWRITE64 => file::pread_pwrite(a0, a1, a2, a3, true),
        SYS_LSEEK => file::lseek(a0, a1 as i64, a2),
        SYS_FSTAT => file::fstat(a0, a1),
        SYS_STAT | SYS_LSTAT => file::newfstatat(AT_FDCWD, a0, a1, 0),
        SYS_NEWFSTATAT => file::newfstatat(a0 as i32 as i64, a1, a2, a3),
        SYS_ACCESS => file::faccessat(AT_FDCWD, a0, a1),
        SYS_FACCESSAT => file::faccessat(a0 as i32 as i64, a1, a2),
        SYS_FTRUNCATE => file::ftruncate(a0, a1 as i64),
        SYS_UNLINK => file::unlinkat(AT_FDCWD, a0, 0),
        SYS_UNLINKAT => file::unlinkat(a0 as i32 as i64, a1, a2),
        SYS_FSYNC | SYS_FDATASYNC => file::fsync(a0),
        SYS_GETDENTS64 => file::getdents64(a0, a1, a2),
        SYS_DUP => file::dup(a0, None, 0),
        SYS_DUP2 => file::dup(a0, Some(a1), 0),
        SYS_PIPE => fd::pipe2(a0, 0),
        SYS_PIPE2 => fd::pipe2(a0, a1),
        SYS_FCNTL => fd::fcntl(a0, a1, a2),
        SYS_POLL => fd::poll(a0, a1, a2),
        SYS_PPOLL => fd::ppoll(a0, a1, a2, a3, a4),
        SYS_PIDFD_OPEN => fd::pidfd_open(a0, a1),
        SYS_PIDFD_SEND_SIGNAL => fd::pidfd_send_signal(a0, a1, a2, a3),
        SYS_PROCESS_MRELEASE => fd::process_mrelease(a0, a1),
        SYS_DUP3 if a0 == a1 => -EINVAL,
        SYS_DUP3 => file::dup(a0, Some(a1), a2),
        SYS_GETCWD => file::getcwd(a0, a1),
        SYS_BRK => mem::brk(a0),
        SYS_MMAP => mem::mmap(a0, a1, a2, a3, a4, a5),
        SYS_MUNMAP => mem::munmap(a0, a1),
        SYS_MPROTECT => mem::mprotect(a0, a1, a2),
        SYS_MADVISE => mem::madvise(a0, a1, a2),
        SYS_MINCORE => mem::mincore(a0, a1, a2),
        SYS_MLOCK => mem::mlock(a0, a1),
        SYS_MLOCK2 => mem::mlock2(a0, a1, a2),
        SYS_MUNLOCK => mem::munlock(a0, a1),
        SYS_MLOCKALL => mem::mlockall(a0),
        SYS_MUNLOCKALL => mem::munlockall(),
        SYS_MREMAP => mem::mremap(a0, a1, a2, a3, a4),
        SYS_MSYNC => mem::msync(a0, a1, a2),
        // No terminals yet: every descriptor is "not a tty" (musl then
        // buffers stdout fully).
        SYS_IOCTL => -ENOTTY,
        SYS_RT_SIGACTION => sys::rt_sigaction(a0, a1, a2, a3),
        SYS_RT_SIGPROCMASK => sys::rt_sigprocmask(a0, a1, a2, a3),
        SYS_RT_SIGPENDING => sys::rt_sigpending(a0, a1),
        SYS_RT_SIGRETURN => {
            // Every register is the frame's, RCX and R11 too: the return
            // must be by iretq (sysretq would clobber those two).
            restored_frame = true;
            crate::proc::sigreturn(tf);
            tf.rax as i64
        }
        SYS_SIGALTSTACK => sys::sigaltstack(tf.rsp, a0, a1),
        SYS_RT_SIGSUSPEND => sys::rt_sigsuspend(a0, a1),
        SYS_RT_SIGTIMEDWAIT => sys::rt_sigtimedwait(a0, a1, a2, a3),
        SYS_RT_SIGQUEUEINFO => sys::rt_sigqueueinfo(a0 as i32 as i64, None, a1, a2),
        SYS_RT_TGSIGQUEUEINFO => sys::rt_sigqueueinfo(a0 as i32 as i64, Some(a1 as i32 as i64), a2, a3),
        SYS_GETITIMER => sys::getitimer(a0, a1),
        SYS_SETITIMER => sys::setitimer(a0, a1, a2),
        SYS_ALARM => sys::alarm(a0),
        SYS_KILL => sys::kill(a0 as i32 as i64, a1),
        SYS_TKILL => thread::tkill(None, a0 as i32 as i64, a1),
        SYS_TGKILL => thread::tkill(Some(a0 as i32 as i64), a1 as i32 as i64, a2),
        SYS_FUTEX => thread::futex(a0, a1, a2, a3, a4, a5),
        SYS_ARCH_PRCTL => sys_arch_prctl(a0, a1),
        SYS_SET_TID_ADDRESS => thread::set_tid_address(a0),
        SYS_GETTID => thread::gettid(),
        SYS_GETPID => crate::proc::current_pid() as i64,
        SYS_GETPPID => crate::proc::current().map_or(0, |p| p.ppid.load(core::sync::atomic::Ordering::SeqCst) as i64),
        SYS_GETUID | SYS_GETGID | SYS_GETEUID | SYS_GETEGID => 0,
        SYS_UNAME => sys::uname(a0),
        SYS_CLOCK_GETTIME => sys::clock_gettime(a0, a1),
        SYS_CLOCK_GETRES => sys::clock_getres(a0, a1),
        SYS_GETTIMEOFDAY => sys::gettimeofday(a0, a1),
        SYS_TIME => sys::time(a0),
        SYS_PAUSE => sys::pause(),
        SYS_NANOSLEEP => sys::nanosleep(a0, a1),
        SYS_CLOCK_NANOSLEEP => sys::clock_nanosleep(a0, a1, a2, a3),
        SYS_SCHED_YIELD => sys::sched_yield(),
        SYS_GETRLIMIT => sys::getrlimit(a0, a1),
        SYS_SETRLIMIT => sys::setrlimit(a0, a1),
        SYS_PRLIMIT64 => sys::prlimit64(a0, a1, a2, a3),
        SYS_FORK => sys_fork(tf),
        SYS_CLONE => thread::clone(tf, a0, a1, a2, a3, a4),
        SYS_VFORK => thread::clone(tf, 0x4100 | crate::proc::SIGCHLD as u64, 0, 0, 0, 0),
        SYS_EXECVE => sys::execve(tf, a0, a1, a2),
        SYS_WAIT4 => sys::wait4(a0 as i32 as i64, a1, a2, a3),
        SYS_EXIT => crate::proc::exit_thread(crate::proc::Status::Exited(a0 as i32)),
        SYS_EXIT_GROUP => crate::proc::exit_current(crate::proc::Status::Exited(a0 as i32)),
        _ => {
            not_implemented(nr);
            -ENOSYS
        }
    };
    // A call a signal interrupted starts again after the handler when the
    // handler asks (SA_RESTART) and the call is one Linux restarts: the
    // return goes back to the `syscall` instruction with the number in RAX.
    if r == -EINTR && RESTARTABLE.contains(&nr) && crate::proc::restart_after_handler() {
        tf.rax = nr;
        tf.rip -= 2;
    } else {
        tf.rax = r as u64;
    }
    crate::proc::check_signals(tf);
    if nr == SYS_RT_SIGSUSPEND {
        crate::proc::restore_suspended_mask();
    }
    x86_64::instructions::interrupts::disable();
    // From here to the return, interrupts are off: no other thread can
    // return through the entry meanwhile.
    if restored_frame {
        percpu::this().force_iret.store(1, Ordering::Relaxed);
    }
}

/// The calls a handler with SA_RESTART restarts (Linux's ERESTARTSYS
/// ones); sleeps, pause and sigsuspend end with EINTR whatever the flag.
const RESTARTABLE: [u64; 4] = [SYS_READ, SYS_WRITE, SYS_WRITEV, SYS_WAIT4];

/// Logs an unimplemented system call, once per number.
fn not_implemented(nr: u64) {
    // One bit per number below 512; the last bit stands for every larger
    // number (none exists on x86_64 Linux).
    static SEEN: [AtomicU64; 9] = [const { AtomicU64::new(0) }; 9];
    let (word, bit) = if nr < 512 { ((nr / 64) as usize, 1u64 << (nr % 64)) } else { (8, 1) };
    if SEEN[word].fetch_or(bit, Ordering::Relaxed) & bit != 0 {
        return;
    }
    log::warn!("pid {}: system call {nr} is not implemented (ENOSYS)", crate::proc::current_pid());
}

fn sys_fork(tf: &TrapFrame) -> i64 {
    match crate::proc::fork(tf) {
        Ok(pid) => pid as i64,
        Err(_) => -crate::syscall::errno::EAGAIN,
    }
}

/// `arch_prctl`: set or get the FS base (thread-local storage).
fn sys_arch_prctl(code: u64, addr: u64) -> i64 {
    match code {
        ARCH_SET_FS => {
            if addr >= USER_END {
                return -EPERM;
            }
            crate::kern::sched::set_fs_base(addr);
            0
        }
        ARCH_GET_FS => {
            let v = x86_64::registers::model_specific::FsBase::read().as_u64();
            match uaccess::copy_to_user(addr, &v.to_le_bytes()) {
                Ok(()) => 0,
                Err(e) => -e,
            }
        }
        _ => -EINVAL,
    }
}
