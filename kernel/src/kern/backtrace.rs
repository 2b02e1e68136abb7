//! Frame-pointer backtraces.
//!
//! The kernel is built with frame pointers (`.cargo/config.toml`), so each
//! frame starts with the caller's RBP followed by the return address:
//!
//! ```text
//!   [rbp + 8]  return address into the caller
//!   [rbp]      caller's rbp  ──► next frame
//! ```
//!
//! The walk stops at a null, misaligned or unmapped frame pointer, at a frame
//! that does not move up the stack (except when it leaves an IST stack for the
//! interrupted stack), or after [`MAX_FRAMES`]. Code built without frame
//! pointers (parts of `core`) is skipped over rather than shown.

use core::fmt::Write;

use crate::arch::gdt;
use crate::arch::paging::is_mapped;
use crate::kern::ksyms;

pub const MAX_FRAMES: usize = 48;

fn on_ist_stack(addr: u64) -> bool {
    (1..=4).any(|ist| {
        let (lo, hi) = gdt::ist_stack_range(ist);
        (lo..hi).contains(&addr)
    })
}

/// Calls `f(frame number, return address)` for each frame, starting with `pc`.
pub fn walk(pc: u64, mut rbp: u64, mut f: impl FnMut(usize, u64)) {
    f(0, pc);
    for n in 1..MAX_FRAMES {
        if rbp == 0 || !rbp.is_multiple_of(8) || !is_mapped(rbp, 16) {
            return;
        }
        // SAFETY: [rbp, rbp+16) is mapped (checked above) and aligned; reading
        // it has no side effects even if it is not really a frame.
        let (next, ret) = unsafe { (*(rbp as *const u64), *((rbp + 8) as *const u64)) };
        if ret == 0 {
            return;
        }
        f(n, ret);
        let moves_up = next > rbp;
        let leaves_ist = on_ist_stack(rbp) && !on_ist_stack(next);
        if !(moves_up || leaves_ist) {
            return;
        }
        rbp = next;
    }
}

/// Writes a backtrace starting at `pc` with frame pointer `rbp`. Runs of the
/// same return address (deep recursion) are folded into one line.
pub fn write_from(w: &mut dyn Write, pc: u64, rbp: u64) {
    let _ = writeln!(w, "backtrace:");
    let mut last = None;
    let mut repeats = 0;
    let flush = |w: &mut dyn Write, repeats: &mut usize| {
        if *repeats > 0 {
            let _ = writeln!(w, "      ... the frame above {} more time(s)", *repeats);
            *repeats = 0;
        }
    };
    walk(pc, rbp, |n, addr| {
        if n > 0 && last == Some(addr) {
            repeats += 1;
            return;
        }
        flush(w, &mut repeats);
        last = Some(addr);
        let _ = write!(w, "  #{n:<2} {addr:#018x}");
        // Return addresses point after the call: name the call's own byte.
        ksyms::write_symbol(w, if n == 0 { addr } else { addr - 1 });
        let _ = writeln!(w);
    });
    flush(w, &mut repeats);
}

/// Writes a backtrace of the caller.
#[inline(always)]
pub fn write_here(w: &mut dyn Write) {
    let rbp: u64;
    let rip: u64;
    // SAFETY: reads RBP and the current RIP; no memory is touched.
    unsafe {
        core::arch::asm!("mov {}, rbp", "lea {}, [rip]", out(reg) rbp, out(reg) rip,
            options(nomem, nostack, preserves_flags));
    }
    write_from(w, rip, rbp);
}
