mod raw;

use ktest::ktest;

use super::*;

/// `/bin/<name>` from the root filesystem, where every program of `user/`
/// is (the test boot attaches it).
pub(crate) fn bin(name: &str) -> crate::proc::image::Image {
    let path = alloc::format!("/bin/{name}");
    crate::proc::image::program(path.as_bytes()).unwrap_or_else(|e| panic!("{path} on the root filesystem: {e:?}"))
}

fn run(name: &str) -> Status {
    let p = spawn(name, raw::builtin(name).unwrap()).unwrap();
    p.wait()
}

/// The watchdog's NMIs (20 a second) land anywhere in a program that
/// makes system calls back to back: in user mode, and in the `syscall`
/// entry and exit, where the GS base is the user's although the saved CS
/// says kernel. The NMI entry asks the MSR, and the handler reaches its
/// CPU's block; a wrong GS base would fault in the handler or leave the
/// kernel running on the user's.
#[ktest(timeout = 120)]
fn nmis_land_in_system_calls_and_user_mode() {
    use crate::arch::watchdog::NMIS;
    let before = NMIS.load(Ordering::Relaxed);
    let mut runs = 0;
    while NMIS.load(Ordering::Relaxed) < before + 20 {
        assert_eq!(run("syscalls"), Status::Exited(0));
        runs += 1;
    }
    assert!(crate::arch::percpu::gs_is_kernel());
    log::info!("{} NMIs over {runs} runs of 300,000 system calls", NMIS.load(Ordering::Relaxed) - before);
}

/// A program writes to the console and exits with write's result.
#[ktest]
fn hello_from_user_mode() {
    assert_eq!(run("hello"), Status::Exited(21));
}

/// A bad pointer to write is EFAULT, not a kernel fault.
#[ktest]
fn bad_pointer_is_efault() {
    assert_eq!(run("efault"), Status::Exited(14));
}

/// A store to an unmapped address kills only the process, with SIGSEGV.
#[ktest]
fn unmapped_store_is_sigsegv() {
    assert_eq!(run("segv"), Status::Signaled(SIGSEGV));
    assert_eq!(run("hello"), Status::Exited(21), "the kernel goes on");
}

/// A store to read-only memory kills the process with SIGSEGV.
#[ktest]
fn read_only_store_is_sigsegv() {
    assert_eq!(run("rowrite"), Status::Signaled(SIGSEGV));
}

/// A process killed by a fault leaves nothing on the heap: the kill
/// never returns to the frames that report it, so nothing they own may
/// still be alive then (each crash once kept its formatted message and
/// a copy of the process's name, 64 bytes).
#[ktest]
fn a_process_killed_by_a_fault_leaves_no_heap_behind() {
    // With the ended threads reaped (on other CPUs they may still be on
    // their way out when the process is reported ended).
    let threads = crate::devtools::ktest_runner::settled_threads(usize::MAX);
    let measure = || {
        end_the_rest();
        crate::devtools::ktest_runner::settled_threads(threads);
        crate::kern::heap::usage().0
    };
    for name in ["segv", "rowrite"] {
        assert_eq!(run(name), Status::Signaled(SIGSEGV));
        let before = measure();
        for _ in 0..3 {
            assert_eq!(run(name), Status::Signaled(SIGSEGV));
        }
        assert_eq!(measure(), before, "heap bytes in use before and after three kills of {name}");
    }
}

/// A forked child enters user mode with `resume_user` from a frame that
/// is not on its kernel stack (fork's is in the thread's entry closure,
/// on the heap). A trap taken on the way (the timer's, in the fuzz
/// test) must be pushed on the thread's own stack: when `resume_user`
/// pointed RSP at the frame itself, the CPU pushed the interrupt frame,
/// and the handler its calls, over whatever heap objects lay below it
/// (vm_objects, map entries), which later faults found corrupted. A
/// hardware breakpoint on `trap_return` makes the trap come at the
/// worst instruction every time; the frame sits at the top of a buffer
/// of a known pattern.
#[ktest]
fn a_frame_off_the_stack_is_not_used_as_one() {
    use crate::arch::breakpoint::{BREAK_ONCE_FRAME, break_once_at};
    use crate::arch::gdt::{USER_CODE_SELECTOR, USER_DATA_SELECTOR};
    use crate::arch::idt::trap_return;
    use crate::arch::trapframe::TrapFrame;

    const PATTERN: u64 = 0x5EED_F00D_5EED_F00D;
    const WORDS: usize = 2048;
    let frame_words = core::mem::size_of::<TrapFrame>() / 8;
    let mut buf: Vec<u64> = alloc::vec![PATTERN; WORDS];
    let frame = TrapFrame {
        rip: CODE_BASE,
        cs: USER_CODE_SELECTOR as u64,
        rflags: 0x202,
        rsp: STACK_TOP,
        ss: USER_DATA_SELECTOR as u64,
        ..TrapFrame::default()
    };
    let at = buf[WORDS - frame_words..].as_mut_ptr() as *mut TrapFrame;
    // SAFETY: the last words of `buf`: room for a frame, 8-aligned.
    unsafe { at.write(frame) };
    let (at, lo, hi) = (at as usize, buf.as_ptr() as u64, buf.as_ptr() as u64 + WORDS as u64 * 8);

    let program = raw::builtin("hello").unwrap();
    let space = new_space().unwrap();
    space.map.lock().map(Some(CODE_BASE), PAGE, Prot::ALL, Prot::ALL, Inherit::Copy, None, false).unwrap();
    let proc = Arc::new(Process::new(None, "resume"));
    *proc.space.lock() = Some(space);
    let p = proc.clone();
    crate::proc::thread::start_first("resume", &proc, move || {
        become_process(p);
        if crate::syscall::uaccess::copy_to_user(CODE_BASE, program).is_err() {
            exit_current(Status::Signaled(SIGSEGV));
        }
        // With interrupts off, no other trap returns through
        // trap_return before this one does.
        x86_64::instructions::interrupts::disable();
        break_once_at(trap_return as *const () as u64);
        // SAFETY: a user-mode frame: user selectors, the program's
        // entry and the top of its stack.
        unsafe { resume_user(at as *const TrapFrame) }
    })
    .unwrap();
    assert_eq!(proc.wait(), Status::Exited(21), "the program ran from the frame");
    let trap = BREAK_ONCE_FRAME.swap(0, Ordering::SeqCst);
    assert!(trap != 0, "the breakpoint on trap_return was hit");
    assert!(!(lo..hi).contains(&trap), "a trap frame was pushed at {trap:#x}, below the user frame at {at:#x}");
    let spoilt = buf[..WORDS - frame_words].iter().filter(|&&w| w != PATTERN).count();
    assert_eq!(spoilt, 0, "{spoilt} words below the user frame were overwritten");
}

