//! User memory, reached from the kernel: [`copy_from_user`],
//! [`copy_to_user`] and [`copy_string`] check that a range lies in the
//! user half, then copy with the routines allowed to touch user pages
//! (with SMAP, they alone run with RFLAGS.AC set); [`read_user_u32`] and
//! [`cmpxchg_user_u32`] reach a futex word with one load or one locked
//! compare-exchange. A fault the VM cannot
//! resolve inside it resumes at its recovery point
//! ([`recover_user_copy`], from the page-fault handler) and the copy
//! returns EFAULT. A leaf: every system call and the ELF loader use it.

use alloc::vec::Vec;
use core::arch::naked_asm;

use crate::arch::pmap::USER_END;
use crate::arch::trapframe::TrapFrame;
use crate::syscall::errno::{EFAULT, ENAMETOOLONG, ENOMEM};

/// The body of a routine that touches user memory: `$access` between the
/// labels `<$name>_start` and `<$name>_end` (a fault there resumes at
/// `<$name>_fault`, [`recover_user_copy`]), `$setup` before and `$after`
/// after it, RFLAGS.AC set around it all when SMAP is on. Returns 0, or 1
/// after a fault.
macro_rules! user_access {
    ($name:literal, [$($setup:literal),*], [$($access:literal),+], [$($after:literal),*]) => {
        naked_asm!(
            "cmp byte ptr [rip + {smap}], 0",
            "je 2f",
            "stac",
            "2:",
            $($setup,)*
            concat!(".global ", $name, "_start"),
            concat!($name, "_start:"),
            $($access,)+
            concat!(".global ", $name, "_end"),
            concat!($name, "_end:"),
            $($after,)*
            "xor eax, eax",
            "jmp 3f",
            concat!(".global ", $name, "_fault"),
            concat!($name, "_fault:"),
            "mov eax, 1",
            "3:",
            "cmp byte ptr [rip + {smap}], 0",
            "je 4f",
            "clac",
            "4:",
            "ret",
            smap = sym crate::arch::cpu::SMAP_ON,
        )
    };
}

/// Copies `len` bytes from `src` to `dst`; a fault the VM cannot resolve
/// resumes at `copy_user_fault`. Returns 0, or 1 after a fault. With SMAP the
/// copy runs with RFLAGS.AC set (`stac` ... `clac`), the only kernel code
/// that may touch user pages.
#[unsafe(naked)]
unsafe extern "C" fn copy_user_raw(dst: *mut u8, src: *const u8, len: usize) -> u64 {
    user_access!("copy_user", [], ["mov rcx, rdx", "rep movsb"], [])
}

/// Reads the byte at `addr` as plain kernel code would, without setting
/// RFLAGS.AC: with SMAP on, a user page faults and the read returns 1; with
/// it off, the read succeeds (0). For testing the protection.
#[unsafe(naked)]
unsafe extern "C" fn probe_read_raw(addr: *const u8) -> u64 {
    naked_asm!(
        ".global probe_read_start",
        "probe_read_start:",
        "mov al, byte ptr [rdi]",
        ".global probe_read_end",
        "probe_read_end:",
        "xor eax, eax",
        "ret",
        ".global probe_read_fault",
        "probe_read_fault:",
        "mov eax, 1",
        "ret",
    )
}

/// Reads the aligned 32-bit word at `src` into `*dst` with one load (a
/// futex word, read as the CPU reads it: never torn). Returns 0, or 1
/// after a fault, as [`copy_user_raw`].
#[unsafe(naked)]
unsafe extern "C" fn load_user_u32(dst: *mut u32, src: *const u32) -> u64 {
    user_access!("user_word", [], ["mov eax, dword ptr [rsi]"], ["mov dword ptr [rdi], eax"])
}

/// `lock cmpxchg` on the aligned 32-bit user word at `addr`: if it holds
/// `*expected`, `new` is stored; either way `*expected` gets what it held.
/// Returns 0, or 1 after a fault.
#[unsafe(naked)]
unsafe extern "C" fn cmpxchg_user_raw(addr: *mut u32, expected: *mut u32, new: u32) -> u64 {
    user_access!(
        "user_cmpxchg",
        ["mov eax, dword ptr [rsi]"],
        ["lock cmpxchg dword ptr [rdi], edx"],
        ["mov dword ptr [rsi], eax"]
    )
}

unsafe extern "C" {
    static user_word_start: u8;
    static user_word_end: u8;
    static user_word_fault: u8;
    static user_cmpxchg_start: u8;
    static user_cmpxchg_end: u8;
    static user_cmpxchg_fault: u8;
    static copy_user_start: u8;
    static copy_user_end: u8;
    static copy_user_fault: u8;
    static probe_read_start: u8;
    static probe_read_end: u8;
    static probe_read_fault: u8;
}

