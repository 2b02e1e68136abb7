//! Running a signal handler: the frame it runs on, as Linux lays it out on
//! x86_64 (`struct rt_sigframe`: the return address, a `ucontext_t`, a
//! `siginfo_t`, and the FPU/SSE state below them), and `rt_sigreturn`,
//! which restores what the frame saved.
//!
//! The frame goes on the user stack below the red zone, or at the top of
//! the alternate stack (`sigaltstack`) for a handler installed with
//! `SA_ONSTACK` when the thread is not on it already. The handler starts
//! with the signal number, the `siginfo_t` and the `ucontext_t` as its
//! arguments and returns into the C library's restorer (`SA_RESTORER`,
//! which both C libraries always give), which makes the `rt_sigreturn`.
//! A frame that cannot be written, and a frame handed back that cannot be
//! read, kill the process with SIGSEGV, as on Linux; nothing a program
//! puts in a frame reaches the kernel unchecked (the segment selectors and
//! the privileged flags are the kernel's own, the instruction pointer must
//! be a user address, the MXCSR's reserved bits are cleared).

use crate::arch::pmap::USER_END;
use crate::arch::trapframe::TrapFrame;
use crate::syscall::uaccess::{copy_from_user, copy_to_user};

/// A `struct sigaction` as the kernel sees it (`rt_sigaction`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SigAction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

pub const SA_ONSTACK: u64 = 0x0800_0000;
pub const SA_RESTART: u64 = 0x1000_0000;
pub const SA_RESTORER: u64 = 0x0400_0000;
pub const SA_NODEFER: u64 = 0x4000_0000;
pub const SA_RESETHAND: u64 = 0x8000_0000;

/// `sigaltstack`'s flags.
pub const SS_ONSTACK: u32 = 1;
pub const SS_DISABLE: u32 = 2;

/// `si_code` values.
pub const SI_USER: i32 = 0;
pub const SI_KERNEL: i32 = 0x80;
pub const SI_TKILL: i32 = -6;
pub const CLD_EXITED: i32 = 1;
pub const CLD_KILLED: i32 = 2;
pub const SEGV_MAPERR: i32 = 1;
pub const SEGV_ACCERR: i32 = 2;
pub const BUS_ADRERR: i32 = 2;
pub const BUS_OBJERR: i32 = 3;

/// What a handler learns of its signal: the start of `siginfo_t`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SigInfo {
    pub code: i32,
    /// `si_addr` for a fault; `si_pid` and `si_uid` (low and high half) for
    /// a signal sent by a process or a child's exit.
    pub value: u64,
    /// The next word: `si_status` for a child's exit.
    pub value2: u64,
    /// The fault's address, error code and vector, for the `sigcontext`
    /// (`cr2`, `err`, `trapno`).
    pub fault: Option<(u64, u64, u64)>,
}

impl SigInfo {
    /// The `siginfo_t` of signal `sig` with this info: the number, the
    /// code, and the two words that follow.
    pub fn bytes(&self, sig: u8) -> [u8; SIGINFO_SIZE] {
        let mut b = [0u8; SIGINFO_SIZE];
        b[..4].copy_from_slice(&(sig as i32).to_le_bytes());
        b[8..12].copy_from_slice(&self.code.to_le_bytes());
        put(&mut b, 16, self.value);
        put(&mut b, 24, self.value2);
        b
    }

    /// The info a program hands in (`rt_sigqueueinfo`): its code and the
    /// two words after it.
    pub fn from_bytes(b: &[u8; SIGINFO_SIZE]) -> SigInfo {
        let code = i32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        SigInfo { code, value: get(b, 16), value2: get(b, 24), fault: None }
    }
}

/// An alternate signal stack (`sigaltstack`): where, how large, and
/// whether it is disabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AltStack {
    pub sp: u64,
    pub size: u64,
    pub disabled: bool,
}

impl Default for AltStack {
    fn default() -> AltStack {
        AltStack { sp: 0, size: 0, disabled: true }
    }
}

