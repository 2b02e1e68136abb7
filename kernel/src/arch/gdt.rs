//! The GDT and the TSS.
//!
//! Long mode ignores segmentation for addressing, but the CPU still needs a code
//! segment for the privilege level and a TSS for the stacks it switches to on an
//! interrupt. The TSS names an interrupt-stack-table (IST) stack for the
//! exceptions that must run even when the current stack is unusable:
//!
//! | IST | vector | why |
//! | --- | --- | --- |
//! | 1 | #DF (8) | a fault while delivering a fault; the stack is suspect |
//! | 2 | NMI (2) | can arrive anywhere, including the first instruction of another handler |
//! | 3 | #PF (14) | a kernel stack overflow hits the guard page: report it on a good stack |
//! | 4 | #MC (18) | like NMI |
//!
//! The page-fault handler may sleep (a busy page, a pager's I/O), which it
//! cannot do on a shared IST stack: a second fault while the first sleeps
//! would overwrite it. So the #PF entry (`trap::pf_entry`) moves every fault
//! that is not a stack overflow onto the interrupted stack and handles it
//! there; only guard-page hits are reported on this IST stack.

use alloc::boxed::Box;
use core::cell::UnsafeCell;
use core::sync::atomic::Ordering;

use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

pub const IST_DOUBLE_FAULT: u16 = 1;
pub const IST_NMI: u16 = 2;
pub const IST_PAGE_FAULT: u16 = 3;
pub const IST_MACHINE_CHECK: u16 = 4;

/// The size of each IST stack.
pub const IST_STACK_SIZE: usize = 32 * 1024;

/// One IST stack: 16-byte aligned as the ABI wants at a call.
#[repr(C, align(16))]
struct IstStack([u8; IST_STACK_SIZE]);

/// The boot CPU's IST stacks. Only the CPU writes them, through the TSS;
/// Rust code never makes a reference to their contents, so they need no
/// lock. The other CPUs' are kernel stacks with guard pages (`arch::smp`).
static mut IST_STACKS: [IstStack; 4] = [const { IstStack([0; IST_STACK_SIZE]) }; 4];

/// Address range of this CPU's IST stack `ist` (1-based), for the
/// backtrace walker.
pub fn ist_stack_range(ist: u16) -> (u64, u64) {
    let base = super::percpu::this().ist[(ist - 1) as usize].load(Ordering::Relaxed);
    (base, base + IST_STACK_SIZE as u64)
}

struct Selectors {
    code: SegmentSelector,
    data: SegmentSelector,
    tss: SegmentSelector,
}

/// A CPU's TSS. The CPU reads it on every interrupt; the kernel writes RSP0
/// (the stack for interrupts from user mode) at each thread switch, with
/// interrupts off, on that CPU only.
struct TssCell(UnsafeCell<TaskStateSegment>);

// SAFETY: written only while its CPU is being set up (once, before use) and
// by `set_kernel_stack` on its own CPU with interrupts off; read by the CPU.
unsafe impl Sync for TssCell {}

static TSS: TssCell = TssCell(UnsafeCell::new(TaskStateSegment::new()));
static GDT: Once<(GlobalDescriptorTable, Selectors)> = Once::new();

/// Selectors in the order `sysret` needs (STAR in `syscall.rs`): kernel
/// code 0x08, kernel data 0x10, user data 0x18, user code 0x20, then the TSS.
pub const USER_DATA_SELECTOR: u16 = 0x18 | 3;
pub const USER_CODE_SELECTOR: u16 = 0x20 | 3;

