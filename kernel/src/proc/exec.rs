//! New programs: a process made from an image (`spawn*`, init), and
//! `execve` replacing the current one's address space and image.

use crate::kern::sched;
use crate::mm::vmspace::AddressSpace;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use vm::map::Inherit;
use vm::pmap::Prot;
use x86_64::instructions::interrupts::without_interrupts;

use super::exit::{enter_user, exit_current};
use super::layout::{CODE_BASE, PAGE, STACK_INITIAL, STACK_LIMIT, STACK_TOP};
use super::signal::{SIG_IGN, SIGSEGV, SigAction};
use super::thread::start_first;
use super::{INIT, Process, SpawnError, Status, current, current_pid, current_thread};

/// A new address space with the initial stack mapped.
pub(super) fn new_space() -> Result<Arc<AddressSpace>, SpawnError> {
    new_space_with_stack(STACK_INITIAL)
}

/// A new address space with `stack` bytes of stack mapped below
/// [`STACK_TOP`].
pub(super) fn new_space_with_stack(stack: u64) -> Result<Arc<AddressSpace>, SpawnError> {
    let space = AddressSpace::new().map_err(|_| SpawnError::NoMemory)?;
    space.map.lock().map_stack(STACK_TOP, stack).map_err(|_| SpawnError::NoMemory)?;
    Ok(space)
}

/// The stack an exec maps at first: [`STACK_INITIAL`], or more when the
/// argument block needs it (with the same room to spare below it).
pub(super) fn initial_stack_size(exec: &Exec) -> u64 {
    let need = exec.args.stack_bytes().next_multiple_of(PAGE);
    need.saturating_add(STACK_INITIAL / 2).clamp(STACK_INITIAL, STACK_LIMIT)
}

/// Loads `p`'s address space for the current thread: the first thing every
/// process thread does (it starts in the kernel's).
pub(super) fn become_process(p: Arc<Process>) {
    let space = p.space().expect("a new process has its address space");
    sched::set_address_space(Some(&space.pmap), Arc::as_ptr(&space) as usize);
}

/// Starts `program` (flat code, entered at its first byte) in a new process.
pub fn spawn(name: &str, program: &'static [u8]) -> Result<Arc<Process>, SpawnError> {
    let space = new_space()?;
    let code_len = (program.len() as u64).next_multiple_of(PAGE).max(PAGE);
    space
        .map
        .lock()
        .map(Some(CODE_BASE), code_len, Prot::RW, Prot::ALL, Inherit::Copy, None, false)
        .map_err(|_| SpawnError::NoMemory)?;
    let proc = Arc::new(Process::new(None, name));
    *proc.space.lock() = Some(space);
    proc.update_map_limits();
    let p = proc.clone();
    start_first(name, &proc, move || {
        become_process(p);
        // Load the program through the fault path, then make it read-only
        // and executable.
        if crate::syscall::uaccess::copy_to_user(CODE_BASE, program).is_err() {
            exit_current(Status::Signaled(SIGSEGV));
        }
        if let Some(space) = current().and_then(|me| me.space()) {
            let _ = space.map.lock().protect(CODE_BASE, CODE_BASE + code_len, Prot::READ | Prot::EXEC);
        }
        enter_user(CODE_BASE, STACK_TOP)
    })?;
    Ok(proc)
}

/// Starts a process that runs no program: its thread runs `f` in the
/// kernel, in the process's own address space (its stack mapped, nothing
/// else), with kernel access to user pages allowed, and the process exits
/// with status 0 when `f` returns. For the kernel's own scenarios that set
/// up a process's memory and look at it (`vmstate`).
pub fn spawn_kernel(name: &str, f: impl FnOnce(&Arc<Process>) + Send + 'static) -> Result<Arc<Process>, SpawnError> {
    let proc = Arc::new(Process::new(None, name));
    *proc.space.lock() = Some(new_space()?);
    proc.update_map_limits();
    let p = proc.clone();
    start_first(name, &proc, move || {
        become_process(p.clone());
        crate::arch::cpu::stac();
        f(&p);
        crate::arch::cpu::clac();
        drop(p);
        exit_current(Status::Exited(0))
    })?;
    Ok(proc)
}