impl AltStack {
    /// Whether `rsp` is on it.
    pub fn holds(&self, rsp: u64) -> bool {
        !self.disabled && rsp.wrapping_sub(self.sp) < self.size
    }

    /// `ss_flags` as a program at `rsp` sees them.
    pub fn flags(&self, rsp: u64) -> u32 {
        if self.disabled {
            SS_DISABLE
        } else if self.holds(rsp) {
            SS_ONSTACK
        } else {
            0
        }
    }
}

// The layout (bytes): `rt_sigframe` is the return address, then the
// `ucontext_t`, then the `siginfo_t`.
const UC: usize = 8;
const UC_SIZE: usize = 304;
const INFO: usize = UC + UC_SIZE;
/// Bytes of a `siginfo_t`.
pub const SIGINFO_SIZE: usize = 128;
const FRAME_SIZE: usize = INFO + SIGINFO_SIZE;
/// In the `ucontext_t`: flags, link, `stack_t`, `sigcontext`, mask.
const UC_STACK: usize = 16;
const UC_MCONTEXT: usize = 40;
const UC_SIGMASK: usize = 296;
/// `uc_flags`: the `sigcontext` saves SS, and `rt_sigreturn` restores it.
const UC_SIGCONTEXT_SS: u64 = 0x2;
const UC_STRICT_RESTORE_SS: u64 = 0x4;
/// `fxsave`'s area.
const FP_SIZE: usize = 512;
/// Below the interrupted stack pointer, the red zone the ABI lets leaf
/// functions use.
const RED_ZONE: u64 = 128;

/// The flags a program may change (Linux's FIX_EFLAGS): AC, OF, DF, TF, SF,
/// ZF, AF, PF, CF and RF.
const USER_FLAGS: u64 = 0x4_0000 | 0x800 | 0x400 | 0x100 | 0x80 | 0x40 | 0x10 | 0x4 | 0x1 | 0x1_0000;

#[repr(C, align(16))]
pub(super) struct FxArea([u8; FP_SIZE]);

impl FxArea {
    /// The running thread's x87/SSE state (live in the CPU: the kernel
    /// uses none of it).
    fn capture() -> FxArea {
        let mut fx = FxArea([0; FP_SIZE]);
        // SAFETY: a 16-aligned area of 512 bytes; fxsave only reads the
        // CPU's state.
        unsafe { core::arch::x86_64::_fxsave64(fx.0.as_mut_ptr()) };
        fx
    }
}

/// A thread's x87/SSE state carried to a new thread or a fork child, which
/// start with their parent's (rounding modes, exception masks), as on
/// Linux. Kept unaligned: it travels inside a closure, whose place is not
/// known to be 16-aligned; fxsave and fxrstor work on an aligned spot of
/// a buffer on the stack.
pub(super) struct FpuState([u8; FP_SIZE]);

/// Runs `f` on a 16-aligned 512-byte area (on the stack).
fn with_aligned_area<R>(f: impl FnOnce(*mut u8) -> R) -> R {
    let mut buf = [0u8; FP_SIZE + 16];
    let p = buf.as_mut_ptr();
    // At most 15 bytes in, with 512 after it.
    f(p.wrapping_add(p.align_offset(16)))
}

impl FpuState {
    /// The running thread's state.
    pub(super) fn capture() -> FpuState {
        let mut s = FpuState([0; FP_SIZE]);
        with_aligned_area(|at| {
            // SAFETY: `at` is a 16-aligned area of 512 bytes; fxsave only
            // reads the CPU's state, and the copy reads what it wrote.
            unsafe {
                core::arch::x86_64::_fxsave64(at);
                core::ptr::copy_nonoverlapping(at, s.0.as_mut_ptr(), FP_SIZE);
            }
        });
        s
    }

    /// Makes it the running thread's state.
    pub(super) fn restore(&self) {
        with_aligned_area(|at| {
            // SAFETY: `at` is a 16-aligned area of 512 bytes, filled with a
            // state fxsave wrote on this CPU (valid for fxrstor).
            unsafe {
                core::ptr::copy_nonoverlapping(self.0.as_ptr(), at, FP_SIZE);
                core::arch::x86_64::_fxrstor64(at);
            }
        });
    }
}

