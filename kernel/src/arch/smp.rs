//! Starting the other processors.
//!
//! The MADT (`arch::madt`) lists the application processors (APs). Each
//! waits, after reset, for a start-up IPI (SIPI) naming a page below 1 MiB
//! where it begins in real mode. The boot CPU copies a trampoline there
//! ([`TRAMPOLINE`]) and starts the APs one at a time, in the MADT's order,
//! with the INIT–SIPI–SIPI sequence of Intel's MP specification:
//!
//! 1. INIT, then 10 ms: the AP resets and waits for a SIPI;
//! 2. SIPI: the AP runs the trampoline at `page * 4096` in real mode;
//! 3. if it has not said so within 200 µs... here, 10 ms (emulated CPUs
//!    are slow to start), a second SIPI; then up to a second for it.
//!
//! The trampoline goes from real mode to protected mode (a GDT of its own)
//! to long mode on page tables of its own: the kernel's upper half, plus
//! the trampoline's page mapped where it lies, so that the instruction
//! after the one that turns paging on is still there. Then it jumps to the
//! kernel's AP entry on the AP's own stack, with a pointer to the AP's
//! [`ApStart`]. The entry loads the boot CPU's control registers, and the
//! CPU's block, GDT, TSS, IDT, system-call MSRs and local APIC are set up
//! as the boot CPU's were.
//!
//! A CPU that does not answer is reported, sent INIT again (so that it
//! cannot wake later on a trampoline that now belongs to another CPU), and
//! left out. The boot CPU waits for each AP to finish before starting the
//! next: the trampoline page and its parameters are one.
//!
//! Memory below 1 MiB is not the page allocator's (`kern::memory`): the
//! trampoline and its four page-table pages are taken from the usable
//! frames there.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use bootloader_api::info::MemoryRegionKind;
use x86_64::registers::control::{Cr0, Cr3, Cr4};

use super::apic::{self, Ipi};
use super::direct_map::phys_to_virt;
use super::percpu::{self, PerCpu};
use crate::kern::kmem::KStack;

pub use super::percpu::{MAX_CPUS, cpu, online};

/// The kernel stack an AP starts on (its idle stack).
const AP_STACK_SIZE: usize = 32 << 10;

/// What an AP is given: its block, its stacks, and where it says how far
/// it got.
pub struct ApStart {
    pub cpu: &'static PerCpu,
    /// The lowest addresses of its IST stacks (`gdt::IST_STACK_SIZE`
    /// bytes each).
    pub ist_bases: [u64; 4],
    /// The control registers to load, the boot CPU's.
    cr0: u64,
    cr3: u64,
    cr4: u64,
    /// Set by the AP when it runs kernel code, and when it is set up.
    /// (Release by the AP, Acquire by the boot CPU: what the AP wrote
    /// before is seen.)
    started: AtomicBool,
    done: AtomicBool,
    /// The APIC ID the AP read from its own local APIC.
    seen_apic_id: AtomicU32,
}

