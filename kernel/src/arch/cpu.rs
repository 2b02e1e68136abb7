//! CPU protections for the kernel against user memory: SMEP (the kernel never
//! executes a user page) and SMAP (the kernel touches user pages only inside
//! the user-copy routines, which set RFLAGS.AC with `stac` for the copy), when
//! the CPU model has them (QEMU's default `qemu64` has neither; `-cpu max`
//! has both).

use core::sync::atomic::{AtomicBool, Ordering};

/// SMAP is on: `stac`/`clac` exist and are needed. (C) set once at boot.
pub static SMAP_ON: AtomicBool = AtomicBool::new(false);
/// SMEP is on. (C)
static SMEP_ON: AtomicBool = AtomicBool::new(false);

/// What CPUID leaf 7 says: (SMEP, SMAP).
pub fn supported() -> (bool, bool) {
    // Leaf 0 says whether leaf 7 exists.
    let max = core::arch::x86_64::__cpuid(0).eax;
    if max < 7 {
        return (false, false);
    }
    let ebx = core::arch::x86_64::__cpuid_count(7, 0).ebx;
    (ebx & (1 << 7) != 0, ebx & (1 << 20) != 0)
}

/// Turns SMEP and SMAP on where the CPU has them.
pub fn init() {
    use x86_64::registers::control::{Cr4, Cr4Flags};
    let (smep, smap) = supported();
    // SAFETY: the bits exist (CPUID says so). With SMEP the kernel never
    // runs user pages (it does not); with SMAP it touches user pages only
    // inside the user copies, which set AC, and in address spaces it
    // activates itself (tests, benchmarks), which set AC too.
    unsafe {
        Cr4::update(|f| {
            if smep {
                f.insert(Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION);
            }
            if smap {
                f.insert(Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION);
            }
        });
    }
    SMEP_ON.store(smep, Ordering::Relaxed);
    SMAP_ON.store(smap, Ordering::Relaxed);
    log::info!("cpu: SMEP {}, SMAP {}", if smep { "on" } else { "absent" }, if smap { "on" } else { "absent" });
}

pub fn smap_on() -> bool {
    SMAP_ON.load(Ordering::Relaxed)
}

pub fn smep_on() -> bool {
    SMEP_ON.load(Ordering::Relaxed)
}

/// Allows kernel access to user pages (sets RFLAGS.AC) until [`clac`].
pub fn stac() {
    if smap_on() {
        // SAFETY: SMAP is on, so the instruction exists; it only sets AC.
        unsafe { core::arch::asm!("stac", options(nomem, nostack)) };
    }
}

/// Forbids kernel access to user pages again (clears RFLAGS.AC).
pub fn clac() {
    if smap_on() {
        // SAFETY: SMAP is on, so the instruction exists; it only clears AC.
        unsafe { core::arch::asm!("clac", options(nomem, nostack)) };
    }
}

mod tests;