/// The MXCSR bits this CPU has: the mask at 28 of a state it saved (0xFFBF
/// when it gives none), read once. (A; Relaxed: every reader computes the
/// same value, a racing one only computes it again.)
fn mxcsr_mask() -> u32 {
    static MASK: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);
    let m = MASK.load(core::sync::atomic::Ordering::Relaxed);
    if m != 0 {
        return m;
    }
    let mut own = FxArea([0; FP_SIZE]);
    // SAFETY: a 16-aligned area of 512 bytes; fxsave only reads the CPU's
    // state.
    unsafe { core::arch::x86_64::_fxsave64(own.0.as_mut_ptr()) };
    let m = match u32::from_le_bytes([own.0[28], own.0[29], own.0[30], own.0[31]]) {
        0 => 0xFFBF,
        m => m,
    };
    MASK.store(m, core::sync::atomic::Ordering::Relaxed);
    m
}

/// The general registers in `sigcontext` order (r8 … r15, rdi, rsi, rbp,
/// rbx, rdx, rax, rcx, rsp, rip, eflags).
fn gregs(tf: &TrapFrame) -> [u64; 18] {
    [
        tf.r8, tf.r9, tf.r10, tf.r11, tf.r12, tf.r13, tf.r14, tf.r15, tf.rdi, tf.rsi, tf.rbp, tf.rbx, tf.rdx, tf.rax, tf.rcx,
        tf.rsp, tf.rip, tf.rflags,
    ]
}

