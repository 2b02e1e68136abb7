//! The kernel: entry from the bootloader, bring-up, and the choice of what to
//! run (the demo, the in-kernel tests, or the benchmarks).
//!
//! Bring-up order, and why:
//! 1. serial console and logger: everything after this can report problems;
//! 2. GDT/TSS, then IDT: exceptions are reported from here on;
//! 3. memory map and heap: `alloc` works from here on; then the page array
//!    and the page allocator (`vm::global()`);
//! 4. symbol table, command line;
//! 5. local APIC timer, the I/O APIC and the devices on PCI, then
//!    interrupts on; then the root filesystem and the swap disk.

#![no_std]
#![feature(allocator_api)]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;
// Linked even where nothing is called yet, so that its in-kernel tests are too.
extern crate pager;

mod arch;
mod dev;
mod devtools;
mod fs;
mod kern;
mod mm;
mod proc;
mod syscall;

use core::fmt::Write;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use bootloader_api::config::{BootloaderConfig, Mapping};
use bootloader_api::{BootInfo, entry_point};

use crate::dev::qemu::ExitCode;
use crate::kern::cmdline::{BenchPart, Mode};

/// Where the bootloader loads the (position-independent) kernel image. Fixed
/// so that gdb can load the symbols at a known offset: `symbol-file -o` this.
pub const KERNEL_BASE: u64 = 0xffff_ffff_8000_0000;

/// Everything else the bootloader maps (direct map, boot stack, boot info,
/// ramdisk) goes in the upper half too, leaving the lower half to user space.
const DYNAMIC_RANGE_START: u64 = 0xffff_8000_0000_0000;

pub static BOOTLOADER_CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.kernel_base = Mapping::FixedAddress(KERNEL_BASE);
    config.mappings.physical_memory = Some(Mapping::Dynamic);
    config.mappings.dynamic_range_start = Some(DYNAMIC_RANGE_START);
    config.kernel_stack_size = 256 * 1024;
    config
};

