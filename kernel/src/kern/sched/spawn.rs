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
        fs_base: 0,
        fpu,
        wake_at: 0,
        rsp: 0,
        stack,
        entry,
        next: ptr::null_mut(),
        ready_next: ptr::null_mut(),
        queued: false,
        held: vm::witness::Held::new(),
    }
}

/// Makes the running (boot) context thread 0, "main".
pub fn init() {
    init_fpu();
    let main = Box::into_raw(Box::new(new_record(0, "main".into(), None, None, None)));
    interrupts::without_interrupts(|| {
        // SAFETY: the record was just made and is not shared yet.
        unsafe { (*main).state = State::Running };
        *SCHED.lock() = Some(Sched {
            all: main,
            ready_head: ptr::null_mut(),
            ready_tail: ptr::null_mut(),
            current: main,
            count: 1,
            dead: 0,
            next_id: 1,
            slice_end: 0,
            next_timeout: u64::MAX,
        });
        // SAFETY: as above; the boot thread's record lives for ever.
        CURRENT_HELD.store(unsafe { &raw mut (*main).held }, Ordering::Relaxed);
        KERNEL_CR3.store(x86_64::registers::control::Cr3::read_raw().0.start_address().as_u64(), Ordering::Relaxed);
    });
}

/// Where a new thread starts: runs its entry with interrupts on, then exits.
extern "C" fn thread_start() -> ! {
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
            let (cr3, sp) = match space {
                Some(sp) => sp,
                None => (s.cur().cr3, s.cur().space),
            };
            // SAFETY: `t` is the record made by `prepare`, not yet shared.
            unsafe {
                (*t).id = id;
                (*t).cr3 = cr3;
                (*t).space = sp;
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