/// Runs `/bin/<name>` (argv[0] is its path, for programs that
/// re-execute themselves) with `args`, waits for it and for every
/// process it left behind, and returns its status.
pub(crate) fn run_bin(name: &str, args: &[&str]) -> Status {
    run_image(name, bin(name), args, RUN_LIMIT_SECONDS)
}

/// As [`run_bin`], reporting the program as hung after `limit` seconds
/// rather than [`RUN_LIMIT_SECONDS`]: for the programs that page several
/// times RAM in and out, which take minutes at `-smp 4` on a two-core
/// host (each shootdown waits for vCPUs the host runs in turn).
pub(crate) fn run_bin_within(name: &str, args: &[&str], limit: u64) -> Status {
    run_image(name, bin(name), args, limit)
}

/// Runs `image` (the program `/bin/<name>`) as `run_bin` does, reporting
/// it as hung after `limit` seconds.
fn run_image(name: &str, image: crate::proc::image::Image, args: &[&str], limit: u64) -> Status {
    let path = alloc::format!("/bin/{name}");
    let mut argv: Vec<&str> = alloc::vec![&path];
    argv.extend_from_slice(args);
    let p = spawn_image(name, image, &argv).unwrap();
    // A program that hangs is reported with every thread's state and
    // place, before the runner's timeout says only that it hung.
    let since = crate::kern::time::ticks();
    let status = loop {
        if let Some(s) = p.status() {
            break s;
        }
        if crate::kern::time::ticks() - since > limit * crate::kern::time::HZ {
            crate::kern::sched::write_threads(&mut crate::kern::serial::panic_writer());
            panic!("{name}: still running after {limit} s");
        }
        sched::sleep_until(p.chan(), crate::kern::time::ticks() + crate::kern::time::HZ / 10, || p.status().is_none());
    };
    end_the_rest();
    status
}

/// How long a test program may run before it is reported as hung (a test
/// of one program with a timeout of 60 s or less is reported by the runner
/// instead).
const RUN_LIMIT_SECONDS: u64 = 100;

/// What a program left running is killed and waited for.
fn end_the_rest() {
    // No init in tests: what the program left running is killed, and
    // waited for until it has freed its memory (the runner counts the
    // free pages next). One still ending after 10 s is stuck: the
    // threads are listed and the test fails.
    let since = crate::kern::time::ticks();
    while !none_left() {
        if crate::kern::time::ticks() - since > 10 * crate::kern::time::HZ {
            crate::kern::sched::write_threads(&mut crate::kern::serial::panic_writer());
            let exiting = EXITING.load(Ordering::SeqCst);
            panic!("processes still ending 10 s after the program: {} listed, {exiting} exiting", all().len());
        }
        for q in all() {
            send_signal(&q, SIGKILL);
        }
        sched::yield_now();
    }
}

/// An unmodified static musl program: start-up (TLS through
/// arch_prctl, set_tid_address), printf flushed through writev at exit.
#[ktest]
fn musl_hello() {
    assert_eq!(run_bin("hello", &[]), Status::Exited(42));
}

/// malloc, mmap's errors, MAP_FIXED(_NOREPLACE), mprotect and munmap,
/// checked by user/memory.c (which passes on Linux too).
#[ktest]
fn musl_memory_calls() {
    assert_eq!(run_bin("memory", &[]), Status::Exited(0));
}

