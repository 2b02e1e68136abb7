//! Pipes: a ring of [`PIPE_SIZE`] bytes between a write end and a read end
//! (`pipe`, `pipe2`).
//!
//! - A read waits for data and takes what there is, up to its count; with
//!   no writer left it reads 0 (end of file) once the ring is empty.
//! - A write of at most [`PIPE_BUF`] bytes goes in whole or waits for room
//!   (it is never mixed with another's); a larger one goes in as room
//!   comes. With no reader left it fails with EPIPE, and the thread gets
//!   SIGPIPE.
//! - `O_NONBLOCK`: EAGAIN where either would wait.
//! - A signal ends a wait: EINTR, or the count done so far.
//!
//! The ring is behind one sleeping lock, held across each read's or
//! write's copies to or from the user (which may fault). Waiters sleep on
//! the pipe's address; the counts they test are atomics, changed under the
//! lock and followed by a wakeup, so a sleep's condition (checked under the
//! scheduler's lock) cannot miss one.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};

use vm::sync::SleepLock;
use vm::witness::order;

use crate::kern::sched;
use crate::proc;
use crate::syscall::errno::{EAGAIN, EFAULT, EINTR, ENOMEM, EPIPE};
use crate::syscall::uaccess::{copy_from_user, copy_to_user};

/// The bytes a pipe holds (Linux's default, 16 pages).
pub const PIPE_SIZE: usize = 65536;
/// Writes of at most this many bytes are atomic (POSIX's PIPE_BUF).
pub const PIPE_BUF: usize = 4096;
/// Bytes copied between the user and the ring at a time.
const CHUNK: usize = 512;

const SIGPIPE: u8 = 13;

struct Ring {
    buf: Vec<u8>,
    /// Where the oldest byte is.
    head: usize,
}

/// A pipe: its ring and the ends still open.
pub struct Pipe {
    ring: SleepLock<Ring>,
    /// Bytes in the ring: changed under the ring's lock, read by sleep
    /// conditions without it. (A; SeqCst, as the two counts below: each
    /// change is followed by a wakeup that the condition pairs with.)
    len: AtomicUsize,
    readers: AtomicUsize,
    writers: AtomicUsize,
}

/// One end of a pipe, as an open file holds it: when the last descriptor of
/// the open file goes, so does the end (and a waiter on the other is woken).
pub struct PipeEnd {
    pub pipe: Arc<Pipe>,
    pub write: bool,
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        let count = if self.write { &self.pipe.writers } else { &self.pipe.readers };
        count.fetch_sub(1, Ordering::SeqCst);
        notify(&self.pipe);
    }
}

/// Where `poll` sleeps: every change of any pipe wakes it too.
pub static POLL_CHAN: u8 = 0;

/// Wakes the waiters on `pipe`, and every `poll`.
fn notify(pipe: &Pipe) {
    sched::wakeup(pipe.chan());
    sched::wakeup(&POLL_CHAN as *const u8 as usize);
}

/// A new pipe's read end and write end; ENOMEM if the ring cannot be had.
pub fn new() -> Result<(PipeEnd, PipeEnd), i64> {
    let mut buf = Vec::new();
    buf.try_reserve_exact(PIPE_SIZE).map_err(|_| ENOMEM)?;
    buf.resize(PIPE_SIZE, 0);
    let pipe = Arc::try_new(Pipe {
        ring: SleepLock::ranked(Ring { buf, head: 0 }, &order::PIPE),
        len: AtomicUsize::new(0),
        readers: AtomicUsize::new(1),
        writers: AtomicUsize::new(1),
    })
    .map_err(|_| ENOMEM)?;
    Ok((PipeEnd { pipe: pipe.clone(), write: false }, PipeEnd { pipe, write: true }))
}

impl Pipe {
    fn chan(&self) -> usize {
        self as *const Pipe as usize
    }

    /// Sleeps until `blocked` is false, or a signal is to be acted on
    /// (EINTR).
    fn wait(&self, blocked: impl Fn() -> bool) -> Result<(), i64> {
        let me = proc::current_thread();
        let signalled = || me.as_ref().is_some_and(|t| proc::signal_pending_in(t));
        while blocked() {
            if signalled() {
                return Err(EINTR);
            }
            sched::sleep_if(self.chan(), || blocked() && !signalled());
        }
        Ok(())
    }