entry_point!(kernel_main, config = &BOOTLOADER_CONFIG);

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    // Before anything that may reach per-CPU data (a lock, the log).
    arch::percpu::install(&arch::percpu::BOOT_CPU);
    kern::time::init_boot_tsc();
    kern::serial::init();
    kern::serial::init_logger(kern::cmdline::early_log_level());
    // The host measures boot time to this line: keep it first.
    log::info!("kernel main reached");

    arch::gdt::init();
    arch::idt::init();
    arch::cpu::init();
    syscall::init();

    let Some(phys_offset) = boot_info.physical_memory_offset.into_option() else {
        panic!("the bootloader did not map physical memory; check BOOTLOADER_CONFIG");
    };
    kern::memory::init(phys_offset, &boot_info.memory_regions);
    if let Err(e) = kern::heap::init() {
        panic!("cannot set up the kernel heap: {e:?}");
    }
    match kern::memory::init_page_allocator() {
        Ok(pm) => {
            kern::memory::reclaim_boot_memory(pm);
        }
        Err(e) => panic!("cannot build the page array: {e:?}"),
    }
    // The VM's sleep and wakeup: a thread waiting for a busy page, a
    // sleeping lock, sleeps on its address (kern::sched::sleep_if checks
    // the condition, the page's waiters bit, under the scheduler lock, so
    // the wakeup cannot be missed). Waits for memory are the pageout
    // daemon's business (mm::pageout::init).
    vm::set_sleep(
        |chan, cond| {
            kern::sched::sleep_if(chan, cond);
        },
        kern::sched::wakeup,
    );
    // The VM's allocations that cannot fail by themselves (map-entry tree
    // nodes) are refused unless the heap, grown as far as free pages allow,
    // keeps a margin beyond them for the allocations that must not fail.
    vm::set_heap_room(|bytes| kern::heap::available() >= bytes.saturating_add(64 * 1024));
    if let Err(e) = arch::pmap::init() {
        panic!("cannot set up the pmap: {e:?}");
    }
    if let Err(e) = kern::kmem::init() {
        panic!("cannot set up the kernel's virtual memory: {e:?}");
    }

    let ramdisk = boot_info.ramdisk_addr.into_option().map(|addr| {
        // SAFETY: the bootloader mapped the ramdisk at `addr` for
        // `ramdisk_len` bytes and never unmaps or reuses it.
        unsafe { core::slice::from_raw_parts(addr as *const u8, boot_info.ramdisk_len as usize) }
    });
    kern::ksyms::init(ramdisk, boot_info.kernel_image_offset);

    let cmdline = kern::cmdline::init();
    log::set_max_level(cmdline.log);
    log::info!(
        "booted: kernel at {:#x}, direct map at {:#x}, command line {:?}",
        boot_info.kernel_image_offset,
        phys_offset,
        cmdline.raw
    );
    kern::memory::log_map();

    if let Err(e) = arch::madt::init(boot_info.rsdp_addr.into_option()) {
        log::warn!("madt: not read ({e}): one CPU");
    }
    kern::sched::init();
    arch::apic::init(phys_offset);
    arch::smp::start_aps(ap_main);
    kern::time::init_wall_clock();
    dev::init(phys_offset);
    x86_64::instructions::interrupts::enable();
    kern::sync::start_checks();
    kern::sched::start_lock_order_checks();
    vm::sync::set_spin_hooks(vm_spin_hooks());
    vm::set_run_alone(|f| kern::sched::with_other_cpus_parked(f));
    arch::smp::release_aps();
    arch::watchdog::start();
    mount_root();
    mm::swap::init();
    // What the VM's threads and faults need of processes, which are above
    // them (so passed down, not imported).
    mm::pageout::init(mm::pageout::ProcessOps { signal_pending: proc::signal_pending, kill_largest: proc::kill_largest });
    proc::itimer::start();

    // Debug builds check the page invariants once the boot is complete.
    if cfg!(debug_assertions) {
        let v = kern::sched::with_other_cpus_parked(|| vm::invariants::check(vm::global()));
        assert!(v.is_empty(), "page invariants broken at boot: {v:?}");
    }

    match cmdline.mode {
        Mode::Demo => devtools::demo::run(),
        Mode::List => devtools::ktest_runner::list(),
        Mode::Test => devtools::ktest_runner::run(cmdline.run.as_deref()),
        Mode::Bench => match cmdline.bench {
            BenchPart::Main => devtools::bench::run(),
            BenchPart::Smp => devtools::bench_smp::run(),
            BenchPart::Tlb => devtools::bench_smp::run_tlb(),
        },
        Mode::Run => devtools::demo::run_program(),
        Mode::VmState => devtools::vmstate::run(),
    }
    // Power off as from an unmount: every dirty page and block on the disk.
    fs::sync_all();
    dev::qemu::exit(ExitCode::Success)
}

/// Where an application processor enters the kernel from the trampoline
/// (`arch::smp`): the boot CPU's control registers and its own block, GDT,
/// TSS, the shared IDT, the system-call MSRs and its local APIC. It waits
/// (interrupts off) until the boot CPU has the kernel up, then becomes an
/// idle thread of the scheduler, with its timer running.
extern "C" fn ap_main(start: &'static arch::smp::ApStart) -> ! {
    arch::smp::ap_started(start);
    arch::gdt::init_ap(start.ist_bases);
    arch::idt::init();
    syscall::init();
    arch::apic::init_ap();
    arch::smp::ap_online(start);
    arch::smp::wait_for_release();
    if kern::sched::join_cpu().is_err() {
        log::warn!("smp: CPU {} has no memory for its idle thread: left out", arch::percpu::this().id);
        arch::halt_forever()
    }
    arch::apic::start_timer_ap();
    kern::sched::run_idle()
}

/// How long a spin for one of the VM's locks may last before it is a bug
/// (the watchdog catches spins with interrupts off; these spin with them
/// on, so the timer runs and only the clock can tell).
pub const SPIN_LIMIT_US: u64 = 1_000_000;

