//! The trap dispatcher: what each trap and interrupt does, once the entry
//! stubs (`arch::idt`) have left a [`TrapFrame`]: page faults to the VM
//! (or a user copy's recovery, or a report), the timer to the scheduler,
//! device interrupts to the drivers, exceptions from user mode to a signal,
//! and the rest to a panic report with every register and a backtrace.
//!
//! Nothing imports this file (FreeBSD's `amd64/trap.c` has the same place):
//! the entry calls [`trap_dispatch`] by its link name.

use core::sync::atomic::Ordering;

use x86_64::registers::control::{Cr2, Cr3};

use super::breakpoint::{BREAKPOINTS, one_shot_breakpoint};
use super::trapframe::*;

/// Called by `trap_common` (`arch::idt`) for every trap and interrupt,
/// interrupts disabled.
#[unsafe(no_mangle)]
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

/// `si_code`s of the exceptions' signals.
const FPE_INTDIV: i32 = 1;
const ILL_ILLOPN: i32 = 2;
const BUS_ADRALN: i32 = 1;
const SI_KERNEL: i32 = 0x80;

const TRAP_TRACE: i32 = 2;

/// The `si_code` of an x87 (#MF, vector 16) or SSE (#XM, 19) exception:
/// the first of the exceptions raised and not masked, in Linux's order
/// (`fpu__exception_code`). The program's FPU state is still the CPU's:
/// the kernel uses none.
fn fp_exception_code(vector: u8) -> i32 {
    const FPE_FLTDIV: i32 = 3;
    const FPE_FLTOVF: i32 = 4;
    const FPE_FLTUND: i32 = 5;
    const FPE_FLTRES: i32 = 6;
    const FPE_FLTINV: i32 = 7;
    let raised = if vector == 19 {
        let mut mxcsr = 0u32;
        // SAFETY: stmxcsr stores the 4-byte MXCSR at a valid address.
        unsafe { core::arch::asm!("stmxcsr [{}]", in(reg) &mut mxcsr, options(nostack)) };
        // Flags in bits 0-5, their masks in bits 7-12.
        mxcsr & !(mxcsr >> 7) & 0x3f
    } else {
        let (mut status, mut control) = (0u16, 0u16);
        // SAFETY: fnstsw and fnstcw store 2 bytes each at valid addresses
        // and change no state.
        unsafe {
            core::arch::asm!("fnstsw [{}]", in(reg) &mut status, options(nostack));
            core::arch::asm!("fnstcw [{}]", in(reg) &mut control, options(nostack));
        }
        (status & !control & 0x3f) as u32
    };
    if raised & 0x01 != 0 {
        FPE_FLTINV
    } else if raised & 0x04 != 0 {
        FPE_FLTDIV
    } else if raised & 0x08 != 0 {
        FPE_FLTOVF
    } else if raised & 0x12 != 0 {
        FPE_FLTUND
    } else if raised & 0x20 != 0 {
        FPE_FLTRES
    } else {
        0
    }
}