// The trampoline: copied to a page below 1 MiB and run from there, so every
// address in it is relative to its start (in EBX/RBX, the page's linear
// address) or patched in by `start_one`. The parameters live at its end.
core::arch::global_asm!(
    ".section .rodata.ap_trampoline, \"a\"",
    ".balign 16",
    ".global ap_trampoline_start",
    "ap_trampoline_start:",
    ".code16",
    "cli",
    "cld",
    "xorl %ebx, %ebx",
    "movw %cs, %bx",
    "movw %bx, %ds",
    "shll $4, %ebx",
    "lgdtl (ap_gdtr - ap_trampoline_start)",
    "movl %cr0, %eax",
    "orl $1, %eax",
    "movl %eax, %cr0",
    "ljmpl *(ap_pm_jump - ap_trampoline_start)",
    ".code32",
    ".global ap_pm",
    "ap_pm:",
    "movw $0x10, %ax",
    "movw %ax, %ds",
    "movw %ax, %es",
    "movw %ax, %ss",
    // PAE, the page tables, long mode and no-execute, then paging.
    "movl %cr4, %eax",
    "orl $0x20, %eax",
    "movl %eax, %cr4",
    "movl (ap_cr3 - ap_trampoline_start)(%ebx), %eax",
    "movl %eax, %cr3",
    "movl $0xC0000080, %ecx",
    "rdmsr",
    "orl $0x900, %eax",
    "wrmsr",
    "movl %cr0, %eax",
    "orl $0x80010000, %eax",
    "movl %eax, %cr0",
    "ljmpl *(ap_lm_jump - ap_trampoline_start)(%ebx)",
    ".code64",
    ".global ap_lm",
    "ap_lm:",
    "movl %ebx, %ebx",
    "movq (ap_stack - ap_trampoline_start)(%rbx), %rsp",
    "movq (ap_arg - ap_trampoline_start)(%rbx), %rdi",
    // A null return address: the entry's frame is the first, and RSP is
    // as a call leaves it.
    "pushq $0",
    "jmpq *(ap_entry - ap_trampoline_start)(%rbx)",
    ".balign 8",
    ".global ap_gdt",
    "ap_gdt:",
    ".quad 0",
    ".quad 0x00CF9A000000FFFF", // 0x08: 32-bit code
    ".quad 0x00CF92000000FFFF", // 0x10: data
    ".quad 0x00AF9A000000FFFF", // 0x18: 64-bit code
    ".global ap_gdtr",
    "ap_gdtr:",
    ".word 31",
    ".long 0", // the linear address of ap_gdt
    ".global ap_pm_jump",
    "ap_pm_jump:",
    ".long 0", // the linear address of ap_pm
    ".word 0x08",
    ".global ap_lm_jump",
    "ap_lm_jump:",
    ".long 0", // the linear address of ap_lm
    ".word 0x18",
    ".balign 8",
    ".global ap_cr3",
    "ap_cr3: .quad 0",
    ".global ap_stack",
    "ap_stack: .quad 0",
    ".global ap_arg",
    "ap_arg: .quad 0",
    ".global ap_entry",
    "ap_entry: .quad 0",
    ".global ap_trampoline_end",
    "ap_trampoline_end:",
    ".code64",
    ".text",
    options(att_syntax)
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static ap_pm: u8;
    static ap_lm: u8;
    static ap_gdt: u8;
    static ap_gdtr: u8;
    static ap_pm_jump: u8;
    static ap_lm_jump: u8;
    static ap_cr3: u8;
    static ap_stack: u8;
    static ap_arg: u8;
    static ap_entry: u8;
}

/// The trampoline's bytes, and the offset of each label in it.
struct Trampoline;

impl Trampoline {
    fn bytes() -> &'static [u8] {
        // SAFETY: the two labels bound the trampoline in read-only data,
        // start before end; it is never written in place.
        unsafe {
            let s = &raw const ap_trampoline_start;
            let e = &raw const ap_trampoline_end;
            core::slice::from_raw_parts(s, e as usize - s as usize)
        }
    }

    fn offset(label: *const u8) -> u64 {
        label as u64 - (&raw const ap_trampoline_start) as u64
    }
}

/// The low pages the trampoline runs on: its own, and its page tables.
struct LowPages {
    trampoline: u64,
    pml4: u64,
    pdpt: u64,
    pd: u64,
    pt: u64,
}

/// Five usable frames below 1 MiB (and above the real-mode interrupt
/// table and BIOS data in the first page), or None.
fn low_pages() -> Option<LowPages> {
    let mut got = [0u64; 5];
    let mut n = 0;
    for r in crate::kern::memory::regions().iter().filter(|r| r.kind == MemoryRegionKind::Usable) {
        let mut f = r.start.max(0x1000).next_multiple_of(4096);
        while n < got.len() && f + 4096 <= r.end.min(0xA_0000) {
            got[n] = f;
            n += 1;
            f += 4096;
        }
    }
    (n == got.len()).then(|| LowPages { trampoline: got[0], pml4: got[1], pdpt: got[2], pd: got[3], pt: got[4] })
}