/// fork, copy-on-write between parent and children, wait4 statuses
/// (exit codes and SIGSEGV), checked by user/fork.c (passes on Linux).
#[ktest(timeout = 60)]
fn musl_fork_and_wait() {
    assert_eq!(run_bin("fork", &[]), Status::Exited(0));
}

/// The same program built against glibc, whose `fork` is a `clone` with
/// `CLONE_CHILD_SETTID|CLONE_CHILD_CLEARTID|SIGCHLD`.
#[ktest(timeout = 60)]
fn glibc_fork_and_wait() {
    assert_eq!(run_bin("fork.glibc", &[]), Status::Exited(0));
}

/// Signal handlers: siginfo, a write barrier over 1,000 pages (a SIGSEGV
/// handler that mprotects and returns), siglongjmp out of a handler,
/// SIGBUS past the end of a file, a stack overflow caught on the
/// alternate stack, SSE state kept across a handler, masks and
/// SA_NODEFER, SA_RESETHAND, and the kills for frames that cannot be
/// written or read back: user/signals.c, built with musl and with glibc.
#[ktest(timeout = 120)]
fn signal_handlers() {
    assert_eq!(run_bin("signals", &["/tmp"]), Status::Exited(0));
    assert_eq!(run_bin("signals.glibc", &["/tmp"]), Status::Exited(0));
}

/// `clone` of the fork kind with each flag the C libraries pass (the
/// child's and the parent's copies of the id, a TLS, a new stack, no exit
/// signal), and EINVAL for what Linux refuses: user/clone.c, built with
/// musl and with glibc.
#[ktest(timeout = 60)]
fn clone_of_the_fork_kind() {
    assert_eq!(run_bin("clone", &[]), Status::Exited(0));
    assert_eq!(run_bin("clone.glibc", &[]), Status::Exited(0));
}

/// Threads as musl's and glibc's pthreads make them: 100 created and
/// joined, a mutex and condition-variable ping-pong, a producer/consumer,
/// thread-local storage, ids, tgkill and a process-wide signal taken by
/// the one thread that does not block it, and every way a process with
/// threads ends (exit_group from a thread, the last thread's exit, a
/// fatal signal, execve from a thread), vfork and posix_spawn:
/// user/threads.c, built with musl and with glibc.
#[ktest(timeout = 120)]
fn pthreads() {
    assert_eq!(run_bin("threads", &["-v"]), Status::Exited(0));
    assert_eq!(run_bin("threads.glibc", &["-v"]), Status::Exited(0));
}

/// The VM with threads: the same fresh anonymous range and the same file
/// range faulted by four threads at once; munmap and mprotect racing
/// faults for 10,000 rounds with no access through a translation that
/// should be gone, no stale or lost data and every SIGSEGV at its
/// address; madvise and mlock racing writers; fork while siblings write;
/// exit_group while threads fault: user/vmthreads.c, with musl and glibc.
#[ktest(timeout = 300)]
fn vm_with_threads() {
    assert_eq!(run_image("vmthreads", bin("vmthreads"), &["/tmp"], 250), Status::Exited(0));
    assert_eq!(run_bin("vmthreads.glibc", &["/tmp", "2000"]), Status::Exited(0));
}

/// futex: wake counts, EAGAIN, relative and absolute timeouts, bitsets,
/// REQUEUE, CMP_REQUEUE, WAKE_OP, EINTR, bad arguments, a word on a page
/// never touched, and shared futexes between two processes in a file page
/// mapped at two addresses and in shared anonymous memory: user/futex.c.
#[ktest(timeout = 120)]
fn futexes() {
    assert_eq!(run_bin("futex", &["/tmp"]), Status::Exited(0));
}

/// Malformed ELF files execve'd from /tmp fail with ENOEXEC and the
/// caller goes on; a path with byte 0xff runs that file:
/// user/execprobe.c (passes on Linux).
#[ktest(timeout = 60)]
fn exec_of_malformed_elf_files() {
    assert_eq!(run_bin("execprobe", &[]), Status::Exited(0));
}

/// execve with argument blocks larger than the stack a program starts
/// with (20,000 short arguments, 100,000 empty ones) runs the program
/// with every argument intact, and blocks past Linux's limits fail with
/// E2BIG: user/execargs.c (passes on Linux). The strings are copied
/// into kernel virtual memory, not a heap block, and the stack is
/// mapped to fit them. Before, 20,000 arguments failed (E2BIG at 128
/// KiB, EFAULT past the 128 KiB of stack) and 100,000 empty ones
/// panicked the kernel on an 800 KB heap block.
#[ktest(timeout = 120)]
fn exec_with_large_argument_blocks() {
    assert_eq!(run_bin("execargs", &[]), Status::Exited(0));
}

/// uname, the clocks, nanosleep, kill of running, sleeping and ignoring
/// children, sigaction and sigprocmask, abort, execve with arguments and
/// environment and its errors: user/calls.c (passes on Linux).
#[ktest(timeout = 60)]
fn process_time_and_signal_calls() {
    assert_eq!(run_bin("calls", &[]), Status::Exited(0));
}

