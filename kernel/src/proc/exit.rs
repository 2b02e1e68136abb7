//! The end of a process: entering user mode for good, `exit`, a kill with
//! a report, acting on a signal (each one acted on terminates), and the
//! parent's `wait4`.

use crate::kern::sched;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use x86_64::instructions::interrupts::without_interrupts;

use super::signal::{SIGCHLD, signal_pending, signal_pending_in};
use super::{EXITING, INIT, PENDING_ANY, PROCESSES, Process, Status, current, current_pid};

/// Why `wait4` returned without a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitError {
    /// No such child.
    NoChild,
    /// A signal ended the wait.
    Interrupted,
}

/// Which children a wait is for, by the signal they send their parent at
/// exit (Linux's `__WALL` and `__WCLONE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitKind {
    /// Those that send SIGCHLD (a plain wait).
    Normal,
    /// Those that send another signal or none (`__WCLONE`).
    Clone,
    /// Every child (`__WALL`).
    All,
}

/// `wait4(pid, …)`: waits for a child of `kind` (any if `pid` is -1) to
/// end, removes it, and returns its pid and status; with `nohang`,
/// `Ok(None)` if none has ended yet.
pub fn wait_child(pid: i64, nohang: bool, kind: WaitKind) -> Result<Option<(u64, Status)>, WaitError> {
    let me = current().ok_or(WaitError::NoChild)?;
    let matches = |c: &Arc<Process>| {
        let clone_child = c.exit_signal.load(Ordering::SeqCst) != SIGCHLD;
        let kind_matches = match kind {
            WaitKind::All => true,
            WaitKind::Clone => clone_child,
            WaitKind::Normal => !clone_child,
        };
        (pid == -1 || c.pid as i64 == pid) && kind_matches
    };
    loop {
        {
            let mut children = me.children.lock();
            if !children.iter().any(matches) {
                return Err(WaitError::NoChild);
            }
            if let Some(i) = children.iter().position(|c| matches(c) && c.status().is_some()) {
                let c = children.remove(i);
                let status = c.status().unwrap_or(Status::Exited(0));
                return Ok(Some((c.pid, status)));
            }
        }
        if nohang {
            return Ok(None);
        }
        if signal_pending() {
            return Err(WaitError::Interrupted);
        }
        // The children's lock is only tried under the scheduler lock: if it
        // is held, go round again rather than wait for it there.
        sched::sleep_if(me.chan(), || {
            me.children.try_lock().is_some_and(|ch| !ch.iter().any(|c| matches(c) && c.status().is_some()))
                && !signal_pending_in(&me)
        });
    }
}

/// Returns to user mode with the registers of `tf`.
///
/// `tf` may be anywhere (fork's is in the new thread's entry closure, on
/// the kernel heap), so it is first copied onto the running kernel stack,
/// with interrupts off, and restored from there. RSP must never point at
/// the frame itself while a trap can be taken: the CPU would push its
/// frame, and the handler its calls, over whatever lies below `tf`.
/// `iretq` turns interrupts back on with the user's RFLAGS.
///
/// # Safety
/// `tf` is a user-mode frame (user CS and SS, canonical user RIP and RSP),
/// not within the stack below the caller's RSP.
#[unsafe(naked)]
pub(super) unsafe extern "C" fn resume_user(tf: *const crate::arch::trapframe::TrapFrame) -> ! {
    core::arch::naked_asm!(
        "cli",
        "sub rsp, {size}",
        "mov rsi, rdi",
        "mov rdi, rsp",
        "mov ecx, {words}",
        "rep movsq",
        "jmp {ret}",
        size = const core::mem::size_of::<crate::arch::trapframe::TrapFrame>(),
        words = const core::mem::size_of::<crate::arch::trapframe::TrapFrame>() / 8,
        ret = sym crate::arch::idt::trap_return,
    )
}

