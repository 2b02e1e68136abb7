//! User memory, reached from the kernel: [`copy_from_user`],
//! [`copy_to_user`] and [`copy_string`] check that a range lies in the
//! user half, then copy with the one routine allowed to touch user pages
//! (with SMAP, it alone runs with RFLAGS.AC set). A fault the VM cannot
//! resolve inside it resumes at its recovery point
//! ([`recover_user_copy`], from the page-fault handler) and the copy
//! returns EFAULT. A leaf: every system call and the ELF loader use it.

use alloc::vec::Vec;
use core::arch::naked_asm;

use crate::arch::pmap::USER_END;
use crate::arch::trapframe::TrapFrame;
use crate::syscall::errno::{EFAULT, ENAMETOOLONG, ENOMEM};

/// Copies `len` bytes from `src` to `dst`; a fault the VM cannot resolve
/// resumes at `copy_user_fault`. Returns 0, or 1 after a fault. With SMAP the
/// copy runs with RFLAGS.AC set (`stac` ... `clac`), the only kernel code
/// that may touch user pages.
#[unsafe(naked)]
unsafe extern "C" fn copy_user_raw(dst: *mut u8, src: *const u8, len: usize) -> u64 {
    naked_asm!(
        "cmp byte ptr [rip + {smap}], 0",
        "je 2f",
        "stac",
        "2:",
        ".global copy_user_start",
        "copy_user_start:",
        "mov rcx, rdx",
        "rep movsb",
        ".global copy_user_end",
        "copy_user_end:",
        "xor eax, eax",
        "jmp 3f",
        ".global copy_user_fault",
        "copy_user_fault:",
        "mov eax, 1",
        "3:",
        "cmp byte ptr [rip + {smap}], 0",
        "je 4f",
        "clac",
        "4:",
        "ret",
        smap = sym crate::arch::cpu::SMAP_ON,
    )
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

unsafe extern "C" {
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
