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

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};

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

const IST_STACK_SIZE: usize = 32 * 1024;

/// One IST stack: 16-byte aligned as the ABI wants at a call.
#[repr(C, align(16))]
struct IstStack([u8; IST_STACK_SIZE]);

/// The IST stacks. Only the CPU writes them, through the TSS; Rust code never
/// makes a reference to their contents, so they need no lock.
static mut IST_STACKS: [IstStack; 4] = [const { IstStack([0; IST_STACK_SIZE]) }; 4];

/// Address range of IST stack `ist` (1-based), for the backtrace walker.
pub fn ist_stack_range(ist: u16) -> (u64, u64) {
    // SAFETY: only the address is taken; no reference to the contents is made.
    let base = unsafe { &raw const IST_STACKS[(ist - 1) as usize] } as u64;
    (base, base + IST_STACK_SIZE as u64)
}

struct Selectors {
    code: SegmentSelector,
    data: SegmentSelector,
    tss: SegmentSelector,
}

/// The TSS. The CPU reads it on every interrupt; the kernel writes RSP0 (the
/// stack for interrupts from user mode) at each thread switch, with
/// interrupts off, on one CPU.
struct TssCell(UnsafeCell<TaskStateSegment>);

// SAFETY: written only by `init` (once, before use) and `set_kernel_stack`
// (interrupts off, one CPU); read by the CPU.
unsafe impl Sync for TssCell {}

static TSS: TssCell = TssCell(UnsafeCell::new(TaskStateSegment::new()));
static GDT: Once<(GlobalDescriptorTable, Selectors)> = Once::new();

/// Selectors in the order `sysret` needs (STAR in `syscall.rs`): kernel
/// code 0x08, kernel data 0x10, user data 0x18, user code 0x20, then the TSS.
pub const USER_DATA_SELECTOR: u16 = 0x18 | 3;
pub const USER_CODE_SELECTOR: u16 = 0x20 | 3;

/// The kernel stack top of the running thread, for the entries that switch
/// stacks themselves: `syscall` (which switches no stack) and a page fault
/// from user mode (which the CPU delivers on its IST stack). (interrupts
/// off: written at a switch, read by the entries.)
pub(crate) static KERNEL_STACK: AtomicU64 = AtomicU64::new(0);

/// Sets the stack the CPU switches to on an interrupt or exception from user
/// mode (TSS.RSP0), and the one the system-call and page-fault entries
/// switch to. Call with interrupts off (the scheduler, at a switch).
pub fn set_kernel_stack(top: u64) {
    // SAFETY: see TssCell; a plain store to a field the CPU only reads.
    unsafe { (*TSS.0.get()).privilege_stack_table[0] = VirtAddr::new(top) };
    KERNEL_STACK.store(top, Ordering::Relaxed);
}

/// Builds and loads the GDT and TSS. Called once, early in boot.
pub fn init() {
    // SAFETY: nothing else uses the TSS yet (boot, one CPU).
    unsafe {
        let tss = &mut *TSS.0.get();
        for ist in [IST_DOUBLE_FAULT, IST_NMI, IST_PAGE_FAULT, IST_MACHINE_CHECK] {
            let (_, top) = ist_stack_range(ist);
            tss.interrupt_stack_table[(ist - 1) as usize] = VirtAddr::new(top);
        }
    }
    let (gdt, sel) = GDT.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let udata = gdt.append(Descriptor::user_data_segment());
        let ucode = gdt.append(Descriptor::user_code_segment());
        debug_assert_eq!((udata.0, ucode.0), (USER_DATA_SELECTOR, USER_CODE_SELECTOR));
        // SAFETY: the TSS is a static, valid for the kernel's lifetime.
        let tss = gdt.append(unsafe { Descriptor::tss_segment_unchecked(TSS.0.get()) });
        (gdt, Selectors { code, data, tss })
    });
    gdt.load();
    // SAFETY: the selectors name the descriptors of the GDT just loaded, which
    // lives in a static and so outlives every use.
    unsafe {
        CS::set_reg(sel.code);
        DS::set_reg(sel.data);
        ES::set_reg(sel.data);
        SS::set_reg(sel.data);
        load_tss(sel.tss);
    }
}

/// The kernel code selector, for building interrupt gates.
pub fn kernel_code_selector() -> u16 {
    GDT.get().expect("GDT not initialised").1.code.0
}