/// Sets the stack the CPU switches to on an interrupt or exception from user
/// mode (TSS.RSP0), and the one the system-call and page-fault entries
/// switch to (the CPU's `kernel_stack`, `arch::percpu`). Call with
/// interrupts off (the scheduler, at a switch).
pub fn set_kernel_stack(top: u64) {
    let cpu = super::percpu::this();
    let tss = cpu.tss.load(Ordering::Relaxed);
    // SAFETY: the CPU's own TSS (see TssCell), set before its first thread
    // switch; a plain store to a field the CPU only reads.
    unsafe { (*tss).privilege_stack_table[0] = VirtAddr::new(top) };
    cpu.kernel_stack.store(top, Ordering::Relaxed);
}

/// A GDT in the layout every CPU shares (the selectors above), with `tss`.
fn build(tss: &'static TssCell) -> (GlobalDescriptorTable, Selectors) {
    let mut gdt = GlobalDescriptorTable::new();
    let code = gdt.append(Descriptor::kernel_code_segment());
    let data = gdt.append(Descriptor::kernel_data_segment());
    let udata = gdt.append(Descriptor::user_data_segment());
    let ucode = gdt.append(Descriptor::user_code_segment());
    debug_assert_eq!((udata.0, ucode.0), (USER_DATA_SELECTOR, USER_CODE_SELECTOR));
    // SAFETY: the TSS is 'static, valid for the kernel's lifetime.
    let tss = gdt.append(unsafe { Descriptor::tss_segment_unchecked(tss.0.get()) });
    (gdt, Selectors { code, data, tss })
}

/// Fills `tss`'s IST slots with the stacks at `bases` and records them,
/// and the TSS, in this CPU's block.
fn set_ist(tss: &'static TssCell, bases: [u64; 4]) {
    let cpu = super::percpu::this();
    for ist in [IST_DOUBLE_FAULT, IST_NMI, IST_PAGE_FAULT, IST_MACHINE_CHECK] {
        let i = (ist - 1) as usize;
        // SAFETY: nothing uses this TSS yet (its CPU is being set up).
        unsafe { (*tss.0.get()).interrupt_stack_table[i] = VirtAddr::new(bases[i] + IST_STACK_SIZE as u64) };
        cpu.ist[i].store(bases[i], Ordering::Relaxed);
    }
    cpu.tss.store(tss.0.get(), Ordering::Relaxed);
}

/// Loads `gdt` and reloads the segment registers and the task register.
fn load(gdt: &'static GlobalDescriptorTable, sel: &Selectors) {
    gdt.load();
    // SAFETY: the selectors name the descriptors of the GDT just loaded,
    // which is 'static and so outlives every use.
    unsafe {
        CS::set_reg(sel.code);
        DS::set_reg(sel.data);
        ES::set_reg(sel.data);
        SS::set_reg(sel.data);
        load_tss(sel.tss);
    }
}

/// Builds and loads the boot CPU's GDT and TSS. Called once, early in
/// boot, after `percpu::install`.
pub fn init() {
    let mut bases = [0; 4];
    for (i, b) in bases.iter_mut().enumerate() {
        // SAFETY: only the address is taken; no reference to the contents
        // is made.
        *b = unsafe { &raw const IST_STACKS[i] } as u64;
    }
    set_ist(&TSS, bases);
    let (gdt, sel) = GDT.call_once(|| build(&TSS));
    load(gdt, sel);
}

/// Builds and loads the GDT and TSS of a CPU being started, with the IST
/// stacks whose lowest addresses are `ist_bases` (each `IST_STACK_SIZE`
/// bytes). Runs on that CPU, after `percpu::install`.
pub fn init_ap(ist_bases: [u64; 4]) {
    let tss: &'static TssCell = Box::leak(Box::new(TssCell(UnsafeCell::new(TaskStateSegment::new()))));
    set_ist(tss, ist_bases);
    let (gdt, sel) = build(tss);
    let gdt: &'static GlobalDescriptorTable = Box::leak(Box::new(gdt));
    load(gdt, &sel);
}

/// The kernel code selector, for building interrupt gates.
pub fn kernel_code_selector() -> u16 {
    GDT.get().expect("GDT not initialised").1.code.0
}
