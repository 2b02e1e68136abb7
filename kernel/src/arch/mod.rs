//! Everything specific to x86_64: segments, traps, the local APIC, page tables.

pub mod apic;
pub mod breakpoint;
pub mod cpu;
pub mod direct_map;
pub mod gdt;
pub mod idt;
pub mod ioapic;
pub mod madt;
pub mod nmi;
pub mod paging;
pub mod percpu;
pub mod pmap;
pub mod smp;
pub mod tlb;
mod trap;
pub mod trapframe;
pub mod watchdog;

/// Disables interrupts and halts forever.
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