fn put(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Sets up `tf` to run `act`'s handler for `sig`: writes the frame (with
/// `mask`, the mask to restore, and `alt`, the alternate stack) on the user
/// stack and points the registers at the handler. Err if the frame cannot
/// be written (the caller kills the process with SIGSEGV).
pub(super) fn push_frame(
    tf: &mut TrapFrame,
    sig: u8,
    act: &SigAction,
    info: &SigInfo,
    mask: u64,
    alt: &AltStack,
) -> Result<(), ()> {
    if act.flags & SA_RESTORER == 0 {
        // x86_64 has no restorer on the stack: Linux refuses the frame.
        return Err(());
    }
    let mut sp = if act.flags & SA_ONSTACK != 0 && !alt.disabled && !alt.holds(tf.rsp) {
        alt.sp.wrapping_add(alt.size)
    } else {
        tf.rsp.wrapping_sub(RED_ZONE)
    };
    sp = sp.wrapping_sub(FP_SIZE as u64) & !63;
    let fp = sp;
    let frame = (sp.wrapping_sub(FRAME_SIZE as u64) & !15).wrapping_sub(8);
    if !(4096..USER_END).contains(&frame) {
        return Err(());
    }

    // The FPU/SSE state, live in the CPU while the kernel runs (it uses
    // none of it).
    let fx = FxArea::capture();
    copy_to_user(fp, &fx.0).map_err(|_| ())?;

    let mut f = [0u8; FRAME_SIZE];
    put(&mut f, 0, act.restorer);
    put(&mut f, UC, UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS);
    let (stack, mcontext) = (UC + UC_STACK, UC + UC_MCONTEXT);
    put(&mut f, stack, alt.sp);
    f[stack + 8..stack + 12].copy_from_slice(&alt.flags(tf.rsp).to_le_bytes());
    put(&mut f, stack + 16, alt.size);
    for (i, r) in gregs(tf).into_iter().enumerate() {
        put(&mut f, mcontext + i * 8, r);
    }
    // cs, gs, fs, ss (16 bits each).
    let selectors = (tf.cs & 0xffff) | ((tf.ss & 0xffff) << 48);
    put(&mut f, mcontext + 144, selectors);
    let (cr2, err, trapno) = info.fault.unwrap_or((0, 0, 0));
    put(&mut f, mcontext + 152, err);
    put(&mut f, mcontext + 160, trapno);
    put(&mut f, mcontext + 168, mask);
    put(&mut f, mcontext + 176, cr2);
    put(&mut f, mcontext + 184, fp);
    put(&mut f, UC + UC_SIGMASK, mask);
    f[INFO..INFO + SIGINFO_SIZE].copy_from_slice(&info.bytes(sig));
    copy_to_user(frame, &f).map_err(|_| ())?;

    // The handler starts with a clean FPU, as on Linux: an x87 exception
    // left pending (the one that raised SIGFPE, say) must not fire again
    // at its first x87 instruction. rt_sigreturn restores the saved state.
    let default_mxcsr: u32 = 0x1f80;
    // SAFETY: fninit resets the x87 state and ldmxcsr loads the default
    // SSE control word; the program's state is in its frame.
    unsafe { core::arch::asm!("fninit", "ldmxcsr [{}]", in(reg) &default_mxcsr, options(nostack)) };

    tf.rdi = sig as u64;
    tf.rsi = frame + INFO as u64;
    tf.rdx = frame + UC as u64;
    tf.rax = 0;
    tf.rsp = frame;
    tf.rip = act.handler;
    // The handler starts with the direction, trap and resume flags clear.
    tf.rflags &= !(0x400 | 0x100 | 0x1_0000);
    Ok(())
}

/// `rt_sigreturn`: restores the registers and the FPU/SSE state from the
/// frame, and returns its signal mask (as saved: the caller keeps SIGKILL
/// and SIGSTOP out) and alternate stack, from the frame the handler returned from
/// (its `ucontext_t` is just above the stack pointer). Returns the mask
/// and the alternate stack to set, or Err if the frame cannot be read or
/// holds what no user context can (the caller kills with SIGSEGV). The
/// caller returns to user mode by `iretq`: every register is the frame's.
pub(super) fn pop_frame(tf: &mut TrapFrame) -> Result<(u64, AltStack), ()> {
    let uc = tf.rsp.wrapping_sub(8).wrapping_add(UC as u64);
    let mut u = [0u8; UC_SIZE];
    copy_from_user(&mut u, uc).map_err(|_| ())?;
    let g: [u64; 18] = core::array::from_fn(|i| get(&u, UC_MCONTEXT + i * 8));
    let (rip, rsp) = (g[16], g[15]);
    if rip >= USER_END || rsp >= USER_END {
        return Err(());
    }
    let fp = get(&u, UC_MCONTEXT + 184);
    if fp != 0 {
        let mut fx = FxArea([0; FP_SIZE]);
        copy_from_user(&mut fx.0, fp).map_err(|_| ())?;
        // MXCSR (at 24): only the bits the CPU has, or fxrstor faults.
        let mxcsr = u32::from_le_bytes([fx.0[24], fx.0[25], fx.0[26], fx.0[27]]) & mxcsr_mask();
        fx.0[24..28].copy_from_slice(&mxcsr.to_le_bytes());
        // SAFETY: a 16-aligned area of 512 bytes whose MXCSR has no
        // reserved bit set: fxrstor loads it and cannot fault.
        unsafe { core::arch::x86_64::_fxrstor64(fx.0.as_ptr()) };
    }
    [tf.r8, tf.r9, tf.r10, tf.r11, tf.r12, tf.r13, tf.r14, tf.r15, tf.rdi, tf.rsi, tf.rbp, tf.rbx, tf.rdx, tf.rax, tf.rcx] =
        core::array::from_fn(|i| g[i]);
    tf.rsp = rsp;
    tf.rip = rip;
    tf.rflags = (tf.rflags & !USER_FLAGS) | (g[17] & USER_FLAGS) | 0x200;
    let mask = get(&u, UC_SIGMASK);
    let stack_flags = u32::from_le_bytes([u[UC_STACK + 8], u[UC_STACK + 9], u[UC_STACK + 10], u[UC_STACK + 11]]);
    let alt = AltStack { sp: get(&u, UC_STACK), size: get(&u, UC_STACK + 16), disabled: stack_flags & SS_DISABLE != 0 };
    Ok((mask, alt))
}