    /// `read` of up to `count` bytes into the user's `buf`.
    pub fn read(&self, buf: u64, count: u64, nonblock: bool) -> Result<u64, i64> {
        if count == 0 {
            return Ok(0);
        }
        loop {
            let mut ring = self.ring.lock();
            let len = self.len.load(Ordering::SeqCst);
            if len > 0 {
                let want = (count as usize).min(len);
                let mut done = 0;
                let mut chunk = [0u8; CHUNK];
                while done < want {
                    let n = (want - done).min(CHUNK);
                    for (i, b) in chunk[..n].iter_mut().enumerate() {
                        *b = ring.buf[(ring.head + i) % PIPE_SIZE];
                    }
                    // The bytes leave the ring only once they are the user's.
                    if copy_to_user(buf + done as u64, &chunk[..n]).is_err() {
                        break;
                    }
                    ring.head = (ring.head + n) % PIPE_SIZE;
                    self.len.fetch_sub(n, Ordering::SeqCst);
                    done += n;
                }
                drop(ring);
                notify(self);
                return if done > 0 { Ok(done as u64) } else { Err(EFAULT) };
            }
            if self.writers.load(Ordering::SeqCst) == 0 {
                return Ok(0);
            }
            drop(ring);
            if nonblock {
                return Err(EAGAIN);
            }
            self.wait(|| self.len.load(Ordering::SeqCst) == 0 && self.writers.load(Ordering::SeqCst) > 0)?;
        }
    }

    /// `write` of `count` bytes from the user's `buf`.
    pub fn write(&self, buf: u64, count: u64, nonblock: bool) -> Result<u64, i64> {
        let count = count as usize;
        let mut done = 0;
        while done < count || count == 0 {
            let mut ring = self.ring.lock();
            if self.readers.load(Ordering::SeqCst) == 0 {
                drop(ring);
                if done > 0 {
                    return Ok(done as u64);
                }
                if let Some(t) = proc::current_thread() {
                    proc::send_thread_signal(&t, SIGPIPE, proc::SigInfo::default());
                }
                return Err(EPIPE);
            }
            if count == 0 {
                return Ok(0);
            }
            // A write of PIPE_BUF bytes or fewer goes in at once or not at
            // all; a longer one as room comes.
            let need = if count <= PIPE_BUF { count } else { 1 };
            let room = PIPE_SIZE - self.len.load(Ordering::SeqCst);
            if room >= need {
                let want = (count - done).min(room);
                let mut put = 0;
                let mut chunk = [0u8; CHUNK];
                while put < want {
                    let n = (want - put).min(CHUNK);
                    if copy_from_user(&mut chunk[..n], buf + (done + put) as u64).is_err() {
                        break;
                    }
                    let tail = ring.head + self.len.load(Ordering::SeqCst);
                    for (i, b) in chunk[..n].iter().enumerate() {
                        ring.buf[(tail + i) % PIPE_SIZE] = *b;
                    }
                    self.len.fetch_add(n, Ordering::SeqCst);
                    put += n;
                }
                drop(ring);
                notify(self);
                done += put;
                if put < want {
                    return if done > 0 { Ok(done as u64) } else { Err(EFAULT) };
                }
                continue;
            }
            drop(ring);
            if nonblock {
                return if done > 0 { Ok(done as u64) } else { Err(EAGAIN) };
            }
            let blocked = || PIPE_SIZE - self.len.load(Ordering::SeqCst) < need && self.readers.load(Ordering::SeqCst) > 0;
            if let Err(e) = self.wait(blocked) {
                return if done > 0 { Ok(done as u64) } else { Err(e) };
            }
        }
        Ok(done as u64)
    }

    /// What `poll` finds at `end` (reads atomics only: usable in a sleep's
    /// condition): readable or at end of file (read end), room for
    /// PIPE_BUF bytes or no reader left (write end).
    pub fn ready(&self, write: bool) -> Ready {
        let len = self.len.load(Ordering::SeqCst);
        if write {
            Ready {
                input: false,
                output: PIPE_SIZE - len >= PIPE_BUF,
                hangup: false,
                error: self.readers.load(Ordering::SeqCst) == 0,
            }
        } else {
            Ready { input: len > 0, output: false, hangup: self.writers.load(Ordering::SeqCst) == 0, error: false }
        }
    }
}

/// A descriptor's state as `poll` reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    pub input: bool,
    pub output: bool,
    pub hangup: bool,
    pub error: bool,
}