/// madvise, mincore, the mlock family, msync, mprotect then write, and
/// bad and straddling pointers to write and writev: user/vmcalls.c.
#[ktest(timeout = 60)]
fn vm_calls() {
    assert_eq!(run_bin("vmcalls", &[]), Status::Exited(0));
}

/// The /proc views of a process's memory as a program reads them: maps
/// lines in Linux's layout, smaps figures as pages are touched, locked
/// and shared with a child, a file mapping's name and inode, status,
/// statm, meminfo and the vm sysctls: user/procmaps.c.
#[ktest(timeout = 120)]
fn proc_views_of_memory() {
    assert_eq!(run_bin("procmaps", &["/tmp"]), Status::Exited(0));
}

/// /proc/PID/mem as a debugger uses it: reads and writes at addresses,
/// a write past a read-only private mapping's protection into its own
/// copy (the file and a shared mapping keep their bytes), a parent
/// writing into its child's copy of a page they shared: user/procmem.c.
#[ktest(timeout = 120)]
fn proc_mem_reads_and_writes() {
    assert_eq!(run_bin("procmem", &["/tmp"]), Status::Exited(0));
}

/// mlock2 and MLOCK_ONFAULT, mlockall's MCL_ONFAULT, seen through
/// pagemap, kpageflags and smaps: pages locked at once or as they are
/// touched, a page there before locked by an on-fault lock, unlocking a
/// part splitting the range and the rest joining it, no lock in a forked
/// child, a copy-on-write copy taking the lock, growth by mremap locked
/// on fault: user/mlock2.c (passes on Linux).
#[ktest(timeout = 120)]
fn mlock2_and_lock_on_fault() {
    assert_eq!(run_bin("mlock2", &[]), Status::Exited(0));
}

/// madvise's MADV_POPULATE_READ and MADV_POPULATE_WRITE: pages brought
/// in untouched, private copies made by a write population, the
/// protection checked, holes and pages past a file's end refused:
/// user/madvise.c (passes on Linux).
#[ktest(timeout = 120)]
fn madvise_populates() {
    assert_eq!(run_bin("madvise", &["/tmp"]), Status::Exited(0));
}

/// Pipes and fcntl as a shell uses them: 1 MiB across fork in order, end
/// of file and EPIPE/SIGPIPE as the ends close, O_NONBLOCK, PIPE_BUF
/// records never mixed by two writers, a signal ending a wait, fcntl's
/// flags and close-on-exec at execve: user/pipes.c (passes on Linux).
#[ktest(timeout = 120)]
fn pipes_and_fcntl() {
    assert_eq!(run_bin("pipes", &[]), Status::Exited(0));
}

/// Process descriptors and process_mrelease: a killed child's memory
/// released before it has ended (or ESRCH after), the errors, and
/// pidfd_send_signal: user/mrelease.c (passes on Linux).
#[ktest(timeout = 120)]
fn pidfd_and_process_mrelease() {
    assert_eq!(run_bin("mrelease", &[]), Status::Exited(0));
}

/// mremap: growth in place, moves (with leave, or to a fixed address),
/// shrinking, MREMAP_DONTUNMAP, a second mapping of shared memory, locked
/// ranges, memory shared or copied across fork, a file mapping, a run of
/// small growths, 64 MiB moved whole, and Linux's errors: user/mremap.c
/// (passes on Linux).
#[ktest(timeout = 120)]
fn mremap_calls() {
    assert_eq!(run_bin("mremap", &["/tmp"]), Status::Exited(0));
}

/// 100 rounds of nested fork and exit leave the parent's memory as it
/// was: user/nested.c.
#[ktest(timeout = 120)]
fn nested_fork_rounds() {
    assert_eq!(run_bin("nested", &[]), Status::Exited(0));
}

/// The stack grows on demand to 4 MiB; past the 8 MiB limit the process
/// is killed cleanly: user/stack.c.
#[ktest(timeout = 60)]
fn stack_grows_within_its_limit() {
    assert_eq!(run_bin("stack", &[]), Status::Exited(0));
}

/// A child that allocates until memory runs out is refused or killed
/// with SIGKILL; its parent goes on and memory comes back: user/oom.c.
#[ktest(timeout = 120)]
fn out_of_memory_is_a_clean_kill() {
    assert_eq!(run_bin("oom", &[]), Status::Exited(0));
}

/// 100,000 system calls with random numbers and arguments: the kernel
/// stays up and every page is accounted for afterwards: user/fuzz.c.
#[ktest(timeout = 300)]
fn random_system_calls() {
    assert_eq!(run_bin("fuzz", &["100000", "7"]), Status::Exited(0));
}

/// The fuzzer again with page, trie-node and PV-entry allocation each
/// failing 1 % of the time (seeded): every call still ends in a result
/// or a clean kill, and afterwards every page is back and the
/// invariants hold (the runner checks both).
#[ktest(timeout = 300)]
fn random_system_calls_with_allocations_failing() {
    use vm::failpoint::{Action, PAGE_ALLOC, PV_ALLOC, RADIX_NODE_ALLOC};
    let p = spawn_image("fuzz", bin("fuzz"), &["/bin/fuzz", "100000", "31"]).unwrap();
    let points = [&PAGE_ALLOC, &RADIX_NODE_ALLOC, &PV_ALLOC];
    for (seed, point) in (31..).zip(points) {
        point.set(Action::Probability { ppm: 10_000, seed });
    }
    let status = p.wait();
    for point in points {
        point.set(Action::Off);
    }
    end_the_rest();
    assert_eq!(status, Status::Exited(0));
}

