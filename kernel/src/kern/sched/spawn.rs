//! Making threads: the record and its first stack frame (so that the first
//! switch to it "returns" into `thread_start`), the FPU state it starts
//! with, and the boot thread's own record. Records are allocated here,
//! before the scheduler lock is taken (nothing under it allocates).

use super::*;

/// An FXSAVE area.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
pub struct FpuArea(pub(super) [u8; 512]);

/// The clean x87/SSE state new threads start with.
static FPU_INITIAL: spin::Once<FpuArea> = spin::Once::new();

/// Enables SSE for user programs (CR0.MP and NE on, EM off; CR4.OSFXSR and
/// OSXMMEXCPT on) and records the clean state threads start with.
fn init_fpu() {
    use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
    // SAFETY: setting these bits enables SSE instructions and FXSAVE; the
    // kernel itself is built without SSE, so nothing changes for it.
    unsafe {
        Cr0::update(|f| {
            f.remove(Cr0Flags::EMULATE_COPROCESSOR);
            f.insert(Cr0Flags::MONITOR_COPROCESSOR);
            // x87 errors as #MF, not the legacy external interrupt.
            f.insert(Cr0Flags::NUMERIC_ERROR);
        });
        Cr4::update(|f| f.insert(Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE));
    }
    let mut area = FpuArea([0; 512]);
    // SAFETY: fninit resets the x87 state; the area is ours and aligned.
    unsafe {
        core::arch::asm!("fninit");
        core::arch::x86_64::_fxsave64(area.0.as_mut_ptr());
    }
    FPU_INITIAL.call_once(|| area);
}

/// A fresh thread record, not yet linked.
fn new_record(
    id: ThreadId,
    name: String,
    stack: Option<crate::kern::kmem::KStack>,
    fpu: Option<Box<FpuArea>>,
    entry: Option<Entry>,
) -> Thread {
    Thread {
        id,
        name,
        state: State::Ready,
        cr3: 0,
        space: 0,
        cpus: ptr::null(),
        fs_base: 0,
        fpu,
        wake_at: 0,
        rsp: 0,
        stack,
        entry,
        next: ptr::null_mut(),
        ready_next: ptr::null_mut(),
        queued: false,
        affinity: u64::MAX,
        cpu: 0,
        held: vm::witness::Held::new(),
    }
}

/// The ids of the idle threads: `IDLE_ID + cpu`, beyond any a thread gets.
pub const IDLE_ID: ThreadId = u64::MAX - MAX_CPUS as u64;

/// Makes the running (boot) context thread 0, "main", on the boot CPU,
/// and gives the boot CPU its idle thread.
pub fn init() {
    init_fpu();
    let main = Box::into_raw(Box::new(new_record(0, "main".into(), None, None, None)));
    let idle = prepare("idle0", None, || super::idle_loop()).expect("no memory for the boot CPU's idle thread").into_raw();
    interrupts::without_interrupts(|| {
        // SAFETY: the records were just made and are not shared yet.
        unsafe {
            (*main).state = State::Running;
            (*idle).id = IDLE_ID;
            (*idle).affinity = 1;
            // The idle thread runs no user code: no FPU state to switch.
            (*idle).fpu = None;
        }
        let mut cpus = [CpuSched { current: ptr::null_mut(), idle: ptr::null_mut() }; MAX_CPUS];
        cpus[0] = CpuSched { current: main, idle };
        *SCHED.lock() = Some(Sched {
            all: main,
            ready_head: ptr::null_mut(),
            ready_tail: ptr::null_mut(),
            cpus,
            halted: 0,
            count: 1,
            dead: 0,
            next_id: 1,
            next_timeout: u64::MAX,
        });
        let cpu = percpu::this();
        // SAFETY: as above; the boot thread's record lives for ever.
        cpu.held.store(unsafe { &raw mut (*main).held }, Ordering::Relaxed);
        cpu.thread.store(0, Ordering::Relaxed);
        KERNEL_CR3.store(x86_64::registers::control::Cr3::read_raw().0.start_address().as_u64(), Ordering::Relaxed);
    });
}

/// Makes the running context of a started AP its idle thread, so that the
/// AP can take part. Called on the AP with interrupts off; it then starts
/// its timer and calls [`run_idle`]. Fails when memory is short (the AP
/// then stays out).
pub fn join_cpu() -> Result<(), ()> {
    let cpu = percpu::this();
    let me = cpu.id as usize;
    let mut name = String::new();
    let _ = write!(name, "idle{me}");
    let rec = Box::into_raw(Box::try_new(new_record(IDLE_ID + me as u64, name, None, None, None)).map_err(|_| ())?);
    // SAFETY: the record was just made and is not shared yet.
    unsafe {
        (*rec).state = State::Running;
        (*rec).cpu = me as u32;
        (*rec).affinity = 1 << me;
        cpu.held.store(&raw mut (*rec).held, Ordering::Relaxed);
    }
    cpu.thread.store(IDLE_ID + me as u64, Ordering::Relaxed);
    SLICE_END[me].store(u64::MAX, Ordering::Relaxed);
    let mut g = SCHED.lock();
    let s = g.as_mut().ok_or(())?;
    s.cpus[me] = CpuSched { current: rec, idle: rec };
    Ok(())
}

/// The AP's last step: it idles, taking threads as they become ready.
pub fn run_idle() -> ! {
    super::idle_loop()
}

