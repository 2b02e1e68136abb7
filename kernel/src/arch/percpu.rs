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
//! The boot CPU's block is [`BOOT_CPU`]; the other processors get theirs
//! when they are started (`arch::smp`).

use core::panic::Location;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use x86_64::VirtAddr;
use x86_64::registers::model_specific::{GsBase, KernelGsBase};
use x86_64::structures::tss::TaskStateSegment;

/// Offsets of the words the entry code reads and writes, checked against
/// the struct below at compile time.
pub const OFF_SELF: usize = 0;
pub const OFF_KERNEL_STACK: usize = 8;
pub const OFF_USER_RSP: usize = 16;
pub const OFF_FORCE_IRET: usize = 24;
pub const OFF_THREAD: usize = 32;
pub const OFF_SPACE: usize = 40;
pub const OFF_PREEMPT: usize = 48;

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
    /// The running thread's id and address space (`kern::sched`), written
    /// at each switch with interrupts off. The running thread reads its own
    /// with one GS-relative load, which no migration can split: whatever
    /// CPU it runs on, that CPU's word names it.
    pub thread: AtomicU64,
    pub space: AtomicUsize,
    /// Preemption off, counted (a spin lock of the VM's is held: see
    /// `kern::sched::preempt_disable`). Changed by one GS-relative
    /// instruction, so a migration cannot split it; zero at every switch.
    pub preempt: AtomicU32,
    /// The timer found the slice over while preemption was off: the
    /// thread yields when it turns preemption back on.
    pub need_resched: AtomicBool,
    /// The running thread's held locks, for the lock-order check
    /// (`vm::witness`); written at each switch with interrupts off.
    pub held: AtomicPtr<vm::witness::Held>,
    /// Timer interrupts this CPU has taken: the watchdog's sign of life.
    pub timer_ticks: AtomicU64,
    /// Set by the CPU that found this one stuck, before the NMI that asks
    /// it for its report.
    pub report_stuck: AtomicBool,
    /// Set by a CPU that wants this one's backtrace in its report (the
    /// holder of a lock it spun on too long), before the NMI that asks.
    pub dump_request: AtomicBool,
    /// NMIs this CPU has taken (the watchdog's, and those sent to it).
    pub nmis: AtomicU64,
    /// This CPU's TLB shootdown request (`arch::tlb`): the range and its
    /// generation. Written by this CPU only, read by the targets.
    pub tlb_start: AtomicU64,
    pub tlb_end: AtomicU64,
    pub tlb_gen: AtomicU64,
    /// The initiators whose requests wait for this CPU (bit n: CPU n).
    pub tlb_pending: AtomicU64,
    /// For each initiator, the generation of its request this CPU handled
    /// last.
    pub tlb_done: [AtomicU64; MAX_CPUS],
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
    assert!(core::mem::offset_of!(PerCpu, thread) == OFF_THREAD);
    assert!(core::mem::offset_of!(PerCpu, space) == OFF_SPACE);
    assert!(core::mem::offset_of!(PerCpu, preempt) == OFF_PREEMPT);
};

