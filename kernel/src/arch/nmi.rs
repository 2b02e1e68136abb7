//! Asking another CPU where it is: for the report of a CPU that waited on
//! it too long (a lock it holds, a TLB shootdown it has not acknowledged).
//! The asker sets the target's `PerCpu::dump_request` and sends it an NMI,
//! which even a CPU spinning with interrupts off takes; the target's NMI
//! handler (`arch::watchdog::nmi`) writes its backtrace.

use core::sync::atomic::Ordering;

use super::percpu::{self, PerCpu};
use super::trapframe::TrapFrame;

/// Writes where this CPU is, for another CPU's report (see [`ask_for_dump`]).
pub fn dump(me: &PerCpu, tf: &TrapFrame) {
    use core::fmt::Write;
    let mut w = crate::kern::serial::panic_writer();
    let _ = writeln!(w, "CPU {} is at rip {:#x} (rflags {:#x}):", me.id, tf.rip, tf.rflags);
    crate::kern::backtrace::write_from(&mut w, tf.rip, tf.rbp);
}

/// Asks CPU `n` (a lock's holder) to write its backtrace, and gives it a
/// moment to: for the report of a CPU that waited on it too long.
pub fn ask_for_dump(n: u32) {
    let me = percpu::this().id;
    let Some(cpu) = percpu::cpu(n as usize).filter(|_| n != me) else { return };
    cpu.dump_request.store(true, Ordering::SeqCst);
    super::apic::send_ipi(cpu.apic_id.load(Ordering::Relaxed), super::apic::Ipi::Nmi);
    let start = crate::kern::time::rdtsc();
    let wait = crate::kern::time::tsc_hz() / 10;
    while cpu.dump_request.load(Ordering::SeqCst) && crate::kern::time::rdtsc() - start < wait {
        core::hint::spin_loop();
    }
    // The dump itself: a little longer, for the serial line.
    let start = crate::kern::time::rdtsc();
    while crate::kern::time::rdtsc() - start < wait {
        core::hint::spin_loop();
    }
}
