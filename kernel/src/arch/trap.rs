//! Traps: the IDT, the assembly entry stubs and the dispatcher.
//!
//! Every vector the kernel handles enters through a small stub that makes the
//! stack look the same whatever the CPU pushed: it pushes a zero where the CPU
//! pushes no error code, then the vector number, and jumps to `trap_common`,
//! which saves the general registers and calls [`trap_dispatch`] with a pointer
//! to the resulting [`TrapFrame`]. Returning from `trap_dispatch` restores the
//! (possibly edited) frame and `iretq`s.
//!
//! ```text
//!   high  ss, rsp, rflags, cs, rip     pushed by the CPU
//!         error code                   by the CPU, or 0 by the stub
//!         vector                       by the stub
//!         rax rbx rcx rdx rsi rdi rbp
//!   low   r8 .. r15                    by trap_common   <- &TrapFrame
//! ```
//!
//! The x86-interrupt calling convention was rejected: it hides the general
//! registers, which the fault report must print, and user mode will need one
//! frame layout for traps, interrupts and system calls alike.

use core::arch::naked_asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::tables::lidt;
use x86_64::registers::control::{Cr2, Cr3};
use x86_64::structures::DescriptorTablePointer;

use super::gdt;

/// The register state of an interrupted context, as the entry stubs leave it.
#[repr(C)]
#[derive(Clone, Debug, Default)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// trap_common depends on this size to keep the stack 16-byte aligned at the call.
const _: () = assert!(core::mem::size_of::<TrapFrame>() == 22 * 8);

pub const VEC_DEBUG: u8 = 1;
pub const VEC_NMI: u8 = 2;
pub const VEC_BREAKPOINT: u8 = 3;
pub const VEC_DOUBLE_FAULT: u8 = 8;
pub const VEC_PAGE_FAULT: u8 = 14;
pub const VEC_TIMER: u8 = 32;
/// Device interrupts routed through the I/O APIC (`crate::dev`).
pub const VEC_DEVICE: u8 = 48;
pub const VEC_SPURIOUS: u8 = 255;

/// Number of breakpoint (#BP) exceptions taken and returned from.
pub static BREAKPOINTS: AtomicU64 = AtomicU64::new(0);

/// Where the trap frame of the #DB raised by [`break_once_at`] was pushed
/// (0: not raised since it was armed). (A)
pub static BREAK_ONCE_FRAME: AtomicU64 = AtomicU64::new(0);

/// Arms a one-shot hardware breakpoint (DR0) on the execution of `addr` in
/// kernel mode: the #DB it raises records where its trap frame went (in
/// [`BREAK_ONCE_FRAME`]), disarms it, and execution goes on at `addr`. For
/// tests that need a trap at one exact instruction, which the timer cannot
/// be made to hit. The breakpoint is the CPU's, not a thread's: arm it with
/// interrupts off, just before the code that is to hit it.
pub fn break_once_at(addr: u64) {
    BREAK_ONCE_PREEMPT.store(false, Ordering::SeqCst);
    arm_break_once(addr);
}

/// Whether the #DB of [`break_once_preempting`] is to preempt. (A)
static BREAK_ONCE_PREEMPT: AtomicBool = AtomicBool::new(false);
/// The thread that hit the breakpoint, and the RFLAGS it had there. (A)
pub static BREAK_ONCE_THREAD: AtomicU64 = AtomicU64::new(0);
pub static BREAK_ONCE_RFLAGS: AtomicU64 = AtomicU64::new(0);

/// As [`break_once_at`], and the #DB then does what a timer interrupt at
/// `addr` whose time slice is over would do: preempt the thread, if a timer
/// interrupt could come there (interrupts on) and the scheduler allows it.
/// For tests of what a preemption at one exact instruction does.
pub fn break_once_preempting(addr: u64) {
    BREAK_ONCE_PREEMPT.store(true, Ordering::SeqCst);
    arm_break_once(addr);
}

