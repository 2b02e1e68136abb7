//! Device drivers: PCI configuration space, DMA for virtio, virtio-blk
//! disks, and QEMU's own devices (the exit port, fw_cfg).
//!
//! At boot, [`init`] finds the I/O APIC, then the devices on PCI. Device
//! interrupts come in through the I/O APIC on one vector,
//! [`crate::arch::trapframe::VEC_DEVICE`], whose handler calls [`interrupt`]:
//! every driver checks its own devices' interrupt status there, so lines
//! may be shared. With no I/O APIC the drivers poll.

pub mod dma;
pub mod fw_cfg;
pub mod pci;
pub mod qemu;
pub mod virtio_blk;

/// Finds the interrupt controller and the devices. Call once, after the
/// page allocator and the local APIC are up, with interrupts still off.
pub fn init(phys_offset: u64) {
    let ioapic = crate::arch::ioapic::init(phys_offset).is_ok();
    virtio_blk::probe(ioapic, crate::arch::trapframe::VEC_DEVICE);
}

/// The device-interrupt handler (interrupts off; the caller sends the EOI).
pub fn interrupt() {
    virtio_blk::interrupt();
}