/// Where a new thread starts: lets go of the scheduler lock handed over by
/// the switch into it, runs its entry with interrupts on, then exits.
extern "C" fn thread_start() -> ! {
    // SAFETY: the first code of a new thread, after the switch into it.
    unsafe { SCHED.unlock_handed_over() };
    // The switch that started the thread, counted here as the others are
    // on their way back into `schedule`.
    SWITCHES.fetch_add(1, Ordering::Relaxed);
    let entry = interrupts::without_interrupts(|| SCHED.lock().as_mut().and_then(|s| s.cur().entry.take()));
    interrupts::enable();
    if let Some(f) = entry {
        f.run();
    }
    exit()
}

/// Starts a kernel thread running `f` in the current thread's address
/// space. Fails (`None`) when memory is short.
pub fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Option<ThreadId> {
    spawn_in(name, None, f)
}

/// Starts a kernel thread running `f` in the kernel's address space: for a
/// thread that sets its own (a process's), which must not start in its
/// creator's, which may be gone by the time it first runs.
pub fn spawn_detached(name: &str, f: impl FnOnce() + Send + 'static) -> Option<ThreadId> {
    spawn_in(name, Some((0, 0)), f)
}

/// Starts a thread; `space` is its (cr3, address space), or None for the
/// creator's.
fn spawn_in(name: &str, space: Option<(u64, usize)>, f: impl FnOnce() + Send + 'static) -> Option<ThreadId> {
    prepare(name, space, f)?.start().ok()
}

/// A thread made but not started: its record, stack and entry, allocated
/// (with interrupts on: the stack's pages come from the page allocator)
/// before anything needs the scheduler lock. Dropped unstarted, it frees
/// them.
pub struct NewThread {
    t: *mut Thread,
    /// (cr3, address space), or None for the starter's.
    space: Option<(u64, usize)>,
}

/// Makes a thread that will run `f` in the kernel's address space (see
/// [`spawn_detached`]), to be started by [`NewThread::start`] — which
/// allocates nothing, so a caller may start it with interrupts off (to
/// publish its id atomically with its start). `None` when memory is short.
pub fn prepare_detached(name: &str, f: impl FnOnce() + Send + 'static) -> Option<NewThread> {
    prepare(name, Some((0, 0)), f)
}

/// Makes a thread that will run `f` in the kernel's address space, for
/// the scheduler's own threads.
pub(super) fn prepare_kernel(name: &str, f: impl FnOnce() + Send + 'static) -> Option<NewThread> {
    prepare(name, Some((0, 0)), f)
}

fn prepare(name: &str, space: Option<(u64, usize)>, f: impl FnOnce() + Send + 'static) -> Option<NewThread> {
    reap();
    let stack = crate::kern::kmem::KStack::new(STACK_SIZE).ok()?;
    // The frame switch_stack pops: rflags, r15, r14, r13, r12, rbx, rbp, ret,
    // two words below the top (the entry 16-byte aligned after `ret`).
    let frame = [0x2u64, 0, 0, 0, 0, 0, 0, thread_start as *const () as u64];
    let rsp = stack.top() - 16 - 8 * frame.len() as u64;
    // SAFETY: the stack's pages are mapped, writable and this thread's
    // alone; the canary is its lowest word, the frame lies below its top.
    unsafe {
        (stack.bottom() as *mut u64).write(CANARY);
        core::ptr::copy_nonoverlapping(frame.as_ptr(), rsp as *mut u64, frame.len());
    }
    let entry = Entry::new(f)?;
    let fpu = Box::try_new(FPU_INITIAL.get().copied().unwrap_or(FpuArea([0; 512]))).ok()?;
    let mut owned = String::new();
    owned.try_reserve_exact(name.len()).ok()?;
    owned.push_str(name);
    let mut record = new_record(0, owned, Some(stack), Some(fpu), Some(entry));
    record.rsp = rsp;
    let t = Box::into_raw(Box::try_new(record).ok()?);
    Some(NewThread { t, space })
}

impl NewThread {
    /// Restricts the thread to CPU `cpu` from its first run.
    pub fn pinned(self, cpu: usize) -> NewThread {
        // SAFETY: not started, so the record is still ours alone.
        unsafe { (*self.t).affinity = 1 << cpu };
        self
    }

    /// The record, the scheduler's from now on (an idle thread's).
    fn into_raw(self) -> *mut Thread {
        let t = self.t;
        core::mem::forget(self);
        t
    }

    /// Makes the thread ready to run and returns its id; before the
    /// scheduler exists, gives the thread back (for the caller to drop
    /// with interrupts on: its stack goes back to the page allocator).
    /// Allocates and frees nothing.
    pub fn start(self) -> Result<ThreadId, NewThread> {
        let (t, space) = (self.t, self.space);
        let linked = interrupts::without_interrupts(|| {
            let mut g = SCHED.lock();
            let s = g.as_mut()?;
            let id = s.next_id;
            s.next_id += 1;
            let (cr3, sp, cpus) = match space {
                Some((cr3, sp)) => (cr3, sp, ptr::null()),
                None => (s.cur().cr3, s.cur().space, s.cur().cpus),
            };
            // SAFETY: `t` is the record made by `prepare`, not yet shared.
            unsafe {
                (*t).id = id;
                (*t).cr3 = cr3;
                (*t).space = sp;
                (*t).cpus = cpus;
            }
            s.link(t);
            Some(id)
        });
        match linked {
            Some(id) => {
                // Linked: the record is the scheduler's now.
                core::mem::forget(self);
                Ok(id)
            }
            None => Err(self),
        }
    }
}

impl Drop for NewThread {
    fn drop(&mut self) {
        // SAFETY: never started, so the record is still ours alone.
        drop(unsafe { Box::from_raw(self.t) });
    }
}
