//! PCI configuration space through the legacy I/O ports 0xCF8 / 0xCFC
//! ("configuration mechanism #1").
//!
//! QEMU's default machine (i440fx, `pc`) has no memory-mapped (ECAM)
//! configuration space, only this: write the address of a 32-bit register
//! (enable bit, bus, device, function, register) to CONFIG_ADDRESS (0xCF8),
//! then read or write it at CONFIG_DATA (0xCFC). [`PortCam`] implements
//! virtio-drivers' `ConfigurationAccess` over that, so its `PciRoot` can
//! enumerate buses and read capabilities and BARs.
//!
//! The two port accesses must not be interleaved with another pair, so each
//! pair holds [`CONFIG_LOCK`] with interrupts off. Only bus 0 is scanned: the
//! machines the kernel runs on put every device there (no PCI bridges).

use crate::kern::sync::IrqMutex;
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction};
use x86_64::instructions::interrupts;
use x86_64::instructions::port::Port;

const CONFIG_ADDRESS: u16 = 0xCF8;
const CONFIG_DATA: u16 = 0xCFC;

/// Offset of the interrupt line (low byte) and pin (next byte) register.
pub const REG_INTERRUPT: u8 = 0x3C;

/// Serialises the address-then-data port pairs. (D) taken with interrupts off.
static CONFIG_LOCK: IrqMutex<()> = IrqMutex::new(());

/// Configuration space through I/O ports. Stateless: every access takes
/// the global lock, so copies are harmless.
#[derive(Debug, Default)]
pub struct PortCam;

fn address(df: DeviceFunction, offset: u8) -> u32 {
    0x8000_0000 | (df.bus as u32) << 16 | (df.device as u32) << 11 | (df.function as u32) << 8 | (offset as u32 & 0xFC)
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, device_function: DeviceFunction, register_offset: u8) -> u32 {
        interrupts::without_interrupts(|| {
            let _g = CONFIG_LOCK.lock();
            // SAFETY: 0xCF8/0xCFC are the PC's configuration-mechanism ports;
            // the lock keeps the address/data pair together. Reading a
            // register of an absent function returns all ones.
            unsafe {
                Port::<u32>::new(CONFIG_ADDRESS).write(address(device_function, register_offset));
                Port::<u32>::new(CONFIG_DATA).read()
            }
        })
    }

    fn write_word(&mut self, device_function: DeviceFunction, register_offset: u8, data: u32) {
        interrupts::without_interrupts(|| {
            let _g = CONFIG_LOCK.lock();
            // SAFETY: as in `read_word`; the callers write only registers
            // they own (command, BARs of a device being set up).
            unsafe {
                Port::<u32>::new(CONFIG_ADDRESS).write(address(device_function, register_offset));
                Port::<u32>::new(CONFIG_DATA).write(data);
            }
        })
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam
    }
}

/// The legacy interrupt of a function: (line, pin). The line is what the
/// firmware routed INTx to (an ISA IRQ number; 0xFF: none); the pin is
/// 1..=4 for INTA#..INTD#, 0 for no interrupt.
pub fn interrupt_line(df: DeviceFunction) -> (u8, u8) {
    let v = PortCam.read_word(df, REG_INTERRUPT);
    (v as u8, (v >> 8) as u8)
}

mod tests {
    use ktest::ktest;
    use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction};

    use super::PortCam;

    /// Bus 0, device 0 is the host bridge: on QEMU's `pc` machine an Intel
    /// 440FX (vendor 0x8086, device 0x1237); in any case a present device.
    #[ktest]
    fn host_bridge_answers() {
        let id = PortCam.read_word(DeviceFunction { bus: 0, device: 0, function: 0 }, 0);
        assert_ne!(id & 0xFFFF, 0xFFFF, "no device at 00:00.0");
        let class = PortCam.read_word(DeviceFunction { bus: 0, device: 0, function: 0 }, 8) >> 24;
        assert_eq!(class, 0x06, "00:00.0 is not a bridge (class {class:#x})");
    }
}