/// If `tf` faulted inside the user-copy routine (or the probe), makes it
/// resume at the routine's recovery point and returns true (page-fault
/// handler).
pub fn recover_user_copy(tf: &mut TrapFrame) -> bool {
    // Only the addresses of the labels are taken.
    let routines = [
        (&raw const copy_user_start as u64, &raw const copy_user_end as u64, &raw const copy_user_fault as u64),
        (&raw const probe_read_start as u64, &raw const probe_read_end as u64, &raw const probe_read_fault as u64),
        (&raw const user_word_start as u64, &raw const user_word_end as u64, &raw const user_word_fault as u64),
        (&raw const user_cmpxchg_start as u64, &raw const user_cmpxchg_end as u64, &raw const user_cmpxchg_fault as u64),
    ];
    for (start, end, fault) in routines {
        if tf.cs & 3 == 0 && (start..end).contains(&tf.rip) {
            tf.rip = fault;
            return true;
        }
    }
    false
}

/// True if a plain kernel read of user address `addr` faults (SMAP).
pub fn kernel_read_faults(addr: u64) -> bool {
    // SAFETY: a fault in the probe resumes at its recovery point; a read
    // that succeeds has no effect.
    unsafe { probe_read_raw(addr as *const u8) != 0 }
}

fn user_range_ok(addr: u64, len: usize) -> bool {
    addr.checked_add(len as u64).is_some_and(|end| end <= USER_END)
}

/// Copies from user memory at `src` into `dst`: `Err(EFAULT)` for a bad
/// pointer.
pub fn copy_from_user(dst: &mut [u8], src: u64) -> Result<(), i64> {
    if !user_range_ok(src, dst.len()) {
        return Err(EFAULT);
    }
    // SAFETY: `dst` is a valid kernel buffer; `src..src+len` is in the user
    // half, and a fault there resumes at the recovery point (checked by the
    // page-fault handler) instead of touching anything else.
    match unsafe { copy_user_raw(dst.as_mut_ptr(), src as *const u8, dst.len()) } {
        0 => Ok(()),
        _ => Err(EFAULT),
    }
}

/// Copies `src` to user memory at `dst`: `Err(EFAULT)` for a bad pointer.
pub fn copy_to_user(dst: u64, src: &[u8]) -> Result<(), i64> {
    if !user_range_ok(dst, src.len()) {
        return Err(EFAULT);
    }
    // SAFETY: as in copy_from_user, the other way round.
    match unsafe { copy_user_raw(dst as *mut u8, src.as_ptr(), src.len()) } {
        0 => Ok(()),
        _ => Err(EFAULT),
    }
}

/// Reads the aligned 32-bit word at `addr` in one load: EFAULT for a bad
/// pointer, EINVAL for a misaligned one.
pub fn read_user_u32(addr: u64) -> Result<u32, i64> {
    if !addr.is_multiple_of(4) {
        return Err(crate::syscall::errno::EINVAL);
    }
    if !user_range_ok(addr, 4) {
        return Err(EFAULT);
    }
    let mut v = 0u32;
    // SAFETY: `v` is ours; `addr` is aligned and in the user half, and a
    // fault there resumes at the recovery point.
    match unsafe { load_user_u32(&mut v, addr as *const u32) } {
        0 => Ok(v),
        _ => Err(EFAULT),
    }
}

/// Compare-and-exchange on the aligned 32-bit user word at `addr`: stores
/// `new` if it holds `expected`; returns what it held. EFAULT for a bad
/// pointer (or a page that cannot be written), EINVAL for a misaligned one.
pub fn cmpxchg_user_u32(addr: u64, expected: u32, new: u32) -> Result<u32, i64> {
    if !addr.is_multiple_of(4) {
        return Err(crate::syscall::errno::EINVAL);
    }
    if !user_range_ok(addr, 4) {
        return Err(EFAULT);
    }
    let mut old = expected;
    // SAFETY: as in `read_user_u32`; `old` is ours.
    match unsafe { cmpxchg_user_raw(addr as *mut u32, &mut old, new) } {
        0 => Ok(old),
        _ => Err(EFAULT),
    }
}

/// Copies a NUL-terminated string of at most `max` bytes (without the NUL)
/// from user memory: EFAULT for a bad pointer, ENAMETOOLONG past `max`.
pub fn copy_string(addr: u64, max: usize) -> Result<Vec<u8>, i64> {
    let mut out = Vec::new();
    let mut at = addr;
    loop {
        // Never read past the page the string may end in.
        let chunk = (vm::PAGE_SIZE - (at as usize % vm::PAGE_SIZE)).min(256);
        let mut buf = [0u8; 256];
        copy_from_user(&mut buf[..chunk], at)?;
        if let Some(n) = buf[..chunk].iter().position(|&b| b == 0) {
            out.try_reserve(n).map_err(|_| ENOMEM)?;
            out.extend_from_slice(&buf[..n]);
            return Ok(out);
        }
        out.try_reserve(chunk).map_err(|_| ENOMEM)?;
        out.extend_from_slice(&buf[..chunk]);
        if out.len() > max {
            return Err(ENAMETOOLONG);
        }
        at += chunk as u64;
    }
}
