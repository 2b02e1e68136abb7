//! The console as a file: writes go to the serial port; reads wait for
//! a line typed on it, or read the input the host handed in whole.

use alloc::vec::Vec;

use crate::syscall::errno::EINTR;
use crate::syscall::uaccess::{copy_from_user, copy_to_user};

/// `write` on the console.
pub fn write(buf: u64, count: u64) -> i64 {
    let mut done = 0u64;
    let mut chunk = [0u8; 256];
    while done < count {
        let n = (count - done).min(chunk.len() as u64) as usize;
        if let Err(e) = copy_from_user(&mut chunk[..n], buf.wrapping_add(done)) {
            return if done > 0 { done as i64 } else { -e };
        }
        crate::kern::serial::write_raw(&chunk[..n]);
        done += n as u64;
    }
    done as i64
}

/// The console's input when the host handed it in whole (`./run-qemu.sh
/// run` with stdin from a pipe or a file), and how far it has been read:
/// every process shares the position, as they would share an open file.
static HANDED_INPUT: spin::Mutex<Option<(&'static [u8], usize)>> = spin::Mutex::new(None);

/// Makes `input` the console's input, read to its end and then end of file.
pub fn set_input(input: &'static [u8]) {
    x86_64::instructions::interrupts::without_interrupts(|| *HANDED_INPUT.lock() = Some((input, 0)));
}

/// `read` from the console: waits for a byte, then returns what has
/// arrived, up to a newline, like a terminal. Ctrl-D at the start of a read
/// is the end of input (0). Input handed in whole is read like a file.
pub fn read(buf: u64, count: u64) -> i64 {
    let handed = x86_64::instructions::interrupts::without_interrupts(|| {
        let mut h = HANDED_INPUT.lock();
        let (input, pos) = h.as_mut()?;
        let n = (input.len() - *pos).min(count.min(64 * 1024) as usize);
        let chunk = &input[*pos..*pos + n];
        *pos += n;
        Some(chunk)
    });
    if let Some(chunk) = handed {
        return match copy_to_user(buf, chunk) {
            Ok(()) => chunk.len() as i64,
            Err(e) => -e,
        };
    }
    if count == 0 {
        return 0;
    }
    // Check the buffer before waiting for input.
    let mut probe = [0u8; 1];
    if let Err(e) = copy_from_user(&mut probe, buf) {
        return -e;
    }
    let want = count.min(4096) as usize;
    let mut got: Vec<u8> = Vec::new();
    loop {
        while got.len() < want && got.last() != Some(&b'\n') {
            match crate::kern::serial::try_read_byte() {
                Some(4) if got.is_empty() => return 0,
                Some(4) | None => break,
                Some(b'\r') => got.push(b'\n'),
                Some(b) => got.push(b),
            }
        }
        if !got.is_empty() {
            return match copy_to_user(buf, &got) {
                Ok(()) => got.len() as i64,
                Err(e) => -e,
            };
        }
        if crate::proc::signal_pending() {
            return -EINTR;
        }
        // Poll again at the next tick: the console's receive interrupt is
        // not wired up.
        crate::kern::sched::sleep_until(chan(), crate::kern::time::ticks() + 1, || true);
    }
}

/// The channel a console read polls on (nothing wakes it: only the
/// timeout).
fn chan() -> usize {
    static CHAN: u8 = 0;
    &CHAN as *const u8 as usize
}