fn arm_break_once(addr: u64) {
    BREAK_ONCE_FRAME.store(0, Ordering::SeqCst);
    // SAFETY: DR0 and DR7 are writable at CPL 0. DR7 = L0 with R/W0 = LEN0
    // = 0 makes DR0 an instruction breakpoint, local to this context; the
    // #DB handler (`one_shot_breakpoint`) clears DR7 again.
    unsafe {
        core::arch::asm!("mov dr0, {}", in(reg) addr, options(nostack));
        core::arch::asm!("mov dr7, {}", in(reg) 1u64, options(nostack));
    }
}

/// The #DB of [`break_once_at`], if `tf` is one (DR6.B0 in kernel mode):
/// disarms the breakpoint, records the frame and returns true.
fn one_shot_breakpoint(tf: &TrapFrame) -> bool {
    let dr6: u64;
    // SAFETY: reading DR6 at CPL 0 has no side effect.
    unsafe { core::arch::asm!("mov {}, dr6", out(reg) dr6, options(nostack)) };
    if tf.cs & 3 != 0 || dr6 & 1 == 0 {
        return false;
    }
    // SAFETY: clearing DR7 disables every breakpoint; DR6's status bits
    // are cleared for the next #DB (its reserved bits read as 1).
    unsafe {
        core::arch::asm!("mov dr7, {}", in(reg) 0u64, options(nostack));
        core::arch::asm!("mov dr6, {}", in(reg) 0xFFFF_0FF0u64, options(nostack));
    }
    BREAK_ONCE_FRAME.store(tf as *const TrapFrame as u64, Ordering::SeqCst);
    BREAK_ONCE_THREAD.store(crate::kern::sched::current(), Ordering::SeqCst);
    BREAK_ONCE_RFLAGS.store(tf.rflags, Ordering::SeqCst);
    const IF: u64 = 1 << 9;
    if BREAK_ONCE_PREEMPT.swap(false, Ordering::SeqCst) && tf.rflags & IF != 0 {
        crate::kern::sched::preempt_now();
    }
    true
}

/// Names of the architectural exceptions, by vector.
pub fn exception_name(vector: u8) -> (&'static str, &'static str) {
    match vector {
        0 => ("#DE", "divide error"),
        1 => ("#DB", "debug"),
        2 => ("NMI", "non-maskable interrupt"),
        3 => ("#BP", "breakpoint"),
        4 => ("#OF", "overflow"),
        5 => ("#BR", "bound range exceeded"),
        6 => ("#UD", "invalid opcode"),
        7 => ("#NM", "device not available"),
        8 => ("#DF", "double fault"),
        9 => ("", "coprocessor segment overrun"),
        10 => ("#TS", "invalid TSS"),
        11 => ("#NP", "segment not present"),
        12 => ("#SS", "stack-segment fault"),
        13 => ("#GP", "general protection fault"),
        14 => ("#PF", "page fault"),
        16 => ("#MF", "x87 floating-point error"),
        17 => ("#AC", "alignment check"),
        18 => ("#MC", "machine check"),
        19 => ("#XM", "SIMD floating-point exception"),
        20 => ("#VE", "virtualization exception"),
        21 => ("#CP", "control protection exception"),
        28 => ("#HV", "hypervisor injection exception"),
        29 => ("#VC", "VMM communication exception"),
        30 => ("#SX", "security exception"),
        32..=255 => ("", "interrupt"),
        _ => ("", "reserved exception"),
    }
}

macro_rules! stub {
    // The CPU pushed an error code: only the vector is missing.
    (err $name:ident $vec:literal) => {
        #[unsafe(naked)]
        unsafe extern "C" fn $name() {
            naked_asm!("push {v}", "jmp {common}", v = const $vec, common = sym trap_common)
        }
    };
    // The page fault: see `pf_entry`.
    (pf $name:ident $vec:literal) => {
        #[unsafe(naked)]
        unsafe extern "C" fn $name() {
            naked_asm!("jmp {entry}", entry = sym pf_entry)
        }
    };
    // No error code: push a zero in its place.
    (noerr $name:ident $vec:literal) => {
        #[unsafe(naked)]
        unsafe extern "C" fn $name() {
            naked_asm!("push 0", "push {v}", "jmp {common}", v = const $vec, common = sym trap_common)
        }
    };
}