/// Writes the trampoline and its page tables into `low`: the kernel's
/// upper half (the boot CPU's PML4 entries 256..512) and the trampoline's
/// page mapped at its own address.
fn prepare(low: &LowPages) {
    let table = |phys: u64| phys_to_virt(phys) as *mut u64;
    let code = Trampoline::bytes();
    assert!(code.len() <= 4096, "the trampoline fits in a page");
    let (kernel_pml4, _) = Cr3::read();
    // SAFETY: the five frames are usable memory below 1 MiB that nothing
    // else uses (the page allocator leaves that memory alone), reached
    // through the direct map; the kernel's PML4 is the live one, read only.
    unsafe {
        for p in [low.trampoline, low.pml4, low.pdpt, low.pd, low.pt] {
            core::ptr::write_bytes(table(p) as *mut u8, 0, 4096);
        }
        core::ptr::copy_nonoverlapping(code.as_ptr(), table(low.trampoline) as *mut u8, code.len());
        let live = phys_to_virt(kernel_pml4.start_address().as_u64()) as *const u64;
        for i in 256..512 {
            *table(low.pml4).add(i) = *live.add(i);
        }
        const PRESENT_WRITABLE: u64 = 0b11;
        let va = low.trampoline;
        *table(low.pml4).add(((va >> 39) & 511) as usize) = low.pdpt | PRESENT_WRITABLE;
        *table(low.pdpt).add(((va >> 30) & 511) as usize) = low.pd | PRESENT_WRITABLE;
        *table(low.pd).add(((va >> 21) & 511) as usize) = low.pt | PRESENT_WRITABLE;
        *table(low.pt).add(((va >> 12) & 511) as usize) = low.trampoline | PRESENT_WRITABLE;

        // The linear addresses the code jumps to and loads.
        let base = low.trampoline;
        let at = |label: *const u8| phys_to_virt(base + Trampoline::offset(label));
        // (The descriptor's base and the far pointers are not aligned.)
        ((at(&raw const ap_gdtr) + 2) as *mut u32).write_unaligned((base + Trampoline::offset(&raw const ap_gdt)) as u32);
        (at(&raw const ap_pm_jump) as *mut u32).write_unaligned((base + Trampoline::offset(&raw const ap_pm)) as u32);
        (at(&raw const ap_lm_jump) as *mut u32).write_unaligned((base + Trampoline::offset(&raw const ap_lm)) as u32);
        *(at(&raw const ap_cr3) as *mut u64) = low.pml4;
    }
}

/// Writes the parameters of one AP's start: its stack, its `ApStart`, the
/// entry.
fn set_params(low: &LowPages, stack_top: u64, arg: &'static ApStart, entry: u64) {
    let at = |label: *const u8| phys_to_virt(low.trampoline + Trampoline::offset(label)) as *mut u64;
    // SAFETY: the trampoline page is ours (see `prepare`), and no AP runs
    // it now: the boot CPU starts one at a time and waits for it, or sent
    // INIT to one that did not answer.
    unsafe {
        *at(&raw const ap_stack) = stack_top;
        *at(&raw const ap_arg) = arg as *const ApStart as u64;
        *at(&raw const ap_entry) = entry;
    }
}

/// Spins on the TSC until `done()` or `us` microseconds have passed;
/// returns `done()`'s last answer.
fn spin_until(us: u64, done: impl Fn() -> bool) -> bool {
    let start = crate::kern::time::rdtsc();
    let ticks = crate::kern::time::tsc_hz() * us / 1_000_000;
    while crate::kern::time::rdtsc() - start < ticks {
        if done() {
            return true;
        }
        core::hint::spin_loop();
    }
    done()
}