/// Enters user mode at `rip` with stack `rsp`; never returns.
pub(super) fn enter_user(rip: u64, rsp: u64) -> ! {
    use crate::arch::gdt::{USER_CODE_SELECTOR, USER_DATA_SELECTOR};
    // SAFETY: builds an interrupt-return frame to ring 3 with the user
    // selectors, interrupts enabled in the user context, and the given
    // address and stack in the current address space; general registers are
    // cleared so nothing of the kernel leaks to the program.
    unsafe {
        core::arch::asm!(
            "push {ss}", "push {rsp}", "push 0x202", "push {cs}", "push {rip}",
            "xor eax, eax", "xor ebx, ebx", "xor ecx, ecx", "xor edx, edx", "xor esi, esi",
            "xor edi, edi", "xor ebp, ebp", "xor r8d, r8d", "xor r9d, r9d", "xor r10d, r10d",
            "xor r11d, r11d", "xor r12d, r12d", "xor r13d, r13d", "xor r14d, r14d", "xor r15d, r15d",
            "iretq",
            ss = in(reg) USER_DATA_SELECTOR as u64,
            rsp = in(reg) rsp,
            cs = in(reg) USER_CODE_SELECTOR as u64,
            rip = in(reg) rip,
            options(noreturn),
        )
    }
}

/// Ends the current process with `status`: frees its address space, hands
/// its children to init, records the status, wakes whoever waits (its
/// parent, a kernel waiter) and ends the thread.
pub fn exit_current(status: Status) -> ! {
    // Tearing the address space down may wait (for pages being paged out,
    // for paging in progress): with interrupts on, whatever the way here
    // (a trap handler comes with them off).
    x86_64::instructions::interrupts::enable();
    let me = without_interrupts(|| {
        let mut processes = PROCESSES.lock();
        let me = processes.remove(&sched::current());
        if me.is_some() {
            EXITING.fetch_add(1, Ordering::SeqCst);
        }
        me
    });
    sched::set_address_space(0, 0);
    if let Some(p) = me {
        let space = without_interrupts(|| p.space.lock().take());
        drop(space);
        let files = core::mem::take(&mut *p.files.lock());
        drop(files);
        if p.pending.swap(0, Ordering::SeqCst) != 0 {
            PENDING_ANY.fetch_sub(1, Ordering::SeqCst);
        }
        let orphans = core::mem::take(&mut *p.children.lock());
        let init = INIT.lock().upgrade().filter(|i| !Arc::ptr_eq(i, &p) && i.status().is_none());
        if let Some(init) = init {
            for c in &orphans {
                c.ppid.store(init.pid, Ordering::SeqCst);
                *c.parent.lock() = Arc::downgrade(&init);
            }
            init.children.lock().extend(orphans);
            sched::wakeup(init.chan());
        }
        p.status.store(1 << 16 | status.wstatus(), Ordering::SeqCst);
        EXITING.fetch_sub(1, Ordering::SeqCst);
        sched::wakeup(p.chan());
        if let Some(parent) = p.parent.lock().upgrade() {
            // The exit signal (SIGCHLD unless clone said otherwise; its
            // default is to be ignored) with the child's pid and status.
            let sig = p.exit_signal.load(Ordering::SeqCst);
            if sig != 0 && sig <= super::NSIG && parent.status().is_none() {
                let (code, value2) = match status {
                    Status::Exited(c) => (super::CLD_EXITED, c as u8 as u64),
                    Status::Signaled(s) => (super::CLD_KILLED, s as u64),
                };
                let info = super::SigInfo { code, value: p.pid & 0xffff_ffff, value2, fault: None };
                super::send_signal_info(&parent, sig, info);
            }
            sched::wakeup(parent.chan());
        }
    }
    sched::exit()
}

/// Kills the current process for an exception taken in user mode.
///
/// Neither this nor its callers may hold anything owned (a `String`, an
/// `Arc`) when `exit_current` is called: it never returns, so such a value
/// is never dropped. The report is made in its own frame, which is gone by
/// then, and `what` is formatted in place, not into a heap string (a
/// cloned name and a formatted message here once cost 64 bytes of heap
/// per crashed process).
pub fn kill_current(signal: u8, what: core::fmt::Arguments<'_>, addr: u64, rip: u64) -> ! {
    report_kill(signal, what, addr, rip);
    exit_current(Status::Signaled(signal))
}

/// The console line of [`kill_current`]: printed under the name's lock, so
/// nothing is copied.
pub(super) fn report_kill(signal: u8, what: core::fmt::Arguments<'_>, addr: u64, rip: u64) {
    let pid = current_pid();
    match current() {
        Some(p) => {
            let name = p.name.lock();
            crate::kprintln!("pid {pid} ({name}): killed by signal {signal}: {what} at {addr:#x}, rip {rip:#x}");
        }
        None => crate::kprintln!("pid {pid} (): killed by signal {signal}: {what} at {addr:#x}, rip {rip:#x}"),
    }
}