macro_rules! stubs {
    ($($kind:ident $vec:literal $name:ident),* $(,)?) => {
        $( stub!($kind $name $vec); )*
        /// Entry stub of each handled vector.
        static STUBS: &[(u8, unsafe extern "C" fn())] = &[$(($vec, $name)),*];
    };
}

// Error codes: #DF 8, #TS 10, #NP 11, #SS 12, #GP 13, #PF 14, #AC 17, #CP 21,
// #VC 29, #SX 30 (Intel SDM vol. 3, table 6-1).
stubs! {
    noerr 0 vec0, noerr 1 vec1, noerr 2 vec2, noerr 3 vec3, noerr 4 vec4, noerr 5 vec5,
    noerr 6 vec6, noerr 7 vec7, err 8 vec8, noerr 9 vec9, err 10 vec10, err 11 vec11,
    err 12 vec12, err 13 vec13, pf 14 vec14, noerr 15 vec15, noerr 16 vec16,
    err 17 vec17, noerr 18 vec18, noerr 19 vec19, noerr 20 vec20, err 21 vec21,
    noerr 22 vec22, noerr 23 vec23, noerr 24 vec24, noerr 25 vec25, noerr 26 vec26,
    noerr 27 vec27, noerr 28 vec28, err 29 vec29, err 30 vec30, noerr 31 vec31,
    noerr 32 vec32, noerr 48 vec48, noerr 255 vec255,
}

/// The page-fault entry. The CPU delivers #PF on its own IST stack, so that
/// a kernel stack overflow (a fault on the guard page, with no stack left to
/// push a frame on) is still reported. Every other fault moves its frame to
/// the interrupted stack and is handled there, where the handler may sleep
/// (waiting for a busy page or for I/O) like any thread.
///
/// A fault counts as a stack overflow when CR2 lies from 8 KiB below the
/// interrupted RSP to 64 bytes above it: an access just below the stack
/// pointer, as pushes and new frames make.
#[unsafe(naked)]
unsafe extern "C" fn pf_entry() {
    naked_asm!(
        // IST stack: [rsp] error, rip, cs, rflags, rsp (+32), ss.
        "push rax",
        "push rcx",
        // From user mode: handle it on the thread's kernel stack.
        "test qword ptr [rsp + 32], 3",
        "jz 3f",
        "mov rcx, [rip + {kstack}]",
        "jmp 4f",
        "3:",
        "mov rax, cr2",
        "mov rcx, [rsp + 48]",      // the interrupted RSP
        "sub rcx, rax",
        "add rcx, 64",
        "cmp rcx, 8192 + 64",
        "jb 2f",                    // looks like an overflow: stay on the IST
        // New frame base on the interrupted stack, 16-byte aligned as the
        // CPU would have made it.
        "mov rcx, [rsp + 48]",
        "4:",
        "and rcx, -16",
        "sub rcx, 48",
        "mov rax, [rsp + 16]", "mov [rcx], rax",        // error code
        "mov rax, [rsp + 24]", "mov [rcx + 8], rax",    // rip
        "mov rax, [rsp + 32]", "mov [rcx + 16], rax",   // cs
        "mov rax, [rsp + 40]", "mov [rcx + 24], rax",   // rflags
        "mov rax, [rsp + 48]", "mov [rcx + 32], rax",   // rsp
        "mov rax, [rsp + 56]", "mov [rcx + 40], rax",   // ss
        "mov rax, [rsp]", "mov [rcx - 16], rax",        // saved rcx, popped first
        "mov rax, [rsp + 8]", "mov [rcx - 8], rax",     // saved rax
        "lea rsp, [rcx - 16]",
        "2:",
        "pop rcx",
        "pop rax",
        "push 14",
        "jmp {common}",
        common = sym trap_common,
        kstack = sym crate::syscall::KERNEL_STACK,
    )
}