/// A fork bomb (a process forking paused children until fork fails)
/// gets EAGAIN at the process limit, not a hang or a panic, and once
/// its children are gone fork works again: user/bombs.c.
/// The limit is the one that stops it: lowered to 40 processes, the
/// count peaks at 40 exactly.
#[ktest(timeout = 240)]
fn fork_bomb_ends_in_eagain() {
    assert!(max_processes() >= 20);
    let before = process_count();
    assert_eq!(run_bin("bombs", &["fork"]), Status::Exited(0));
    assert_eq!(settled_processes(before), before, "every process's place is given back");

    const LIMIT: usize = 40;
    let (status, peak) = bomb_under_limit("fork", LIMIT);
    assert_eq!(status, Status::Exited(0));
    assert_eq!(peak, LIMIT, "the most processes at once");
    assert_eq!(settled_processes(before), before);
}

/// The process count once it has come down to `target`, or once it stops
/// coming down (`ktest_runner::settle`). A process's place is given back
/// when the last reference to its record goes, and with several CPUs that
/// can be a moment after the program was waited for: an ended thread
/// still holds it until it is reaped, on whatever CPU it last ran.
fn settled_processes(target: usize) -> usize {
    crate::devtools::ktest_runner::settle(|| {
        crate::kern::sched::reap();
        let n = process_count();
        (n, n, n <= target)
    })
}

/// Runs `bombs <which>` with the bound on processes and threads lowered
/// to `limit`; returns its status and the most places taken at once.
fn bomb_under_limit(which: &str, limit: usize) -> (Status, usize) {
    PROCESS_LIMIT.store(limit, Ordering::Relaxed);
    reset_process_peak();
    let p = spawn_image("bombs", bin("bombs"), &["/bin/bombs", which]).unwrap();
    let status = p.wait();
    let peak = process_peak();
    PROCESS_LIMIT.store(0, Ordering::Relaxed);
    drop(p);
    end_the_rest();
    (status, peak)
}

/// A thread bomb (a process making threads until pthread_create fails)
/// gets EAGAIN at the bound on tasks, which threads share with
/// processes, and every thread's place and kernel stack come back when
/// they are joined: user/bombs.c. Lowered to 40, the count peaks at 40.
#[ktest(timeout = 240)]
fn thread_bomb_ends_in_eagain() {
    let before = process_count();
    const LIMIT: usize = 40;
    let (status, peak) = bomb_under_limit("threads", LIMIT);
    assert_eq!(status, Status::Exited(0));
    assert_eq!(peak, LIMIT, "the most processes and threads at once");
    assert_eq!(settled_processes(before), before);
    // And at the limit memory gives.
    assert_eq!(run_bin("bombs", &["threads"]), Status::Exited(0));
    assert_eq!(settled_processes(before), before, "every thread's place is given back");
}

/// Four processes opening files until they cannot: each gets EMFILE
/// at its descriptor limit, or ENFILE once the system's table is full;
/// lowered to 1,500, the count of open files peaks there exactly, and
/// every file is closed at the end: user/bombs.c.
#[ktest(timeout = 240)]
fn file_bomb_ends_in_emfile_or_enfile() {
    use crate::fs::{FILE_LIMIT, open_files, open_files_peak, reset_open_files_peak};
    let before = open_files();
    let limit = before + 1500;
    FILE_LIMIT.store(limit, Ordering::Relaxed);
    reset_open_files_peak();
    let p = spawn_image("bombs", bin("bombs"), &["/bin/bombs", "files"]).unwrap();
    let status = p.wait();
    let peak = open_files_peak();
    FILE_LIMIT.store(0, Ordering::Relaxed);
    drop(p);
    end_the_rest();
    assert_eq!(status, Status::Exited(0));
    assert_eq!(peak, limit, "the most open files at once");
    assert_eq!(open_files(), before, "every file closed");
}

/// Hostile programs leave the kernel heap as they found it. The first
/// round fills what is cached for good (the once-only log of missing
/// system calls; the filesystem's metadata cache is emptied before each
/// count); after a second, the heap and the free pages are where the
/// first left them: nothing a bomb, a fuzzer or a malformed program did
/// stays behind.
#[ktest(timeout = 600)]
fn hostile_programs_leave_the_heap_as_they_found_it() {
    let programs: [(&str, &[&str]); 5] = [
        ("bombs", &["fork", "threads", "maps", "files"]),
        ("fuzz", &["20000", "5"]),
        ("execprobe", &[]),
        ("mapprobe", &["/tmp"]),
        ("limits", &[]),
    ];
    let grew = grown_by_a_second_run(&programs);
    assert!(grew.is_empty(), "(heap bytes in use, free pages) before and after a second run, and what changed: {grew:?}");
}