impl PerCpu {
    pub const fn new(id: u32) -> PerCpu {
        PerCpu {
            this: AtomicPtr::new(ptr::null_mut()),
            kernel_stack: AtomicU64::new(0),
            user_rsp: AtomicU64::new(0),
            force_iret: AtomicU64::new(0),
            thread: AtomicU64::new(0),
            space: AtomicUsize::new(0),
            preempt: AtomicU32::new(0),
            need_resched: AtomicBool::new(false),
            held: AtomicPtr::new(ptr::null_mut()),
            timer_ticks: AtomicU64::new(0),
            report_stuck: AtomicBool::new(false),
            dump_request: AtomicBool::new(false),
            nmis: AtomicU64::new(0),
            tlb_start: AtomicU64::new(0),
            tlb_end: AtomicU64::new(0),
            tlb_gen: AtomicU64::new(0),
            tlb_pending: AtomicU64::new(0),
            tlb_done: [const { AtomicU64::new(0) }; MAX_CPUS],
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

/// The most CPUs the kernel runs on: the VM keeps per-CPU state for as
/// many (its caches and counters), so the two are one constant.
pub const MAX_CPUS: usize = vm::counter::MAX_CPUS;

/// The CPUs running, the boot CPU included, by number, as `arch::smp`
/// starts them. (Release when a CPU is added, pairing with the Acquire in
/// [`cpu`] and [`online`]: a reader that sees the count sees the blocks.)
static CPUS: [AtomicPtr<PerCpu>; MAX_CPUS] = [const { AtomicPtr::new(ptr::null_mut()) }; MAX_CPUS];
static ONLINE: AtomicU32 = AtomicU32::new(1);

/// Records CPU `n`'s block, and that CPUs 0 to `n` run.
pub fn register(n: usize, cpu: &'static PerCpu) {
    CPUS[n].store(cpu as *const PerCpu as *mut PerCpu, Ordering::Release);
    ONLINE.fetch_max(n as u32 + 1, Ordering::Release);
}

/// The number of CPUs running (the boot CPU included).
pub fn online() -> usize {
    ONLINE.load(Ordering::Acquire) as usize
}

/// CPU `n`'s block, if it runs.
pub fn cpu(n: usize) -> Option<&'static PerCpu> {
    if n >= online() {
        return None;
    }
    let p = CPUS.get(n)?.load(Ordering::Acquire);
    // SAFETY: the blocks are 'static (the boot CPU's a static, the others
    // leaked) and never change once stored.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// Turns preemption off on this CPU (`PerCpu::preempt`); nests. The
/// scheduler's `preempt_disable` is this.
#[inline(always)]
pub fn preempt_off() {
    // SAFETY: one instruction on the running CPU's own counter: a
    // migration cannot split it, and the count is zero at every switch, so
    // whichever CPU it lands on is the thread's.
    unsafe {
        core::arch::asm!("add dword ptr gs:[{}], 1", const OFF_PREEMPT, options(nostack));
    }
}

/// Undoes one [`preempt_off`]; true if that was the last (preemption is
/// on again), when the caller should honour a pending request to switch
/// (`kern::sched::preempt_enable` does; code below the scheduler leaves it
/// to the next tick).
#[inline(always)]
pub fn preempt_on() -> bool {
    let zero: u8;
    // SAFETY: as in `preempt_off`.
    unsafe {
        core::arch::asm!("sub dword ptr gs:[{}], 1", "setz {}", const OFF_PREEMPT, out(reg_byte) zero, options(nostack));
    }
    zero != 0
}

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

/// Reads the `u64` at `offset` in the running CPU's block with one
/// instruction: the running thread's own word (its id, its address space),
/// whatever CPU it is on when the load executes.
#[inline(always)]
pub fn read_own_u64(offset: usize) -> u64 {
    let v: u64;
    // SAFETY: as in `this`; the offsets are fields' (checked above), in
    // bounds of the block.
    unsafe { core::arch::asm!("mov {}, gs:[{}]", out(reg) v, in(reg) offset, options(nostack, readonly, preserves_flags)) };
    v
}

/// This CPU's count of interrupt handlers running (`PerCpu::in_interrupt`),
/// read with one GS-relative load. A thread that may be preempted must read
/// it this way: `this()` and a load through it are two instructions, and a
/// thread moved to another CPU between them reads the count of the CPU it
/// left, which may be in a handler by then.
#[inline(always)]
pub fn own_in_interrupt() -> u32 {
    let v: u32;
    // SAFETY: as in `read_own_u64`; the offset is the field's.
    unsafe {
        core::arch::asm!(
            "mov {:e}, gs:[{}]",
            out(reg) v,
            const core::mem::offset_of!(PerCpu, in_interrupt),
            options(nostack, readonly, preserves_flags)
        )
    };
    v
}

/// Whether the GS base is the kernel's now (not the user's), read from the
/// MSR: for tests of the entries.
pub fn gs_is_kernel() -> bool {
    GsBase::read().as_u64() >> 63 == 1
}

mod tests;