/// Waits up to `us` microseconds for `flag`. (Acquire pairs with the AP's
/// Release store.)
fn wait_for(flag: &AtomicBool, us: u64) -> bool {
    spin_until(us, || flag.load(Ordering::Acquire))
}

/// Starts every usable AP the MADT lists, one at a time, each into
/// `entry` (which calls [`ap_started`] first and [`ap_online`] when set
/// up). Returns the number of CPUs running. Called once by the boot CPU,
/// with the heap, the kernel's memory and the APIC up.
pub fn start_aps(entry: extern "C" fn(&'static ApStart) -> !) -> usize {
    let boot = percpu::this();
    boot.apic_id.store(apic::id(), Ordering::Relaxed);
    percpu::register(0, boot);
    let Some(topo) = super::madt::topology() else {
        log::info!("smp: 1 CPU online (no MADT)");
        return 1;
    };
    if topo.application_processors.is_empty() {
        log::info!("smp: 1 CPU online");
        return 1;
    }
    let Some(low) = low_pages() else {
        log::warn!("smp: no free memory below 1 MiB for the trampoline: 1 CPU");
        return 1;
    };
    prepare(&low);
    let page = (low.trampoline >> 12) as u8;
    for &apic_id in &topo.application_processors {
        let n = online();
        if n == MAX_CPUS {
            log::warn!("smp: CPUs past {MAX_CPUS} left out");
            break;
        }
        match start_one(&low, page, n as u32, apic_id, entry) {
            Ok(cpu) => {
                percpu::register(n, cpu);
            }
            Err(why) => log::warn!("smp: CPU with APIC ID {apic_id} left out: {why}"),
        }
    }
    let n = online();
    let ids: alloc::vec::Vec<u32> = (0..n).filter_map(cpu).map(|c| c.apic_id.load(Ordering::Relaxed)).collect();
    log::info!("smp: {n} CPUs online, APIC IDs {ids:?}");
    n
}

/// Starts one AP as CPU number `id`.
fn start_one(
    low: &LowPages,
    page: u8,
    id: u32,
    apic_id: u32,
    entry: extern "C" fn(&'static ApStart) -> !,
) -> Result<&'static PerCpu, &'static str> {
    let stack = KStack::new(AP_STACK_SIZE).map_err(|_| "no memory for its stack")?;
    let mut ist_bases = [0u64; 4];
    let mut ists = alloc::vec::Vec::new();
    for base in ist_bases.iter_mut() {
        let s = KStack::new(super::gdt::IST_STACK_SIZE).map_err(|_| "no memory for its IST stacks")?;
        *base = s.bottom();
        ists.push(s);
    }
    let cpu: &'static PerCpu = Box::leak(Box::new(PerCpu::new(id)));
    let (pml4, pcid) = Cr3::read_raw();
    cpu.apic_id.store(apic_id, Ordering::Relaxed);
    let start: &'static ApStart = Box::leak(Box::new(ApStart {
        cpu,
        ist_bases,
        cr0: Cr0::read_raw(),
        cr3: pml4.start_address().as_u64() | pcid as u64,
        cr4: Cr4::read_raw(),
        started: AtomicBool::new(false),
        done: AtomicBool::new(false),
        seen_apic_id: AtomicU32::new(u32::MAX),
    }));
    set_params(low, stack.top(), start, entry as usize as u64);

    apic::send_ipi(apic_id, Ipi::Init);
    spin_until(10_000, || false);
    apic::send_ipi(apic_id, Ipi::Startup(page));
    if !wait_for(&start.started, 10_000) {
        apic::send_ipi(apic_id, Ipi::Startup(page));
    }
    if !wait_for(&start.started, 1_000_000) || !wait_for(&start.done, 1_000_000) {
        // Back to waiting for a SIPI, so that it cannot run the trampoline
        // later with another CPU's parameters. Its stacks and block stay
        // leaked: a CPU that may still be running could be using them.
        apic::send_ipi(apic_id, Ipi::Init);
        core::mem::forget(stack);
        core::mem::forget(ists);
        return Err(if start.started.load(Ordering::Acquire) {
            "started but not set up in a second"
        } else {
            "no answer to INIT-SIPI-SIPI"
        });
    }
    let seen = start.seen_apic_id.load(Ordering::Relaxed);
    if seen != apic_id {
        log::warn!("smp: CPU {id} was started as APIC ID {apic_id} but reads {seen}");
    }
    // The stacks are the CPU's for good.
    core::mem::forget(stack);
    core::mem::forget(ists);
    Ok(cpu)
}