/// The programs of the other tests, likewise: files and mappings in
/// /tmp, the system calls, fork, the stack limit (a kill), memory
/// running out (a kill) and a file read from the disk.
#[ktest(timeout = 600)]
fn test_programs_leave_the_heap_as_they_found_it() {
    let programs: [(&str, &[&str]); 19] = [
        ("threads", &["-v"]),
        ("threads.glibc", &["-v"]),
        ("futex", &["/tmp"]),
        ("files", &["/tmp"]),
        ("mapfile", &["/tmp"]),
        ("calls", &[]),
        ("vmcalls", &[]),
        ("mremap", &["/tmp"]),
        ("procmaps", &["/tmp"]),
        ("procmem", &["/tmp"]),
        ("mlock2", &[]),
        ("madvise", &["/tmp"]),
        ("pipes", &[]),
        ("mrelease", &[]),
        ("fork", &[]),
        ("nested", &[]),
        ("stack", &[]),
        ("oom", &[]),
        ("ioerr", &["/data/seq32", "1000000"]),
    ];
    let grew = grown_by_a_second_run(&programs);
    assert!(grew.is_empty(), "(heap bytes in use, free pages) before and after a second run, and what changed: {grew:?}");
}

/// A program, its (heap bytes, free pages) after the first run and after
/// the second, and what changed in the heap (items per size class, page
/// runs, the boot arena), so that a report says what to look for.
type Growth<'a> = (&'a str, (usize, u64), (usize, u64), alloc::string::String);

/// Runs each program twice (each must exit with 0); returns those after
/// whose second run the heap bytes in use or the free pages differ, with
/// both (the first run fills what is cached for good).
fn grown_by_a_second_run<'a>(programs: &[(&'a str, &[&str])]) -> Vec<Growth<'a>> {
    use crate::kern::heap::{HeapStats, stats};
    // As the runner counts after each test: ended threads reaped, the
    // caches drained, the heap's pages counted as free.
    let threads = crate::devtools::ktest_runner::settled_threads(usize::MAX);
    let measure = || {
        crate::devtools::ktest_runner::settled_threads(threads);
        // The filesystem's metadata cache keeps each block it is handed
        // until it holds all it may: a second run that creates a file
        // whose inode lies in a block not touched yet fills one more
        // slot. Written back and emptied, the cache is not counted.
        if let Some(m) = crate::fs::root() {
            m.sync();
            m.fs.lock().drop_caches();
        }
        let free = crate::devtools::ktest_runner::free_pages();
        let s = stats();
        ((s.bytes_in_use(), free), s)
    };
    let changes = |a: &HeapStats, b: &HeapStats| {
        use core::fmt::Write;
        let mut out = alloc::string::String::new();
        for (x, y) in a.classes.iter().zip(&b.classes).filter(|(x, y)| x.in_use != y.in_use) {
            let _ = write!(out, "{} B items {} -> {}; ", x.size, x.in_use, y.in_use);
        }
        if (a.large_blocks, a.large_bytes) != (b.large_blocks, b.large_bytes) {
            let _ =
                write!(out, "page runs {} ({} B) -> {} ({} B); ", a.large_blocks, a.large_bytes, b.large_blocks, b.large_bytes);
        }
        if a.boot_used != b.boot_used {
            let _ = write!(out, "boot arena {} B -> {} B ({} fallbacks since boot); ", a.boot_used, b.boot_used, b.fallbacks);
        }
        out
    };
    for &(name, args) in programs {
        assert_eq!(run_bin(name, args), Status::Exited(0), "{name}");
    }
    let mut grew = Vec::new();
    for &(name, args) in programs {
        let (before, s0) = measure();
        crate::kern::heap::watch_runs(true);
        assert_eq!(run_bin(name, args), Status::Exited(0), "{name}");
        let (after, s1) = measure();
        crate::kern::heap::watch_runs(false);
        if after != before {
            let mut what = changes(&s0, &s1);
            what.push_str(&crate::kern::heap::watched_runs());
            grew.push((name, before, after, what));
        }
    }
    grew
}

/// The file system calls on the root filesystem (the virtio disk):
/// user/files.c in /tmp.
#[ktest(timeout = 60)]
fn file_calls() {
    assert!(crate::fs::root().is_some(), "no root filesystem: the test boot attaches kernel-fs.img");
    assert_eq!(run_bin("files", &["/tmp"]), Status::Exited(0));
}

/// File mappings through the vnode pager: shared writes reach the file,
/// private ones do not, write() is seen through a mapping, SIGBUS past
/// the end and after a truncation: user/mapfile.c.
#[ktest(timeout = 60)]
fn file_mappings() {
    assert_eq!(run_bin("mapfile", &["/tmp"]), Status::Exited(0));
}