/// Saves the general registers, calls [`trap_dispatch`], restores, returns.
///
/// On entry the stack holds the hardware frame, an error code and the vector
/// (56 bytes above a 16-byte aligned boundary: the CPU aligns RSP before it
/// pushes in long mode). Fifteen pushes make 176 bytes, so RSP is aligned again
/// at the `call`, as the System V ABI requires.
#[unsafe(naked)]
unsafe extern "C" fn trap_common() {
    naked_asm!(
        "push rax", "push rbx", "push rcx", "push rdx", "push rsi", "push rdi", "push rbp",
        "push r8", "push r9", "push r10", "push r11", "push r12", "push r13", "push r14",
        "push r15",
        "mov rdi, rsp",
        "cld",
        "call {dispatch}",
        "jmp {ret}",
        dispatch = sym trap_dispatch,
        ret = sym trap_return,
    )
}

/// Restores the registers of the `TrapFrame` at RSP and returns from the
/// trap with `iretq`: the end of `trap_common`, and how a new process
/// thread first enters user mode with a frame it was given
/// (`process::resume_user`).
#[unsafe(naked)]
pub unsafe extern "C" fn trap_return() -> ! {
    naked_asm!(
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop r11",
        "pop r10",
        "pop r9",
        "pop r8",
        "pop rbp",
        "pop rdi",
        "pop rsi",
        "pop rdx",
        "pop rcx",
        "pop rbx",
        "pop rax",
        "add rsp, 16",
        "iretq",
    )
}

/// One interrupt-gate descriptor of the IDT.
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

const _: () = assert!(core::mem::size_of::<Gate>() == 16);

impl Gate {
    const MISSING: Gate = Gate { offset_low: 0, selector: 0, ist: 0, attributes: 0, offset_mid: 0, offset_high: 0, reserved: 0 };