/// What a new program image needs: its bytes, arguments and environment.
pub struct Exec {
    pub image: crate::proc::image::Image,
    pub args: crate::proc::elf::ArgBlock,
}

/// A seed for AT_RANDOM.
pub(super) fn random_bytes() -> [u8; 16] {
    let t = crate::kern::time::rdtsc();
    let mut random = [0u8; 16];
    random[..8].copy_from_slice(&t.to_le_bytes());
    random[8..].copy_from_slice(&(t.rotate_left(29) ^ 0x9E37_79B9_7F4A_7C15).to_le_bytes());
    random
}

/// Loads `exec` into `space`, which must be the current thread's address
/// space, and builds the initial stack: returns the entry point, the stack
/// pointer and the end of the image (where the heap starts).
pub(super) fn load_image(space: &AddressSpace, exec: &Exec) -> Result<(u64, u64, u64), crate::proc::elf::ElfError> {
    let loaded = crate::proc::elf::load(space, &exec.image)?;
    let sp = crate::proc::elf::initial_stack(STACK_TOP, &exec.args, &loaded, random_bytes())?;
    Ok((loaded.entry, sp, loaded.end))
}

/// Starts the static ELF executable of `exec` in a new process, a child of
/// `parent` (None: of the kernel).
pub fn spawn_exec(name: &str, exec: Exec, parent: Option<&Arc<Process>>) -> Result<Arc<Process>, SpawnError> {
    // Check the image before a thread exists, so a bad one is an error here.
    crate::proc::elf::check(exec.image.bytes(), exec.image.len()).map_err(SpawnError::Load)?;
    let proc = Arc::new(Process::new(parent, name));
    let stack = initial_stack_size(&exec);
    *proc.space.lock() = Some(new_space_with_stack(stack)?);
    proc.update_map_limits();
    let p = proc.clone();
    start_first(name, &proc, move || {
        become_process(p);
        let Some(space) = current().and_then(|me| me.space()) else { exit_current(Status::Exited(127)) };
        let started = load_image(&space, &exec);
        drop(space);
        drop(exec);
        match started {
            Ok((entry, sp, end)) => {
                if let Some(me) = current() {
                    *me.brk.lock() = (end, end);
                }
                enter_user(entry, sp)
            }
            Err(e) => {
                crate::kprintln!("pid {}: cannot load the program: {e:?}", current_pid());
                exit_current(Status::Exited(127))
            }
        }
    })?;
    if let Some(parent) = parent {
        parent.children.lock().push(proc.clone());
    }
    Ok(proc)
}

/// Starts the static ELF executable `image` in a new process with `argv`.
pub fn spawn_elf(name: &str, image: &'static [u8], argv: &[&str]) -> Result<Arc<Process>, SpawnError> {
    spawn_image(name, crate::proc::image::Image::Static(image), argv)
}

/// Starts the program `image` (embedded, or a file's) in a new process with
/// `argv`.
pub fn spawn_image(name: &str, image: crate::proc::image::Image, argv: &[&str]) -> Result<Arc<Process>, SpawnError> {
    let argv: Vec<&[u8]> = argv.iter().map(|a| a.as_bytes()).collect();
    let args = crate::proc::elf::ArgBlock::from_strs(&argv, &[b"PATH=/bin"]).map_err(SpawnError::Load)?;
    spawn_exec(name, Exec { image, args }, None)
}

/// Starts init (`/bin/init` with `argv`): the parent of orphans.
pub fn start_init(argv: &[&str]) -> Result<Arc<Process>, SpawnError> {
    let p = spawn_elf("init", crate::proc::programs::bin("init"), argv)?;
    *INIT.lock() = Arc::downgrade(&p);
    Ok(p)
}