/// A program on the root filesystem runs from its file's own pages: the
/// loader maps the vnode's object, and the text comes in by faults
/// through the vnode pager, in clusters (read-ahead).
#[ktest(timeout = 60)]
fn programs_are_paged_in_from_their_file() {
    let stats = &crate::fs::root().expect("no root filesystem").stats;
    let image = crate::proc::image::program(b"/bin/hello").expect("/bin/hello on the root filesystem");
    let crate::proc::image::Image::File { vnode, len, .. } = &image else { panic!("not a file image") };
    let (vnode, pages) = (vnode.clone(), len.div_ceil(vm::PAGE_SIZE as u64));
    assert_eq!(vnode.object.lock().resident(), 0, "nothing read yet but the headers");
    let reads = stats.reads.load(Ordering::Relaxed);
    let exec = Exec { image, args: crate::proc::elf::ArgBlock::from_strs(&[b"hello"], &[]).unwrap() };
    let p = spawn_exec("hello", exec, None).unwrap();
    assert_eq!(p.wait(), Status::Exited(42));
    let resident = vnode.object.lock().resident() as u64;
    let requests = stats.reads.load(Ordering::Relaxed) - reads;
    assert!(resident > 0, "the program's pages came from its vnode");
    assert!(requests >= 1 && requests < pages, "{pages} pages in {requests} block requests");
}

/// Rule 6 from a program's side: with every disk read failing, read()
/// of a file gets EIO and a mapped page that cannot be read is SIGBUS;
/// with the disk working again the same program reads fine. (The
/// program is built in, so it loads without the disk.)
#[ktest(timeout = 60)]
fn disk_errors_reach_programs_as_eio_and_sigbus() {
    use vm::failpoint::{Action, BLK_READ};
    // The file's inode and directory blocks in the filesystem's cache:
    // what the program's open needs (a lookup alone need not read the
    // file's own inode block; whether it does depends on where the
    // image's other files put it).
    {
        let mut fs = crate::fs::root().unwrap().fs.lock();
        let ino = fs.lookup(b"/data/seq32").unwrap();
        fs.stat(ino).unwrap();
    }
    // The program's own pages in memory too: its image (and with it its
    // vnode and pages) is held across a first run that reads them.
    let ioerr = bin("ioerr");
    assert_eq!(run_image("ioerr", ioerr.clone(), &["/data/seq32", "1000000"], RUN_LIMIT_SECONDS), Status::Exited(0));
    BLK_READ.set(Action::Always);
    let failing = run_image("ioerr", ioerr, &["/data/seq32", "1000000"], RUN_LIMIT_SECONDS);
    BLK_READ.set(Action::Off);
    assert_eq!(failing, Status::Exited(3), "EIO from read (1) and SIGBUS from the mapping (2)");
    assert_eq!(run_bin("ioerr", &["/data/seq32", "1000000"]), Status::Exited(0));
}

/// init runs a program as its child and exits with its status, the
/// shell's way for a killed one.
#[ktest(timeout = 60)]
fn init_runs_a_program() {
    let init = spawn_elf("init", crate::proc::programs::bin("init"), &["init", "/bin/hello"]).unwrap();
    assert_eq!(init.wait(), Status::Exited(42));
    let init = spawn_elf("init", crate::proc::programs::bin("init"), &["init", "/no/such"]).unwrap();
    assert_eq!(init.wait(), Status::Exited(127));
}

/// The ELF loader maps an embedded program from its image object: its
/// pages come in through the image's pager, not by copying at load (each
/// start makes a new image object, so every run pages in).
#[ktest]
fn image_pages_come_through_the_pager() {
    let init = || spawn_elf("init", crate::proc::programs::bin("init"), &["init", "/no/such"]).unwrap().wait();
    assert_eq!(init(), Status::Exited(127));
    let before = crate::mm::vmspace::FAULT_KINDS.paged_in.get();
    assert_eq!(init(), Status::Exited(127));
    assert!(crate::mm::vmspace::FAULT_KINDS.paged_in.get() > before, "the image's pages come in through its pager");
}

/// A fork whose object allocation fails returns an error and leaves
/// nothing behind: the partial child (its page tables, the references
/// its entries took) is freed, so free pages and the heap are where
/// they were. Before, `VmMap::fork` panicked on a short heap. The heap
/// is compared from the second attempt on: the first leaves 32 bytes
/// in use for good (a one-time cost, not a per-fork leak; the pages
/// are back from the first).
#[ktest]
fn fork_that_cannot_allocate_leaves_nothing() {
    use vm::failpoint::{Action, OBJECT_ALLOC};
    let p = spawn_kernel("forkfail", |_| {
        let Some(space) = current().and_then(|me| me.space()) else { panic!("no address space") };
        const AT: u64 = 0x1000_0000;
        space.map.lock().map(Some(AT), 4 * PAGE, Prot::RW, Prot::RW, Inherit::Copy, None, false).unwrap();
        // The first entry has its object (touched); the stack's has none,
        // so the fork must allocate one for it.
        crate::syscall::uaccess::copy_to_user(AT, &[1u8; 64]).unwrap();
        let count = || (crate::devtools::ktest_runner::free_pages(), crate::kern::heap::usage().0);
        let tf = crate::arch::trapframe::TrapFrame::default();
        let first = count();
        OBJECT_ALLOC.set(Action::Always);
        assert_eq!(fork(&tf), Err(SpawnError::NoMemory));
        OBJECT_ALLOC.set(Action::Off);
        let before = count();
        assert_eq!(before.0, first.0, "free pages after a failed fork");
        for _ in 0..3 {
            OBJECT_ALLOC.set(Action::Always);
            let r = fork(&tf);
            OBJECT_ALLOC.set(Action::Off);
            assert_eq!(r, Err(SpawnError::NoMemory));
        }
        assert_eq!(count(), before, "(free pages, heap bytes used) after three more failed forks");
        drop(space);
    })
    .unwrap();
    assert_eq!(p.wait(), Status::Exited(0));
}