/// The hooks the VM's spin locks call (`vm::sync::SpinHooks`): preemption
/// off while one is held, the holder's CPU recorded, and a spin over
/// [`SPIN_LIMIT_US`] a panic that names the lock and shows its holder.
pub fn vm_spin_hooks() -> vm::sync::SpinHooks {
    vm::sync::SpinHooks {
        preempt_off: kern::sched::preempt_disable,
        preempt_on: kern::sched::preempt_enable,
        cpu: || arch::percpu::this().id,
        spinning: vm_lock_spinning,
    }
}

fn vm_lock_spinning(lock: usize, class: Option<&'static vm::witness::LockClass>, holder: u32, since: &mut u64) {
    let now = kern::time::rdtsc();
    if *since == 0 {
        *since = now;
        return;
    }
    if kern::time::tsc_to_us(now - *since) < SPIN_LIMIT_US {
        return;
    }
    let name = class.map_or("(unranked)", |c| c.name);
    // The holder first; then the others, since a holder that waits (for a
    // shootdown's acknowledgements) waits for one of them.
    arch::nmi::ask_for_dump(holder);
    for n in 0..arch::percpu::online() as u32 {
        if n != holder {
            arch::nmi::ask_for_dump(n);
        }
    }
    panic!("spin lock {name} at {lock:#x} spun for over {SPIN_LIMIT_US} us; held by CPU {holder}");
}

/// Mounts the root filesystem from the virtio disk with serial `rootfs`
/// (run-qemu.sh and the test boots attach `kernel-fs.img` so), if there is one.
fn mount_root() {
    let Some(disk) = dev::virtio_blk::by_serial("rootfs") else {
        log::info!("vfs: no disk with serial \"rootfs\": no root filesystem");
        return;
    };
    if let Err(e) = fs::mount_root(alloc::boxed::Box::new(disk)) {
        log::warn!("vfs: cannot mount the root filesystem: {e:?}");
    }
}

/// A fixed-size buffer for formatting the panic message without the heap.
struct MessageBuf {
    buf: [u8; 256],
    len: usize,
}

impl Write for MessageBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

impl MessageBuf {
    fn as_str(&self) -> &str {
        match core::str::from_utf8(&self.buf[..self.len]) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or(""),
        }
    }
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    static PANICKING: AtomicBool = AtomicBool::new(false);
    // The report takes whatever locks it must, in whatever order.
    vm::witness::stop();
    // One CPU reports; another that panics meanwhile stops where it is.
    if !arch::smp::claim_stop() {
        arch::halt_forever();
    }
    if !PANICKING.load(Ordering::SeqCst) {
        arch::smp::stop_others();
    }
    let mut w = kern::serial::panic_writer();
    if PANICKING.swap(true, Ordering::SeqCst) {
        let _ = writeln!(w, "\nnested panic: {}", info.message());
        dev::qemu::exit(ExitCode::Failure);
    }
    let mut msg = MessageBuf { buf: [0; 256], len: 0 };
    let _ = write!(msg, "{}", info.message());
    let _ = write!(w, "\nKERNEL PANIC");
    if let Some(loc) = info.location() {
        let _ = write!(w, " at {}:{}:{}", loc.file(), loc.line(), loc.column());
    }
    let _ = writeln!(w, " (CPU {}): {}", arch::percpu::this().id, info.message());
    let (rsp, rbp): (u64, u64);
    // SAFETY: copies two registers; no memory is touched.
    unsafe {
        core::arch::asm!("mov {}, rsp", "mov {}, rbp", out(reg) rsp, out(reg) rbp,
            options(nomem, nostack, preserves_flags));
    }
    let _ = writeln!(
        w,
        "  RSP={rsp:#018x} RBP={rbp:#018x} CR2={:#018x} CR3={:#x} uptime {} us",
        x86_64::registers::control::Cr2::read_raw(),
        x86_64::registers::control::Cr3::read_raw().0.start_address().as_u64(),
        kern::time::uptime_us()
    );
    kern::backtrace::write_here(&mut w);
    drop(w);
    devtools::ktest_runner::panicked(msg.as_str())
}
