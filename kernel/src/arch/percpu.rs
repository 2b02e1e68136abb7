//! Per-CPU data, reached through the GS base.
//!
//! Each CPU has one [`PerCpu`] block, and while it runs kernel code its
//! GS base (the `IA32_GS_BASE` MSR) holds the block's address. The first
//! word of the block is that address again, so `mov rax, gs:[0]` gives a
//! plain pointer to it ([`this`]); the entry code reaches the words it
//! needs before any Rust runs (the thread's kernel stack, the user's RSP)
//! at fixed offsets.
//!
//! **swapgs.** User mode has a GS base of its own (zero here: the kernel
//! offers no `ARCH_SET_GS` and leaves `CR4.FSGSBASE` off, so a program
//! cannot set it). `swapgs` exchanges the GS base with the
//! `IA32_KERNEL_GS_BASE` MSR, so every way into the kernel from user mode
//! swaps once on entry and once on the way out:
//!
//! | entry | how it knows it came from user mode |
//! | --- | --- |
//! | `syscall` (`syscall::syscall_entry`) | always does |
//! | traps, interrupts (`idt::trap_common`), `#PF` (`idt::pf_entry`) | CPL 3 in the saved CS |
//! | NMI, `#MC`, `#DF` (`idt::paranoid_common`) | the GS base is not a kernel address |
//!
//! and every way out to user mode swaps back, with interrupts off:
//! `sysretq` and `iretq` at the end of a system call, `idt::trap_return`
//! (by the saved CS), and a new program's first entry
//! (`proc::exit::enter_user`).
//!
//! The last three can arrive anywhere, including between a `syscall` and
//! its `swapgs`, or between the exit's `swapgs` and `sysretq`, where the
//! saved CS says kernel while GS is still the user's. So they ask the MSR
//! (FreeBSD's amd64 NMI entry does the same): a kernel address has bit 63
//! set, and the user's GS base is zero. They swap back on exit only if
//! they swapped on entry.
//!
//! One CPU for now: the boot CPU's block is [`BOOT_CPU`]. The other
//! processors get theirs when they are started.

use core::panic::Location;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use x86_64::VirtAddr;
use x86_64::registers::model_specific::{GsBase, KernelGsBase};
use x86_64::structures::tss::TaskStateSegment;

/// Offsets of the words the entry code reads and writes, checked against
/// the struct below at compile time.
pub const OFF_SELF: usize = 0;
pub const OFF_KERNEL_STACK: usize = 8;
pub const OFF_USER_RSP: usize = 16;
pub const OFF_FORCE_IRET: usize = 24;

/// One CPU's data. Each field is the CPU's own: written by it (with
/// interrupts off where an interrupt handler also writes it) and read by
/// others only for reports, so Relaxed orderings serve throughout.
#[repr(C)]
pub struct PerCpu {
    /// The block's own address (`gs:[0]`).
    this: AtomicPtr<PerCpu>,
    /// The running thread's kernel stack top, for the entries that switch
    /// stacks themselves (`syscall`, a `#PF` from user mode). Written at
    /// each switch with interrupts off.
    pub kernel_stack: AtomicU64,
    /// The user's RSP between the `syscall` entry's first instructions and
    /// its frame: scratch for the entry.
    pub user_rsp: AtomicU64,
    /// Non-zero when the return to user mode must be by `iretq` (after
    /// `rt_sigreturn`, whose RCX and R11 are the frame's); the syscall exit
    /// clears it.
    pub force_iret: AtomicU64,
    /// The CPU's number: 0 for the boot CPU, then in order of start-up.
    pub id: u32,
    /// Device and timer interrupt handlers running on this CPU, nested
    /// ones counted (`kern::sync::in_interrupt`).
    pub in_interrupt: AtomicU32,
    /// The spin lock this CPU spins on, and its holder's site and CPU,
    /// while it spins: for the watchdog's report.
    pub spinning_lock: AtomicUsize,
    pub spinning_holder: AtomicPtr<Location<'static>>,
    pub spinning_holder_cpu: AtomicU32,
    /// The watchdog's view: the timer ticks the last NMI saw, and how many
    /// NMIs in a row saw them unchanged.
    pub watchdog_ticks: AtomicU64,
    pub watchdog_unchanged: AtomicU32,
    /// The CPU's TSS (`arch::gdt`), and the lowest addresses of its four
    /// IST stacks. Set while the CPU is set up.
    pub tss: AtomicPtr<TaskStateSegment>,
    pub ist: [AtomicU64; 4],
    /// The CPU's local APIC ID.
    pub apic_id: AtomicU32,
}

const _: () = {
    assert!(core::mem::offset_of!(PerCpu, this) == OFF_SELF);
    assert!(core::mem::offset_of!(PerCpu, kernel_stack) == OFF_KERNEL_STACK);
    assert!(core::mem::offset_of!(PerCpu, user_rsp) == OFF_USER_RSP);
    assert!(core::mem::offset_of!(PerCpu, force_iret) == OFF_FORCE_IRET);
};

impl PerCpu {
    pub const fn new(id: u32) -> PerCpu {
        PerCpu {
            this: AtomicPtr::new(ptr::null_mut()),
            kernel_stack: AtomicU64::new(0),
            user_rsp: AtomicU64::new(0),
            force_iret: AtomicU64::new(0),
            id,
            in_interrupt: AtomicU32::new(0),
            spinning_lock: AtomicUsize::new(0),
            spinning_holder: AtomicPtr::new(ptr::null_mut()),
            spinning_holder_cpu: AtomicU32::new(u32::MAX),
            watchdog_ticks: AtomicU64::new(0),
            watchdog_unchanged: AtomicU32::new(0),
            tss: AtomicPtr::new(ptr::null_mut()),
            ist: [const { AtomicU64::new(0) }; 4],
            apic_id: AtomicU32::new(0),
        }
    }
}

/// The boot CPU's block.
pub static BOOT_CPU: PerCpu = PerCpu::new(0);

/// Points this CPU's GS base at `cpu` (and the user's, which `swapgs`
/// brings in on the way out, at zero). The first thing a CPU does in Rust:
/// nothing before it may call [`this`]. (Not inlined: a debugger's stop
/// at the start of `kernel_main` stays in `kernel_main`.)
#[inline(never)]
pub fn install(cpu: &'static PerCpu) {
    let addr = cpu as *const PerCpu as *mut PerCpu;
    cpu.this.store(addr, Ordering::Relaxed);
    GsBase::write(VirtAddr::from_ptr(addr));
    KernelGsBase::write(VirtAddr::zero());
}

/// The running CPU's block.
///
/// The caller may move to another CPU after reading it unless interrupts
/// (or preemption) are off; the fields each say who may touch them.
#[inline(always)]
pub fn this() -> &'static PerCpu {
    let p: *const PerCpu;
    // SAFETY: `install` ran on this CPU before any caller, and the entries
    // keep the kernel's GS base loaded whenever kernel code runs; gs:[0]
    // holds the block's own address.
    unsafe { core::arch::asm!("mov {}, gs:[0]", out(reg) p, options(nostack, readonly, preserves_flags)) };
    debug_assert!((p as u64) >> 63 == 1, "GS base is not the kernel's: per-CPU pointer {p:p}");
    // SAFETY: the blocks are statics (or leaked at start-up): 'static.
    unsafe { &*p }
}

/// Whether the GS base is the kernel's now (not the user's), read from the
/// MSR: for tests of the entries.
pub fn gs_is_kernel() -> bool {
    GsBase::read().as_u64() >> 63 == 1
}

mod tests;
