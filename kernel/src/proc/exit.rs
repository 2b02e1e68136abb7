//! The end of a process: entering user mode for good, `exit`, a kill with
//! a report, acting on a signal (each one acted on terminates), and the
//! parent's `wait4`.

use crate::kern::sched;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use x86_64::instructions::interrupts::without_interrupts;

use super::signal::{SIGCHLD, clear_pending, kill_siblings, signal_pending, signal_pending_in, wake_taker};
use super::{EXITING, INIT, Process, Status, TABLE, Thread, current, current_pid, current_thread};

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
    let my_thread = current_thread().ok_or(WaitError::NoChild)?;
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
                && !signal_pending_in(&my_thread)
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
    // cleared so nothing of the kernel leaks to the program. Interrupts
    // go off before the user's GS base comes back (`arch::percpu`): an
    // interrupt between `swapgs` and `iretq` would find the saved CS the
    // kernel's and keep the user's GS base.
    unsafe {
        core::arch::asm!(
            "cli",
            "push {ss}", "push {rsp}", "push 0x202", "push {cs}", "push {rip}",
            "xor eax, eax", "xor ebx, ebx", "xor ecx, ecx", "xor edx, edx", "xor esi, esi",
            "xor edi, edi", "xor ebp, ebp", "xor r8d, r8d", "xor r9d, r9d", "xor r10d, r10d",
            "xor r11d, r11d", "xor r12d, r12d", "xor r13d, r13d", "xor r14d, r14d", "xor r15d, r15d",
            "swapgs",
            "iretq",
            ss = in(reg) USER_DATA_SELECTOR as u64,
            rsp = in(reg) rsp,
            cs = in(reg) USER_CODE_SELECTOR as u64,
            rip = in(reg) rip,
            options(noreturn),
        )
    }
}

/// `exit_group`, and every end of a whole process (a fatal signal, a
/// kill): records `status` as the process's (unless another thread ended
/// it first), ends every other thread, and ends this one.
pub fn exit_current(status: Status) -> ! {
    if let Some(t) = current_thread() {
        let _ = t.process.group_exit.compare_exchange(0, 1 << 16 | status.wstatus(), Ordering::SeqCst, Ordering::SeqCst);
        kill_siblings(&t);
    }
    exit_thread(status)
}

/// `exit`: ends the current thread with `own` as its status. The last
/// thread of a process ends the process (below); its status is the one
/// `exit_group` or a fatal signal gave, else the last thread's own (as
/// Linux reports it).
///
/// A thread with a clear-child-tid word whose address space lives on (in a
/// sibling, or a process sharing it) has 0 written there and one futex
/// waiter woken: what `pthread_join` waits for.
pub fn exit_thread(own: Status) -> ! {
    // Tearing the address space down may wait (for pages being paged out,
    // for paging in progress): with interrupts on, whatever the way here
    // (a trap handler comes with them off).
    x86_64::instructions::interrupts::enable();
    if let Some(t) = current_thread() {
        // Gone to tkill before a joiner can be woken: on another CPU it may
        // look while this thread is still in the tables.
        t.exiting.store(true, Ordering::SeqCst);
        clear_child_tid(&t);
    }
    // Off the address space before leaving the tables: once this thread is
    // not counted, a sibling's execve (or the last thread's end) may free
    // the page tables it would otherwise still run on.
    sched::set_address_space(None, 0);
    let ended = without_interrupts(|| {
        let mut table = TABLE.lock();
        let t = table.threads.remove(&sched::current())?;
        let mut threads = t.process.threads.lock();
        let mine = threads.iter().position(|x| Arc::ptr_eq(x, &t)).map(|i| threads.remove(i));
        let last = threads.is_empty();
        drop(threads);
        if last {
            table.processes.remove(&t.process.pid);
            EXITING.fetch_add(1, Ordering::SeqCst);
        }
        Some((t, mine, last))
    });
    if let Some((t, mine, last)) = ended {
        drop(mine);
        clear_pending(&t.pending);
        let p = t.process.clone();
        drop(t);
        if last {
            let status = match p.group_exit.load(Ordering::SeqCst) {
                0 => own,
                w => Status::from_wstatus(w & 0xffff),
            };
            end_process(&p, status);
        } else {
            // Signals only this thread could take go to another; an exec
            // waiting for the others to end looks again.
            let pending = p.pending_signals();
            if pending != 0 {
                wake_taker(&p, pending);
            }
            sched::wakeup(p.chan());
        }
    }
    sched::exit()
}

/// The clear-child-tid of thread `t`, at its end: 0 written and a waiter
/// woken, when the address space outlives the thread.
fn clear_child_tid(t: &Thread) {
    let at = t.clear_child_tid.swap(0, Ordering::SeqCst);
    if at == 0 {
        return;
    }
    let shared = t.process.thread_count() > 1 || t.process.space().is_some_and(|s| Arc::strong_count(&s) > 2);
    if shared && crate::syscall::uaccess::copy_to_user(at, &0u32.to_le_bytes()).is_ok() {
        let _ = super::futex::wake(at, false, 1, super::futex::BITSET_ANY);
    }
}

/// The end of process `p`, by its last thread: frees its address space
/// and files, hands its children to init, records `status`, wakes whoever
/// waits (its parent, a kernel waiter) and sends its parent the exit
/// signal.
fn end_process(p: &Arc<Process>, status: Status) {
    let space = without_interrupts(|| p.space.lock().take());
    drop(space);
    let files = core::mem::take(&mut *p.files.lock());
    drop(files);
    clear_pending(&p.pending);
    let orphans = core::mem::take(&mut *p.children.lock());
    let init = INIT.lock().upgrade().filter(|i| !Arc::ptr_eq(i, p) && i.status().is_none());
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

/// Kills the current process for an exception taken in user mode.
///
/// Neither this nor its callers may hold anything owned (a `String`, an
/// `Arc`) when `exit_current` is called: it never returns, so such a value
/// is never dropped. The report is made in its own frame, which is gone by
/// then, and `what` is formatted in place, not into a heap string (a
/// cloned name and a formatted message here once cost 64 bytes of heap
/// per crashed process).
pub fn kill_current(signal: u8, what: core::fmt::Arguments<'_>, addr: u64, rip: u64) -> ! {
    // The report takes the name's lock, which a sibling thread may hold
    // while preempted: interrupts on first (a trap handler comes with them
    // off; the exit turns them on anyway).
    x86_64::instructions::interrupts::enable();
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