/// `execve`: replaces the current process's program with `exec`. On
/// success the system call returns into the new program: `tf` is rewritten
/// to its entry. On failure nothing has changed.
pub fn exec(tf: &mut crate::arch::trapframe::TrapFrame, name: &str, exec: Exec) -> Result<(), SpawnError> {
    let me = current().ok_or(SpawnError::NoMemory)?;
    crate::proc::elf::check(exec.image.bytes(), exec.image.len()).map_err(SpawnError::Load)?;
    end_other_threads(&me)?;
    let old = me.space().ok_or(SpawnError::NoMemory)?;
    let stack = initial_stack_size(&exec);
    let space = new_space_with_stack(stack)?;
    sched::set_address_space(Some(&space.pmap), Arc::as_ptr(&space) as usize);
    let (entry, sp, end) = match load_image(&space, &exec) {
        Ok(v) => v,
        Err(e) => {
            sched::set_address_space(Some(&old.pmap), Arc::as_ptr(&old) as usize);
            return Err(SpawnError::Load(e));
        }
    };
    // The point of no return: the old image goes.
    let replaced = without_interrupts(|| me.space.lock().replace(space));
    drop(replaced);
    drop(old);
    // A vfork parent waits for this.
    sched::wakeup(me.chan());
    *me.brk.lock() = (end, end);
    me.lock_future.store(false, Ordering::SeqCst);
    me.lock_future_on_fault.store(false, Ordering::SeqCst);
    me.update_map_limits();
    *me.name.lock() = name.into();
    // Close-on-exec descriptors close.
    let closing: Vec<_> = {
        let mut files = me.files.lock();
        files.iter_mut().filter(|s| s.as_ref().is_some_and(|(_, cloexec)| *cloexec)).filter_map(|s| s.take()).collect()
    };
    drop(closing);
    // Handlers do not survive an exec, nor does the alternate stack;
    // ignored signals stay ignored.
    if let Some(t) = current_thread() {
        *t.altstack.lock() = crate::proc::AltStack::default();
    }
    for a in me.actions.lock().iter_mut() {
        if a.handler != SIG_IGN {
            *a = SigAction::default();
        }
    }
    sched::set_fs_base(0);
    let (cs, ss) = (tf.cs, tf.ss);
    *tf = crate::arch::trapframe::TrapFrame::default();
    tf.cs = cs;
    tf.ss = ss;
    tf.rip = entry;
    tf.rsp = sp;
    tf.rflags = 0x202;
    Ok(())
}

/// Before an `execve` replaces the image: ends every other thread of `me`
/// (the caller's process) and waits until they are gone; the caller then
/// takes the pid as its id, as on Linux. `Interrupted` if the process is
/// being ended meanwhile (the caller then ends on its way out).
fn end_other_threads(me: &Arc<Process>) -> Result<(), SpawnError> {
    let t = current_thread().ok_or(SpawnError::NoMemory)?;
    if me.thread_count() == 1 {
        return Ok(());
    }
    let id = sched::current();
    if me.exec_by.compare_exchange(0, id, Ordering::SeqCst, Ordering::SeqCst).is_err() {
        // Another thread is exec'ing: this one is to end.
        return Err(SpawnError::Interrupted);
    }
    let r = loop {
        if me.group_exit.load(Ordering::SeqCst) != 0
            || super::signal_pending_in(&t) && t.pending_signals() & 1 << (super::SIGKILL - 1) != 0
        {
            break Err(SpawnError::Interrupted);
        }
        if me.thread_count() == 1 {
            break Ok(());
        }
        // Sent again each round: a thread a sibling made meanwhile gets
        // its kill too.
        super::signal::kill_siblings(&t);
        let deadline = crate::kern::time::ticks() + 10;
        sched::sleep_until(me.chan(), deadline, || me.threads.try_lock().is_some_and(|th| th.len() > 1));
    };
    me.exec_by.store(0, Ordering::SeqCst);
    if r.is_ok() && !t.is_leader() {
        t.set_tid(me.pid);
    }
    r
}
