//! The I/O APIC: routes device interrupt lines to vectors of the local APIC.
//!
//! The legacy 8259 PICs are masked (`apic::disable_pic`), so a device's
//! line interrupt reaches the CPU only through the I/O APIC. Each input pin
//! (a GSI; on QEMU's `pc` machine, pin n is ISA IRQ n, and the PIIX3 routes
//! the PCI INTx lines to ISA IRQs 5, 9, 10 and 11) has a 64-bit redirection
//! entry: vector, trigger mode, polarity, mask, destination.
//!
//! The registers are reached indirectly: write a register index to IOREGSEL
//! (base + 0x00), then read or write IOWIN (base + 0x10). That pair of
//! accesses must not be interleaved with another, so every access holds
//! [`IOAPIC`]'s lock with interrupts off.
//!
//! The address is the architectural default, 0xFEC00000, where QEMU (and
//! nearly every PC) puts the first I/O APIC; reading the MADT would find it
//! on machines that move it. Like the local APIC, it is reached through the
//! direct map, which the bootloader extends to 4 GiB for this reason.
//! [`init`] checks that something answers there and masks every pin.

use crate::kern::sync::IrqMutex;
use x86_64::instructions::interrupts;

/// Physical address of the I/O APIC's registers.
pub const IOAPIC_PHYS: u64 = 0xFEC0_0000;

const REG_ID: u32 = 0x00;
const REG_VERSION: u32 = 0x01;
const REG_REDIRECTION: u32 = 0x10;

const ENTRY_MASKED: u64 = 1 << 16;
const ENTRY_LEVEL: u64 = 1 << 15;

/// How a line signals.
///
/// A PCI INTx# wire is level-triggered and active low, but it does not
/// reach the I/O APIC as such on the `pc` machine: the PIIX3's interrupt
/// router turns it into an ISA IRQ that is level-triggered and active
/// *high*, which is how QEMU's ACPI tables describe the PCI interrupt
/// links (`Interrupt (ResourceConsumer, Level, ActiveHigh, Shared)`) and
/// how QEMU's I/O APIC model treats the pin: programmed active low, it sees
/// the raised line as idle and never delivers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Level-triggered, active high: a PCI line through the PIIX3 router.
    LevelHigh,
}

/// The I/O APIC once found: the virtual address of its registers and its
/// number of pins. (D) the lock, taken with interrupts off.
struct IoApic {
    base: u64,
    pins: u32,
}

static IOAPIC: IrqMutex<Option<IoApic>> = IrqMutex::new(None);

impl IoApic {
    fn read(&self, reg: u32) -> u32 {
        // SAFETY: `base` maps the I/O APIC's register page (checked in
        // `init`); IOREGSEL and IOWIN are 32-bit registers at offsets 0 and
        // 0x10; the caller holds the lock, so the select-then-access pair is
        // not interleaved.
        unsafe {
            core::ptr::write_volatile(self.base as *mut u32, reg);
            core::ptr::read_volatile((self.base + 0x10) as *const u32)
        }
    }

    fn write(&self, reg: u32, value: u32) {
        // SAFETY: as in `read`.
        unsafe {
            core::ptr::write_volatile(self.base as *mut u32, reg);
            core::ptr::write_volatile((self.base + 0x10) as *mut u32, value);
        }
    }

    fn set_entry(&self, pin: u32, entry: u64) {
        // Mask first (low word carries the mask bit), then the destination,
        // then the low word with its final mask state.
        self.write(REG_REDIRECTION + 2 * pin, ENTRY_MASKED as u32);
        self.write(REG_REDIRECTION + 2 * pin + 1, (entry >> 32) as u32);
        self.write(REG_REDIRECTION + 2 * pin, entry as u32);
    }
}

/// Why a line could not be routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoApicError {
    /// No I/O APIC answered at [`IOAPIC_PHYS`].
    Absent,
    /// The pin is past the I/O APIC's last one.
    NoSuchPin { pin: u32, pins: u32 },
}

/// Finds the I/O APIC and masks all its pins. Needs the direct map.
/// Returns the number of pins.
pub fn init(phys_offset: u64) -> Result<u32, IoApicError> {
    interrupts::without_interrupts(|| {
        let mut g = IOAPIC.lock();
        let chip = IoApic { base: phys_offset + IOAPIC_PHYS, pins: 0 };
        let version = chip.read(REG_VERSION);
        // Nothing there reads as all ones; a real one has version 0x1X or 0x2X.
        if version == u32::MAX || version & 0xF0 == 0 {
            log::warn!("no I/O APIC at {IOAPIC_PHYS:#x} (version register {version:#x})");
            return Err(IoApicError::Absent);
        }
        let pins = ((version >> 16) & 0xFF) + 1;
        let chip = IoApic { pins, ..chip };
        for pin in 0..pins {
            chip.set_entry(pin, ENTRY_MASKED);
        }
        log::info!(
            "I/O APIC at {IOAPIC_PHYS:#x}: id {}, version {:#x}, {pins} pins, all masked",
            chip.read(REG_ID) >> 24,
            version & 0xFF
        );
        *g = Some(chip);
        Ok(pins)
    })
}

/// The boot CPU's local APIC id (CPUID leaf 1, EBX bits 31..24), the
/// destination of every routed line (device interrupts and the watchdog's
/// NMIs all go to the boot CPU).
fn boot_cpu_apic_id() -> u64 {
    let r = core::arch::x86_64::__cpuid(1);
    (r.ebx >> 24) as u64
}

/// Routes input `pin`, an edge-triggered active-high ISA line, to the boot
/// CPU as a non-maskable interrupt, and unmasks it (the watchdog's tick).
pub fn route_nmi(pin: u32) -> Result<(), IoApicError> {
    const DELIVERY_NMI: u64 = 0b100 << 8;
    let g = IOAPIC.lock();
    let chip = g.as_ref().ok_or(IoApicError::Absent)?;
    if pin >= chip.pins {
        return Err(IoApicError::NoSuchPin { pin, pins: chip.pins });
    }
    // The vector is ignored for NMI delivery; 2 names it all the same.
    chip.set_entry(pin, (boot_cpu_apic_id() << 56) | DELIVERY_NMI | 2);
    Ok(())
}

/// Routes input `pin` to `vector` on the boot CPU, with the given trigger
/// mode, and unmasks it.
pub fn route(pin: u32, vector: u8, trigger: Trigger) -> Result<(), IoApicError> {
    interrupts::without_interrupts(|| {
        let g = IOAPIC.lock();
        let chip = g.as_ref().ok_or(IoApicError::Absent)?;
        if pin >= chip.pins {
            return Err(IoApicError::NoSuchPin { pin, pins: chip.pins });
        }
        let mode = match trigger {
            Trigger::LevelHigh => ENTRY_LEVEL,
        };
        // Fixed delivery, physical destination mode.
        chip.set_entry(pin, (boot_cpu_apic_id() << 56) | mode | vector as u64);
        Ok(())
    })
}