/// The first thing an AP does in Rust: the boot CPU's control registers
/// (its page tables rather than the trampoline's), its block in the GS
/// base, and word to the boot CPU that it runs.
pub fn ap_started(start: &'static ApStart) {
    // SAFETY: the boot CPU's CR0, CR4 and CR3, which map the kernel the
    // same as the trampoline's tables (their upper half is a copy); this
    // code and its stack are in the upper half.
    unsafe {
        core::arch::asm!(
            "mov cr4, {cr4}",
            "mov cr0, {cr0}",
            "mov cr3, {cr3}",
            cr4 = in(reg) start.cr4,
            cr0 = in(reg) start.cr0,
            cr3 = in(reg) start.cr3,
            options(nostack, preserves_flags)
        );
    }
    percpu::install(start.cpu);
    // Release pairs with the boot CPU's Acquire in `wait_for`.
    start.started.store(true, Ordering::Release);
}

/// The last step of an AP's set-up: it reports its APIC ID and that it is
/// done. From here it is parked until the scheduler runs on several CPUs.
pub fn ap_online(start: &'static ApStart) {
    start.seen_apic_id.store(apic::id(), Ordering::Relaxed);
    // Release pairs with the boot CPU's Acquire in `wait_for`.
    start.done.store(true, Ordering::Release);
}

/// Set once the boot CPU has the kernel up: the APs then join the
/// scheduler. (Release in [`release_aps`] pairs with the Acquire in
/// [`wait_for_release`]: an AP that sees it sees the kernel's set-up.)
static RELEASED: AtomicBool = AtomicBool::new(false);

/// Lets the started APs take threads.
pub fn release_aps() {
    RELEASED.store(true, Ordering::Release);
}

/// Waits, on an AP, for [`release_aps`].
pub fn wait_for_release() {
    while !RELEASED.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
}

/// The CPU that stops the others (a panic's), `NO_STOPPER` until one does:
/// an NMI that finds another CPU's number here halts its CPU for good.
/// (A)
static STOPPER: AtomicU32 = AtomicU32::new(NO_STOPPER);
const NO_STOPPER: u32 = u32::MAX;

/// Makes this CPU the one that reports: true for the first CPU to ask
/// (and again for it, a nested panic), false for any other, which must
/// then stop itself (its NMI is on its way, or already served).
pub fn claim_stop() -> bool {
    let me = percpu::this().id;
    match STOPPER.compare_exchange(NO_STOPPER, me, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => true,
        Err(owner) => owner == me,
    }
}

/// Stops every other CPU where it is, with an NMI (which even a CPU spinning
/// with interrupts off takes), so that a panic's report is the only output
/// and nothing runs on while the machine goes down. The caller has
/// [`claim_stop`]ped: two CPUs panicking at once would otherwise stop each
/// other, and the machine would go down with no report.
pub fn stop_others() {
    let me = percpu::this().id as usize;
    for n in (0..online()).filter(|&n| n != me) {
        if let Some(cpu) = cpu(n) {
            apic::send_ipi(cpu.apic_id.load(Ordering::Relaxed), Ipi::Nmi);
        }
    }
}

/// The NMI handler's first question: is this CPU asked to stop?
pub fn stop_requested() -> bool {
    let owner = STOPPER.load(Ordering::SeqCst);
    owner != NO_STOPPER && owner != percpu::this().id
}

mod tests;
