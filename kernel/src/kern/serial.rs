//! The serial console (COM1) and the kernel logger.
//!
//! All kernel output goes to COM1: QEMU connects it to its standard output, and
//! the host-side test runner reads it line by line. Log lines look like
//!
//! ```text
//! [    0.012345] INFO  kernel::memory: 126 MiB usable in 3 regions
//! ```
//!
//! (seconds since boot, level, module path). Lines the test protocol needs
//! (`ktest: ...`, `bench: ...`) are written raw with [`kprintln!`], so that no
//! log level can hide them.
//!
//! The port is behind a spin lock taken with interrupts disabled, so an
//! interrupt handler that logs cannot deadlock against the code it interrupted.
//! The panic and fatal-exception paths take the port by force instead
//! ([`panic_writer`]): by then the lock may be held by the code that failed.

use core::fmt;

use crate::kern::sync::{IrqGuard, IrqMutex};
use uart_16550::backend::PioBackend;
use uart_16550::{BaudRate, Config, Uart16550};
use x86_64::instructions::interrupts;

const COM1: u16 = 0x3F8;

static PORT: IrqMutex<Option<Uart16550<PioBackend>>> = IrqMutex::ranked(None, &vm::witness::order::CONSOLE);

/// Bytes received before the port was set up (setting it up clears the
/// receive FIFO, which may already hold input the host sent early).
static EARLY_INPUT: IrqMutex<([u8; 64], usize, usize)> = IrqMutex::new(([0; 64], 0, 0));

/// Initialises COM1 at 115200 baud, 8-N-1. Output before this is lost.
pub fn init() {
    {
        let mut early = EARLY_INPUT.lock();
        let (buf, _, len) = &mut *early;
        // SAFETY: COM1's line status and data registers: reading the data
        // register while the status says a byte is there takes that byte.
        unsafe {
            while *len < buf.len() && x86_64::instructions::port::Port::<u8>::new(COM1 + 5).read() & 1 != 0 {
                buf[*len] = x86_64::instructions::port::Port::<u8>::new(COM1).read();
                *len += 1;
            }
        }
    }
    // SAFETY: 0x3F8..0x400 is COM1 on every PC and QEMU machine; nothing else
    // in the kernel touches those ports.
    let Ok(mut uart) = (unsafe { Uart16550::new_port(COM1) }) else { return };
    let config = Config { baud_rate: BaudRate::Baud115200, ..Config::default() };
    if uart.init(config).is_ok() {
        *PORT.lock() = Some(uart);
    }
}

fn send(uart: &mut Uart16550<PioBackend>, s: &str) {
    for chunk in s.split_inclusive('\n') {
        match chunk.strip_suffix('\n') {
            Some(line) => {
                uart.send_bytes_exact(line.as_bytes());
                uart.send_bytes_exact(b"\r\n");
            }
            None => uart.send_bytes_exact(chunk.as_bytes()),
        }
    }
}

/// A writer that holds the console for as long as it lives: lines written
/// through one `Console` are never interleaved with other output.
pub struct Console<'a>(IrqGuard<'a, Option<Uart16550<PioBackend>>>);

impl fmt::Write for Console<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some(uart) = self.0.as_mut() {
            send(uart, s);
        }
        Ok(())
    }
}

/// Runs `f` with the console locked and interrupts disabled.
pub fn with_console<R>(f: impl FnOnce(&mut Console<'_>) -> R) -> R {
    f(&mut Console(PORT.lock()))
}

/// The console for the panic and fatal-exception paths: takes the port even if
/// its lock is held (the holder is the code that failed, and it will not run
/// again).
pub fn panic_writer() -> Console<'static> {
    interrupts::disable();
    // SAFETY: interrupts are off, and a holder is the context that
    // panicked or faulted (which never resumes), or another CPU that the
    // panic stops by NMI, or one writing its own report at the same time.
    // The worst outcome is a torn line in the output.
    unsafe { PORT.force_unlock() };
    Console(PORT.lock())
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    use fmt::Write;
    with_console(|c| {
        let _ = c.write_fmt(args);
    });
}

/// Prints to the serial console, without a log prefix.
#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => { $crate::kern::serial::_print(format_args!($($arg)*)) };
}

/// Prints a line to the serial console, without a log prefix.
#[macro_export]
macro_rules! kprintln {
    () => { $crate::kprint!("\n") };
    ($($arg:tt)*) => { $crate::kern::serial::_print(format_args!("{}\n", format_args!($($arg)*))) };
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        use fmt::Write;
        let us = crate::kern::time::uptime_us();
        with_console(|c| {
            let _ = writeln!(
                c,
                "[{:5}.{:06}] {:<5} {}: {}",
                us / 1_000_000,
                us % 1_000_000,
                record.level(),
                record.module_path().unwrap_or("?"),
                record.args()
            );
        });
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Installs the serial logger at `level`.
pub fn init_logger(level: log::LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Writes bytes to the console as they are (a user program's output: no
/// newline translation, so it reaches the host byte for byte).
pub fn write_raw(bytes: &[u8]) {
    interrupts::without_interrupts(|| {
        if let Some(uart) = PORT.lock().as_mut() {
            uart.send_bytes_exact(bytes);
        }
    });
}

/// A byte received on the console, if one is waiting.
pub fn try_read_byte() -> Option<u8> {
    interrupts::without_interrupts(|| {
        {
            let mut early = EARLY_INPUT.lock();
            let (buf, next, len) = &mut *early;
            if *next < *len {
                *next += 1;
                return Some(buf[*next - 1]);
            }
        }
        let _held = PORT.lock();
        // SAFETY: COM1's line status and data registers; reading the data
        // register only when the status says a byte is there takes that byte.
        unsafe {
            let lsr = x86_64::instructions::port::Port::<u8>::new(COM1 + 5).read();
            (lsr & 1 != 0).then(|| x86_64::instructions::port::Port::<u8>::new(COM1).read())
        }
    })
}