    /// A present 64-bit interrupt gate (interrupts stay disabled in the handler).
    fn interrupt(handler: u64, selector: u16, ist: u16, dpl: u8) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector,
            ist: ist as u8,
            attributes: 0x80 | (dpl << 5) | 0xE,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static IDT: Once<Idt> = Once::new();

/// Builds and loads the IDT. Needs the GDT (for the code selector and the IST).
pub fn init() {
    let idt = IDT.call_once(|| {
        let cs = gdt::kernel_code_selector();
        let mut gates = [Gate::MISSING; 256];
        for &(vector, stub) in STUBS {
            let ist = match vector {
                VEC_DOUBLE_FAULT => gdt::IST_DOUBLE_FAULT,
                2 => gdt::IST_NMI,
                VEC_PAGE_FAULT => gdt::IST_PAGE_FAULT,
                18 => gdt::IST_MACHINE_CHECK,
                _ => 0,
            };
            // int3 may be used from user mode once there is one.
            let dpl = if vector == VEC_BREAKPOINT { 3 } else { 0 };
            gates[vector as usize] = Gate::interrupt(stub as usize as u64, cs, ist, dpl);
        }
        Idt(gates)
    });
    let ptr =
        DescriptorTablePointer { limit: (core::mem::size_of::<Idt>() - 1) as u16, base: VirtAddr::new(idt as *const Idt as u64) };
    // SAFETY: the table lives in a static, and every present gate points at an
    // entry stub above that leaves a TrapFrame and calls trap_dispatch.
    unsafe { lidt(&ptr) };
}

/// Called by `trap_common` for every trap and interrupt, interrupts disabled.
extern "C" fn trap_dispatch(tf: &mut TrapFrame) {
    // Whatever the interrupted code allowed, the handler gets no access to
    // user pages (iretq restores the interrupted RFLAGS.AC).
    super::cpu::clac();
    // Page faults first, apart from the match of the other vectors (which
    // compiles to a jump table: under emulation an indirect jump is a lookup
    // of translated code, on the path of every fault).
    if tf.vector as u8 == VEC_PAGE_FAULT {
        page_fault(tf);
    } else {
        dispatch_other(tf);
    }
}

/// Every trap but a page fault.
#[inline(never)]
fn dispatch_other(tf: &mut TrapFrame) {
    let vector = tf.vector as u8;
    match vector {
        VEC_DEBUG if one_shot_breakpoint(tf) => {}
        VEC_NMI if super::watchdog::nmi(tf) => {}
        VEC_BREAKPOINT => {
            BREAKPOINTS.fetch_add(1, Ordering::Relaxed);
            log::debug!("breakpoint at {:#x}", tf.rip.wrapping_sub(1));
        }
        VEC_TIMER => {
            crate::kern::sync::interrupt_enter();
            crate::devtools::profile::sample(tf.rip);
            crate::kern::time::tick();
            super::apic::eoi();
            crate::kern::sync::interrupt_exit();
            // The handler's end, as the interrupted thread's: it may be
            // switched out here.
            crate::kern::sched::preempt();
            if tf.cs & 3 == 3 {
                crate::proc::check_signals();
            }
        }
        VEC_DEVICE => {
            crate::kern::sync::interrupt_enter();
            crate::dev::interrupt();
            super::apic::eoi();
            crate::kern::sync::interrupt_exit();
        }
        VEC_SPURIOUS => {}
        _ if tf.cs & 3 == 3 => {
            use crate::proc::{SIGFPE, SIGILL, SIGSEGV, kill_current};
            let (_, name) = exception_name(vector);
            let signal = match vector {
                0 | 16 | 19 => SIGFPE,
                6 => SIGILL,
                _ => SIGSEGV,
            };
            kill_current(signal, format_args!("{name}"), tf.rip, tf.rip)
        }
        _ => fatal_exception(tf),
    }
}

/// A page fault: the VM's to resolve, a user copy's to recover, or a
/// process's (or the kernel's) end.
#[inline(always)]
fn page_fault(tf: &mut TrapFrame) {
    let cr2 = Cr2::read_raw();
    // The kernel touched a present user page without RFLAGS.AC:
    // SMAP stopped it. Only a probe may do that and recover.
    const AC: u64 = 1 << 18;
    let user_page = cr2 < crate::arch::pmap::USER_END && tf.error & 1 != 0;
    if tf.cs & 3 == 0 && user_page && super::cpu::smap_on() && tf.rflags & AC == 0 {
        smap_violation(tf, cr2);
        return;
    }
    if let Err(e) = crate::mm::vmspace::page_fault(tf, cr2) {
        page_fault_unresolved(tf, cr2, e);
    }
}

/// The kernel touched a user page outside a user copy, and SMAP stopped it:
/// a probe recovers; anything else is a kernel bug.
#[cold]
#[inline(never)]
fn smap_violation(tf: &mut TrapFrame, cr2: u64) {
    if crate::syscall::recover_user_copy(tf) {
        return;
    }
    {
        let mut w = crate::kern::serial::panic_writer();
        let _ = core::fmt::Write::write_fmt(
            &mut w,
            format_args!("\nSMAP: the kernel touched user address {cr2:#x} outside a user copy\n"),
        );
    }
    fatal_exception(tf)
}

/// A page fault the VM could not resolve (`None`: not the VM's at all): a
/// user process is killed with the reason, a user copy returns EFAULT, the
/// kernel itself stops with a report. Out of line: the dispatcher's own
/// code stays short on the path of every fault.
#[cold]
#[inline(never)]
fn page_fault_unresolved(tf: &mut TrapFrame, cr2: u64, e: Option<vm::fault::FaultError>) {
    match e {
        Some(vm::fault::FaultError::NoMemory) if tf.cs & 3 == 3 => {
            // No page could be had through every retry (or the
            // pageout daemon chose this process to kill, and the
            // fault stopped waiting): the process goes.
            if crate::proc::signal_pending() {
                // Killed while it waited (the daemon's choice, said
                // already): the pending signal ends it.
                crate::proc::check_signals();
            }
            crate::mm::pageout::report_shortage();
            crate::proc::kill_current(crate::proc::SIGKILL, format_args!("out of memory"), cr2, tf.rip)
        }
        e if tf.cs & 3 == 3 => {
            let access = if tf.error & 2 != 0 {
                "write"
            } else if tf.error & 16 != 0 {
                "execute"
            } else {
                "read"
            };
            // Static text only: kill_current never returns, so an owned
            // message alive in this frame would never be freed.
            let what = match e {
                Some(vm::fault::FaultError::Protection) => " not allowed (protection)",
                Some(vm::fault::FaultError::Io) => ": I/O error",
                Some(vm::fault::FaultError::Bad) => " beyond the end of the object",
                _ => " of an unmapped address",
            };
            let signal = match e {
                Some(vm::fault::FaultError::Io | vm::fault::FaultError::Bad) => crate::proc::SIGBUS,
                _ => crate::proc::SIGSEGV,
            };
            crate::proc::kill_current(signal, format_args!("{access}{what}"), cr2, tf.rip)
        }
        _ if crate::syscall::recover_user_copy(tf) => {}
        Some(e) => {
            {
                let mut w = crate::kern::serial::panic_writer();
                let _ = core::fmt::Write::write_fmt(
                    &mut w,
                    format_args!("\nthe VM could not resolve the page fault at {cr2:#x}: {e:?}\n"),
                );
            }
            fatal_exception(tf)
        }
        None => fatal_exception(tf),
    }
}

/// An exception the kernel cannot handle: report it and stop (or, if the
/// running test expected it, let the test runner record the pass).
fn fatal_exception(tf: &TrapFrame) -> ! {
    let cr2 = Cr2::read_raw();
    let vector = tf.vector as u8;
    {
        let mut w = crate::kern::serial::panic_writer();
        report(&mut w, tf, cr2);
    }
    if vector == VEC_PAGE_FAULT && tf.cs & 3 == 0 && crate::kern::kmem::is_stack_guard(cr2) {
        // A kernel bug of its own kind: said as such (the panic runs on the
        // page-fault IST stack, the thread's own being used up).
        panic!("kernel stack overflow: a kernel thread ran off its stack into the guard page at {cr2:#x} (rip {:#x})", tf.rip);
    }
    crate::devtools::ktest_runner::exception_taken(vector, cr2)
}

/// Prints the exception report: what, where, every register, and a backtrace.
pub fn report(w: &mut dyn core::fmt::Write, tf: &TrapFrame, cr2: u64) {
    let vector = tf.vector as u8;
    let (mnemonic, name) = exception_name(vector);
    let _ = writeln!(w, "\nEXCEPTION: vector {vector} {mnemonic} {name}, error code {:#x}", tf.error);
    if vector == VEC_PAGE_FAULT {
        let e = tf.error;
        let _ = writeln!(
            w,
            "  CR2={cr2:#018x} ({} {} {}{}{})",
            if e & 1 != 0 { "protection violation" } else { "not present" },
            if e & 2 != 0 {
                "write"
            } else if e & 16 != 0 {
                "instruction fetch"
            } else {
                "read"
            },
            if e & 4 != 0 { "user" } else { "kernel" },
            if e & 8 != 0 { ", reserved bit set" } else { "" },
            if e & 32 != 0 { ", protection key" } else { "" },
        );
        // A kernel access to the unmapped page below a kernel thread's
        // stack, or just below the stack pointer, is a run off the end of
        // the stack into its guard page.
        if e & 5 == 0 && crate::kern::kmem::is_stack_guard(cr2) {
            let _ = writeln!(w, "  kernel stack overflow: the access is in the guard page below a kernel thread's stack");
        } else if e & 5 == 0 && cr2 < tf.rsp.wrapping_add(64) && tf.rsp.wrapping_sub(cr2) < 8192 {
            let _ = writeln!(w, "  (the access is just below RSP: kernel stack overflow into the guard page)");
        }
    }
    let _ = write!(w, "  RIP={:#018x}", tf.rip);
    crate::kern::ksyms::write_symbol(w, tf.rip);
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "  RSP={:#018x} RFLAGS={:#018x} CS={:#x} SS={:#x} CR3={:#x}",
        tf.rsp,
        tf.rflags,
        tf.cs,
        tf.ss,
        Cr3::read_raw().0.start_address().as_u64()
    );
    let regs = [
        ("RAX", tf.rax),
        ("RBX", tf.rbx),
        ("RCX", tf.rcx),
        ("RDX", tf.rdx),
        ("RSI", tf.rsi),
        ("RDI", tf.rdi),
        ("RBP", tf.rbp),
        ("R8 ", tf.r8),
        ("R9 ", tf.r9),
        ("R10", tf.r10),
        ("R11", tf.r11),
        ("R12", tf.r12),
        ("R13", tf.r13),
        ("R14", tf.r14),
        ("R15", tf.r15),
    ];
    for row in regs.chunks(4) {
        let _ = write!(w, " ");
        for (name, value) in row {
            let _ = write!(w, " {name}={value:#018x}");
        }
        let _ = writeln!(w);
    }
    crate::kern::backtrace::write_from(w, tf.rip, tf.rbp);
}