/// Arguments that hung or panicked the kernel, answered as Linux does:
/// MAP_FIXED_NOREPLACE over 1 TiB at once, the map-entry limit (mmap,
/// mprotect and munmap splits past it are ENOMEM), file offsets whose
/// end overflows (EOVERFLOW), the last page below TASK_SIZE (ENOMEM),
/// wrapping lengths to every memory call, and a file grown by
/// ftruncate over bytes written past its end through a mapping, which
/// read as zeros: user/mapprobe.c.
#[ktest(timeout = 120)]
fn memory_call_probes() {
    assert_eq!(run_bin("mapprobe", &["/tmp"]), Status::Exited(0));
}

/// Resource limits: Linux's defaults, setting them, inheritance by
/// fork and across exec, and RLIMIT_NOFILE, RLIMIT_AS, RLIMIT_STACK,
/// RLIMIT_MEMLOCK and RLIMIT_NPROC enforced: user/limits.c.
#[ktest(timeout = 60)]
fn resource_limits() {
    assert_eq!(run_bin("limits", &[]), Status::Exited(0));
}

/// A program's kill(SIGKILL) of init is ignored: init, with no handler,
/// goes on and ends with its child's status.
#[ktest(timeout = 60)]
fn init_ignores_kill() {
    let init = start_init(&["init", "/bin/limits", "initkill"]).unwrap();
    assert_eq!(init.wait(), Status::Exited(0));
}

/// Map entries that cannot be allocated (the heap short, here the
/// `map.entry_alloc` fail point) make mmap, and mprotect and munmap
/// that would split an entry, fail with ENOMEM; what needs no new entry
/// still works.
#[ktest]
fn map_entry_allocation_failure_is_enomem() {
    use crate::syscall::errno::ENOMEM;
    use crate::syscall::mem::{mmap, mprotect, munmap};
    use vm::failpoint::{Action, MAP_ENTRY_ALLOC};
    const RW: u64 = 3;
    const PRIVATE_ANON: u64 = 0x22;
    let p = spawn_kernel("entryfail", |_| {
        let a = mmap(0, 4 * PAGE, RW, PRIVATE_ANON, u64::MAX, 0);
        assert!(a > 0, "mmap: {a}");
        let a = a as u64;
        MAP_ENTRY_ALLOC.set(Action::Always);
        let results = [
            mmap(0, PAGE, RW, PRIVATE_ANON, u64::MAX, 0),
            mprotect(a + PAGE, PAGE, 1),
            munmap(a + PAGE, PAGE),
            mprotect(a, 4 * PAGE, 1),
            munmap(a, 4 * PAGE),
        ];
        MAP_ENTRY_ALLOC.set(Action::Off);
        assert_eq!(results, [-ENOMEM, -ENOMEM, -ENOMEM, 0, 0]);
    })
    .unwrap();
    assert_eq!(p.wait(), Status::Exited(0));
}

/// RLIMIT_AS stops the stack's growth: a fault past it is not resolved
/// (SIGSEGV), one within it grows the stack.
#[ktest]
fn stack_growth_stops_at_the_address_space_limit() {
    let p = spawn_kernel("aslimit", |me| {
        let Some(space) = me.space() else { panic!("no address space") };
        let size = space.map.lock().size();
        me.limits.lock()[RLIMIT_AS].cur = size + 16 * PAGE;
        me.update_map_limits();
        let low = space.map.lock().stack_bottom().expect("no stack");
        let fault = |va| vm::fault::fault(&space.map, va, Prot::WRITE, false);
        assert_eq!(fault(low - 64 * PAGE), Err(vm::fault::FaultError::NoEntry), "64 pages down: past RLIMIT_AS");
        assert!(fault(low - 8 * PAGE).is_ok(), "8 pages down: within it");
        assert!(space.map.lock().size() <= size + 16 * PAGE);
    })
    .unwrap();
    assert_eq!(p.wait(), Status::Exited(0));
}

/// A map-entry bomb (one-page mappings of alternating protection until
/// mmap fails) ends in ENOMEM at the map-entry limit, 65,530, not in a
/// kernel panic on a heap run dry; afterwards mmap works: user/bombs.c.
#[ktest(timeout = 240)]
fn map_bomb_ends_in_enomem() {
    assert_eq!(run_bin("bombs", &["maps"]), Status::Exited(0));
}

/// User stack pages fault in on demand and keep their data.
#[ktest]
fn user_stack_faults_in() {
    assert_eq!(run("stack"), Status::Exited(0));
}
