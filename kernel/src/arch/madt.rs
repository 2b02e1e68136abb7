//! The processors and I/O APICs the firmware describes, from ACPI's MADT.
//!
//! The tables are read through the `acpi` crate: their layouts, checksums
//! and the MADT's dozen entry kinds are the firmware's interface, not this
//! kernel's subject, and the crate is kept by the people who write the
//! other Rust kernels' ACPI code. What the kernel keeps of them is
//! [`Topology`]: the boot CPU's local APIC ID, the application processors
//! to start (in the MADT's order, as ACPI asks), and the I/O APICs.
//!
//! The crate maps tables through [`Tables`], an [`AcpiHandler`] over the
//! direct map: every table lies in physical memory the direct map covers
//! (the bootloader maps the first 4 GiB at least).

use alloc::vec::Vec;
use core::ptr::NonNull;

use acpi::platform::ProcessorState;
use acpi::{AcpiHandler, AcpiTables, InterruptModel, PhysicalMapping};
use spin::Once;

use super::direct_map::phys_to_virt;

/// What the MADT says of the machine's processors and interrupt
/// controllers.
#[derive(Debug, Clone)]
pub struct Topology {
    /// The local APIC ID of the CPU that booted.
    pub boot_apic_id: u32,
    /// The other processors' local APIC IDs, to be started in this order.
    pub application_processors: Vec<u32>,
    /// Processors the firmware marks unusable (not started).
    pub disabled: usize,
    /// The I/O APICs: (ID, physical address of the registers, first GSI).
    pub io_apics: Vec<(u8, u64, u32)>,
}

static TOPOLOGY: Once<Topology> = Once::new();

/// Why the MADT could not be read.
#[derive(Debug)]
pub enum MadtError {
    /// The bootloader found no RSDP.
    NoRsdp,
    /// The tables are malformed or lack the MADT.
    Acpi(acpi::AcpiError),
    /// The MADT describes no APIC (a PIC-only machine).
    NoApic,
}

impl core::fmt::Display for MadtError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MadtError::NoRsdp => write!(f, "the bootloader found no RSDP"),
            MadtError::Acpi(e) => write!(f, "the ACPI tables: {e:?}"),
            MadtError::NoApic => write!(f, "the MADT describes no APIC"),
        }
    }
}

/// Reads the MADT once, from the RSDP the bootloader found. Needs the
/// heap (the crate collects the entries in vectors).
pub fn init(rsdp: Option<u64>) -> Result<&'static Topology, MadtError> {
    let rsdp = rsdp.ok_or(MadtError::NoRsdp)?;
    // SAFETY: the bootloader found and checksummed the RSDP at this
    // physical address; the crate checks it again and every table it
    // reaches.
    let tables = unsafe { AcpiTables::from_rsdp(Tables, rsdp as usize) }.map_err(MadtError::Acpi)?;
    let info = tables.platform_info().map_err(MadtError::Acpi)?;
    let InterruptModel::Apic(apic) = info.interrupt_model else { return Err(MadtError::NoApic) };
    let processors = info.processor_info.ok_or(MadtError::NoApic)?;
    let mut topo = Topology {
        boot_apic_id: processors.boot_processor.local_apic_id,
        application_processors: Vec::new(),
        disabled: 0,
        io_apics: apic.io_apics.iter().map(|io| (io.id, io.address as u64, io.global_system_interrupt_base)).collect(),
    };
    for p in processors.application_processors.iter() {
        if p.state == ProcessorState::Disabled {
            topo.disabled += 1;
        } else {
            topo.application_processors.push(p.local_apic_id);
        }
    }
    log::info!(
        "madt: boot CPU APIC {}, {} other processor(s) {:?}, {} disabled; I/O APICs {:x?}",
        topo.boot_apic_id,
        topo.application_processors.len(),
        topo.application_processors,
        topo.disabled,
        topo.io_apics
    );
    Ok(TOPOLOGY.call_once(|| topo))
}

/// The topology [`init`] read, if it has run and succeeded.
pub fn topology() -> Option<&'static Topology> {
    TOPOLOGY.get()
}

/// The `acpi` crate's window on physical memory: the direct map, where
/// every table already is, so mapping and unmapping are no-ops.
#[derive(Clone, Copy, Debug)]
pub struct Tables;

impl AcpiHandler for Tables {
    unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> PhysicalMapping<Self, T> {
        let start = NonNull::new(phys_to_virt(physical_address as u64) as *mut T).expect("the direct map is above address 0");
        // SAFETY: the direct map covers the firmware's tables for the
        // kernel's lifetime.
        unsafe { PhysicalMapping::new(physical_address, start, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

mod tests;