mod tests {
    use core::sync::atomic::Ordering;

    use ktest::ktest;

    use super::BREAKPOINTS;

    /// `int3` is reported and execution continues after it.
    #[ktest]
    fn breakpoint_returns() {
        let before = BREAKPOINTS.load(Ordering::Relaxed);
        // SAFETY: the #BP handler returns to the next instruction and changes
        // no register.
        unsafe { core::arch::asm!("int3") };
        // SAFETY: as above.
        unsafe { core::arch::asm!("int3") };
        assert_eq!(BREAKPOINTS.load(Ordering::Relaxed), before + 2);
    }

    /// A one-shot hardware breakpoint traps once, at its instruction, with
    /// the frame on the running stack; execution goes on.
    #[ktest]
    fn one_shot_breakpoint_traps_once() {
        use super::{BREAK_ONCE_FRAME, break_once_at};

        #[inline(never)]
        fn target(x: u64) -> u64 {
            core::hint::black_box(x) + 1
        }
        let f: fn(u64) -> u64 = target;
        let here = core::hint::black_box(0u64);
        let here = &here as *const u64 as u64;
        break_once_at(f as usize as u64);
        assert_eq!(f(1), 2);
        let frame = BREAK_ONCE_FRAME.load(Ordering::SeqCst);
        assert!(frame != 0, "the breakpoint trapped");
        assert!(frame < here && here - frame < 8192, "frame {frame:#x} not just below this one ({here:#x})");
        BREAK_ONCE_FRAME.store(0, Ordering::SeqCst);
        assert_eq!(f(2), 3);
        assert_eq!(BREAK_ONCE_FRAME.load(Ordering::SeqCst), 0, "it traps only once");
    }

    /// A read of an unmapped kernel address is reported as a page fault with
    /// that address in CR2.
    #[ktest(expect_fault = 14)]
    fn unmapped_read_is_reported() {
        let addr: u64 = 0xffff_dead_beef_0000;
        assert!(crate::arch::paging::translate(addr).is_none(), "test address is mapped");
        crate::devtools::ktest_runner::expect_fault_address(addr);
        // SAFETY: none: this read is meant to fault, and the fault ends the test.
        let v = unsafe { core::ptr::read_volatile(addr as *const u64) };
        panic!("read of unmapped address returned {v:#x}");
    }

    /// Running off the end of the kernel stack hits the guard page, and the
    /// page-fault handler, on its own stack, reports it.
    #[ktest(expect_fault = 14)]
    fn stack_overflow_is_reported() {
        #[inline(never)]
        #[allow(unconditional_recursion)]
        fn recurse(n: u64) -> u64 {
            let buf = core::hint::black_box([n; 64]);
            recurse(buf[0] + 1) + buf[63]
        }
        core::hint::black_box(recurse(0));
    }
}
