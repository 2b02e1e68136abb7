//! Ending a QEMU run with a status, through QEMU's `isa-debug-exit` device.
//!
//! Writing `v` to port 0xf4 makes QEMU exit with status `(v << 1) | 1`, so the
//! kernel can never produce 0: run-qemu.sh and the test host map
//! [`ExitCode::Success`] (33) to success and anything else to failure. Without
//! the device (on real hardware) the write does nothing and the CPU halts.

use x86_64::instructions::port::Port;

const ISA_DEBUG_EXIT_PORT: u16 = 0xf4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// QEMU exits with 33.
    Success = 0x10,
    /// QEMU exits with 35.
    Failure = 0x11,
}

/// Ends the QEMU run with `code`; halts if there is no exit device.
pub fn exit(code: ExitCode) -> ! {
    // SAFETY: port 0xf4 belongs to isa-debug-exit when present and is unused
    // on the machines this kernel targets when it is not.
    unsafe { Port::<u32>::new(ISA_DEBUG_EXIT_PORT).write(code as u32) };
    crate::arch::halt_forever()
}

/// COM2, where the kernel reports a program's exit status to the host.
const COM2: u16 = 0x2F8;

/// Reports `code` to the host as the line `status <code>` on COM2 (which
/// `./run-qemu.sh run` connects to a file). Nothing happens if no one listens.
pub fn report_status(code: u8) {
    use core::fmt::Write;
    let mut line = heapless_line();
    let _ = writeln!(line, "status {code}");
    for &b in line.as_bytes() {
        // SAFETY: COM2's line status and transmit registers; waiting for the
        // transmitter to be empty, then writing one byte.
        unsafe {
            let mut spins = 0;
            while Port::<u8>::new(COM2 + 5).read() & 0x20 == 0 && spins < 100_000 {
                spins += 1;
            }
            Port::<u8>::new(COM2).write(b);
        }
    }
}

fn heapless_line() -> alloc::string::String {
    alloc::string::String::with_capacity(16)
}