/// Every trap but a page fault.
#[inline(never)]
fn dispatch_other(tf: &mut TrapFrame) {
    let vector = tf.vector as u8;
    match vector {
        VEC_DEBUG if one_shot_breakpoint(tf) => {}
        VEC_NMI if super::smp::stop_requested() => super::halt_forever(),
        VEC_NMI if super::watchdog::nmi(tf) => {}
        // A program's int3 is its SIGTRAP (SI_KERNEL, as Linux's), its
        // single step (RFLAGS.TF) too (TRAP_TRACE).
        VEC_BREAKPOINT if tf.cs & 3 == 3 => {
            crate::proc::fault_signal(tf, crate::proc::SIGTRAP, SI_KERNEL, 0, format_args!("breakpoint"))
        }
        VEC_DEBUG if tf.cs & 3 == 3 => {
            crate::proc::fault_signal(tf, crate::proc::SIGTRAP, TRAP_TRACE, tf.rip, format_args!("trace trap"))
        }
        VEC_BREAKPOINT => {
            BREAKPOINTS.fetch_add(1, Ordering::Relaxed);
            log::debug!("breakpoint at {:#x}", tf.rip.wrapping_sub(1));
        }
        VEC_TIMER => {
            crate::kern::sync::interrupt_enter();
            crate::devtools::profile::sample(tf.rip);
            // Every CPU's timer ends its slices and brings the clock up to date.
            let cpu = super::percpu::this();
            cpu.timer_ticks.fetch_add(1, Ordering::Relaxed);
            crate::kern::time::tick();
            super::apic::eoi();
            crate::kern::sync::interrupt_exit();
            // The handler's end, as the interrupted thread's: it may be
            // switched out here.
            crate::kern::sched::preempt();
            if tf.cs & 3 == 3 {
                crate::proc::check_signals(tf);
            }
        }
        VEC_DEVICE => {
            crate::kern::sync::interrupt_enter();
            crate::dev::interrupt();
            super::apic::eoi();
            crate::kern::sync::interrupt_exit();
        }
        // A halted CPU woken for a thread made ready: its idle loop looks.
        VEC_WAKEUP => super::apic::eoi(),
        VEC_SHOOTDOWN => {
            crate::kern::sync::interrupt_enter();
            super::tlb::handle_ipi();
            super::apic::eoi();
            crate::kern::sync::interrupt_exit();
        }
        VEC_SPURIOUS => {}
        _ if tf.cs & 3 == 3 => {
            use crate::proc::{SIGBUS, SIGFPE, SIGILL, SIGSEGV};
            let (_, name) = exception_name(vector);
            // The signal and its si_code and si_addr, as Linux's traps
            // give them: the handler, if the program has one, runs.
            let (signal, code, addr) = match vector {
                0 => (SIGFPE, FPE_INTDIV, tf.rip),
                16 | 19 => (SIGFPE, fp_exception_code(vector), tf.rip),
                6 => (SIGILL, ILL_ILLOPN, tf.rip),
                17 => (SIGBUS, BUS_ADRALN, 0),
                _ => (SIGSEGV, SI_KERNEL, 0),
            };
            crate::proc::fault_signal(tf, signal, code, addr, format_args!("{name}"))
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
    if crate::syscall::uaccess::recover_user_copy(tf) {
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
                crate::proc::check_signals(tf);
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
            // Static text only: a kill never returns, so an owned message
            // alive in this frame would never be freed.
            if let Some(vm::fault::FaultError::StackOverflow { limit }) = e {
                let kib = limit >> 10;
                let what = format_args!("{access}: stack overflow, past the {kib} KiB stack limit");
                return crate::proc::fault_signal(tf, crate::proc::SIGSEGV, crate::proc::SEGV_MAPERR, cr2, what);
            }
            let what = match e {
                Some(vm::fault::FaultError::Protection) => " not allowed (protection)",
                Some(vm::fault::FaultError::Io) => ": I/O error",
                Some(vm::fault::FaultError::Bad) => " beyond the end of the object",
                _ => " of an unmapped address",
            };
            let (signal, code) = match e {
                Some(vm::fault::FaultError::Io) => (crate::proc::SIGBUS, crate::proc::BUS_OBJERR),
                Some(vm::fault::FaultError::Bad) => (crate::proc::SIGBUS, crate::proc::BUS_ADRERR),
                Some(vm::fault::FaultError::Protection) => (crate::proc::SIGSEGV, crate::proc::SEGV_ACCERR),
                _ => (crate::proc::SIGSEGV, crate::proc::SEGV_MAPERR),
            };
            crate::proc::fault_signal(tf, signal, code, cr2, format_args!("{access}{what}"))
        }
        _ if crate::syscall::uaccess::recover_user_copy(tf) => {}
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
        // The report takes whatever locks it must, in whatever order.
        vm::witness::stop();
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
        use crate::arch::breakpoint::{BREAK_ONCE_FRAME, break_once_at};

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
