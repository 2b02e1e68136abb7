//! `/proc`: what the kernel tells programs about processes and memory, in
//! Linux's formats, so that the tools and tests written for Linux read it
//! unchanged.
//!
//! | path | what |
//! |------|------|
//! | `/proc/PID/maps`, `/proc/self/maps` | one line per map entry |
//! | `/proc/PID/smaps`, `smaps_rollup` | the same with each entry's pages, from the pmap ([`maps`]) |
//! | `/proc/PID/pagemap` | a word per page: frame, swap block, flags ([`pagemap`]) |
//! | `/proc/PID/mem` | the memory itself, read and written as a debugger does ([`mem`]) |
//! | `/proc/PID/status`, `statm` | the process's sizes, its threads |
//! | `/proc/meminfo` | the page counts of the machine |
//! | `/proc/vmstat` | swap traffic (`pswpin`, `pswpout`) |
//! | `/proc/sys/vm/mmap_min_addr`, `overcommit_memory`, `max_map_count` | the limits the VM keeps |
//!
//! Each file's text (all but `pagemap` and `mem`, read as they are asked
//! for) is made when it is opened, from the map, the pmap and the counters
//! as they are then, and read from that snapshot (Linux makes it as it is
//! read; a program that reads a file whole sees the same).
//! Making it takes the map lock, then the pmap lock a leaf table at a
//! time: the order of the fault path. Every byte is allocated fallibly: no
//! memory gives ENOMEM, not a panic.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::{self, Write};

use crate::proc::{self, Process};
use crate::syscall::errno::{ENOENT, ENOMEM};

pub mod kpageflags;
mod maps;
pub mod mem;
pub mod pagemap;

/// A text made with fallible allocation: a write that finds no memory
/// fails (`fmt::Error`), and the open with it.
pub(super) struct Text(Vec<u8>);

impl Text {
    fn bytes(&mut self, b: &[u8]) -> fmt::Result {
        self.0.try_reserve(b.len()).map_err(|_| fmt::Error)?;
        self.0.extend_from_slice(b);
        Ok(())
    }
}

impl Write for Text {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.bytes(s.as_bytes())
    }
}

/// What opening a `/proc` file gives.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// Its text, as it is now.
    Text(Vec<u8>),
    /// Words read as they are asked for: a pagemap, kpageflags.
    Words(Words),
    /// The memory of the process with this pid.
    Mem(u64),
}

/// The `/proc` file at `path`; `None` if `path` is not under `/proc` (the
/// caller goes on to the filesystem); ENOENT for a file /proc does not
/// have, or a process that is gone.
pub fn open(path: &[u8]) -> Option<Result<Opened, i64>> {
    match path.strip_prefix(b"/proc/").and_then(split_pid) {
        Some((Some(p), b"pagemap")) => return Some(Ok(Opened::Words(Words::Pagemap(p.pid)))),
        Some((Some(p), b"mem")) => return Some(Ok(Opened::Mem(p.pid))),
        _ => {}
    }
    if path == b"/proc/kpageflags" {
        return Some(Ok(Opened::Words(Words::KPageFlags)));
    }
    text(path).map(|r| r.map(Opened::Text))
}

/// A /proc file of 64-bit words, one per page, each at byte offset
/// `index * 8`: reads are whole words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Words {
    /// `/proc/PID/pagemap` of the process with this pid, a word per
    /// virtual page ([`pagemap`]).
    Pagemap(u64),
    /// `/proc/kpageflags`, a word per physical page ([`kpageflags`]).
    KPageFlags,
}

/// Copies words `first..` to the user's `buf`, `count` of them, none at or
/// past word `end`: `fill(index, words)` makes each batch. Returns the
/// bytes copied; a fault after some were is a short read.
fn read_words(first: u64, buf: u64, count: u64, end: u64, mut fill: impl FnMut(u64, &mut [u64])) -> Result<u64, i64> {
    let mut words = [0u64; 256];
    let mut done = 0u64;
    while done < count {
        let at = first + done;
        if at >= end {
            break;
        }
        let n = (count - done).min(words.len() as u64).min(end - at) as usize;
        fill(at, &mut words[..n]);
        // SAFETY: u64s viewed as their bytes, little-endian as Linux's.
        let raw = unsafe { core::slice::from_raw_parts(words.as_ptr() as *const u8, n * 8) };
        if let Err(e) = crate::syscall::uaccess::copy_to_user(buf + done * 8, raw) {
            return if done > 0 { Ok(done * 8) } else { Err(e) };
        }
        done += n as u64;
    }
    Ok(done * 8)
}

impl Words {
    /// Reads `count` bytes of words from byte offset `off` into the user's
    /// `buf`; how many bytes were read.
    pub fn read(self, off: u64, buf: u64, count: u64) -> Result<u64, i64> {
        match self {
            Words::Pagemap(pid) => pagemap::read(pid, off, buf, count),
            Words::KPageFlags => kpageflags::read(off, buf, count),
        }
    }
}

/// The text of the `/proc` file at `path`, as [`open`] finds it.
pub fn text(path: &[u8]) -> Option<Result<Vec<u8>, i64>> {
    let rest = path.strip_prefix(b"/proc/")?;
    let mut out = Text(Vec::new());
    let made = match rest {
        b"meminfo" => meminfo(&mut out),
        b"vmstat" => vmstat(&mut out),
        b"sys/vm/mmap_min_addr" => writeln!(out, "{}", crate::mm::vmspace::USER_START),
        // 0: heuristic overcommit. Anonymous memory is not reserved when
        // it is mapped; a fault that finds no page waits for the page
        // daemon, and a process the machine cannot hold is killed.
        b"sys/vm/overcommit_memory" => writeln!(out, "0"),
        b"sys/vm/max_map_count" => writeln!(out, "{}", vm::map::DEFAULT_MAX_ENTRIES),
        _ => {
            let (who, file) = split_pid(rest)?;
            let Some(p) = who else { return Some(Err(ENOENT)) };
            let Some(space) = p.space() else { return Some(Err(ENOENT)) };
            match file {
                b"maps" => maps::maps(&space, &p, &mut out, false),
                b"smaps" => maps::maps(&space, &p, &mut out, true),
                b"smaps_rollup" => maps::rollup(&space, &mut out),
                b"status" => status(&space, &p, &mut out),
                b"statm" => statm(&space, &mut out),
                _ => return Some(Err(ENOENT)),
            }
        }
    };
    Some(made.map(|()| out.0).map_err(|_| ENOMEM))
}

/// `PID/file` or `self/file`: the process (None if there is no such
/// process now) and the file's name. None when `rest` is neither.
fn split_pid(rest: &[u8]) -> Option<(Option<Arc<Process>>, &[u8])> {
    let slash = rest.iter().position(|&b| b == b'/')?;
    let (dir, file) = (&rest[..slash], &rest[slash + 1..]);
    let p = if dir == b"self" {
        proc::current()
    } else {
        let pid = core::str::from_utf8(dir).ok()?.parse::<u64>().ok()?;
        proc::by_pid(pid)
    };
    Some((p, file))
}

/// `/proc/PID/status`: the lines of Linux's that this kernel keeps, in its
/// order and format.
fn status(space: &crate::mm::vmspace::AddressSpace, p: &Process, out: &mut Text) -> fmt::Result {
    let sum = maps::totals(space).map_err(|_| fmt::Error)?;
    let kb = |bytes: u64| bytes >> 10;
    let name = p.name.lock().clone();
    let me = proc::current().is_some_and(|c| c.pid == p.pid);
    writeln!(out, "Name:\t{}", name.rsplit('/').next().unwrap_or(&name))?;
    writeln!(out, "State:\t{}", if me { "R (running)" } else { "S (sleeping)" })?;
    writeln!(out, "Tgid:\t{}\nPid:\t{}\nPPid:\t{}", p.pid, p.pid, p.ppid.load(core::sync::atomic::Ordering::Relaxed))?;
    writeln!(out, "TracerPid:\t0\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0")?;
    writeln!(out, "VmSize:\t{:8} kB", kb(sum.size))?;
    writeln!(out, "VmLck:\t{:8} kB", kb(sum.locked_size))?;
    writeln!(out, "VmPin:\t{:8} kB", 0)?;
    writeln!(out, "VmRSS:\t{:8} kB", kb(sum.use_.rss))?;
    writeln!(out, "RssAnon:\t{:8} kB", kb(sum.use_.anonymous - sum.shmem))?;
    writeln!(out, "RssFile:\t{:8} kB", kb(sum.use_.rss - sum.use_.anonymous))?;
    writeln!(out, "RssShmem:\t{:8} kB", kb(sum.shmem))?;
    writeln!(out, "VmData:\t{:8} kB", kb(sum.data))?;
    writeln!(out, "VmStk:\t{:8} kB", kb(sum.stack))?;
    writeln!(out, "VmExe:\t{:8} kB", kb(sum.exec))?;
    writeln!(out, "VmLib:\t{:8} kB", 0)?;
    writeln!(out, "VmSwap:\t{:8} kB", kb(sum.use_.swap))?;
    writeln!(out, "Threads:\t{}", p.thread_count())
}

/// `/proc/PID/statm`: sizes in pages: total, resident, shared (file and
/// shared memory), text, library (0), data and stack, dirty (0, as Linux).
fn statm(space: &crate::mm::vmspace::AddressSpace, out: &mut Text) -> fmt::Result {
    let sum = maps::totals(space).map_err(|_| fmt::Error)?;
    let pages = |bytes: u64| bytes / vm::PAGE_SIZE as u64;
    let shared = sum.use_.rss - sum.use_.anonymous;
    writeln!(
        out,
        "{} {} {} {} 0 {} 0",
        pages(sum.size),
        pages(sum.use_.rss),
        pages(shared),
        pages(sum.exec),
        pages(sum.data + sum.stack)
    )
}

/// `/proc/meminfo`: the page counts, in Linux's lines where the kernel
/// keeps the same thing.
fn meminfo(out: &mut Text) -> fmt::Result {
    use vm::page::Queue;
    let pm = vm::global();
    let kb = |pages: u64| pages * (vm::PAGE_SIZE as u64 / 1024);
    let total = pm.pages().len() as u64;
    let free = pm.free_count();
    let (active, inactive, laundry) =
        (pm.queue_count(Queue::Active), pm.queue_count(Queue::Inactive), pm.queue_count(Queue::Laundry));
    let (mut wired, mut dirty) = (0, 0);
    for page in pm.pages() {
        wired += page.wired() as u64;
        dirty += (page.dirty() != 0 && page.object().is_some()) as u64;
    }
    let cached = crate::fs::root().map_or(0, |m| m.cached_pages());
    let (swap_total, swap_free) = crate::mm::swap::swap().map_or((0, 0), |s| (s.pages(), s.avail()));
    // Linux's layout: the name and colon, then the figure ending in
    // column 24.
    let line = |out: &mut Text, name: &str, pages: u64| writeln!(out, "{name}:{:>w$} kB", kb(pages), w = 23 - name.len());
    line(out, "MemTotal", total)?;
    line(out, "MemFree", free)?;
    // What the page daemon can give without waiting for a write: free
    // pages and the inactive queue (the laundry's need writing first).
    line(out, "MemAvailable", free + inactive)?;
    line(out, "Buffers", 0)?;
    line(out, "Cached", cached)?;
    line(out, "SwapCached", 0)?;
    line(out, "Active", active)?;
    line(out, "Inactive", inactive + laundry)?;
    line(out, "Unevictable", wired)?;
    line(out, "Mlocked", wired)?;
    line(out, "SwapTotal", swap_total)?;
    line(out, "SwapFree", swap_free)?;
    line(out, "Dirty", dirty)?;
    line(out, "Writeback", 0)
}

/// `/proc/vmstat`: the swap counters, pages read from and written to swap
/// since boot.
fn vmstat(out: &mut Text) -> fmt::Result {
    let (pages_in, pages_out) = crate::mm::swap::pages_in_out();
    writeln!(out, "pswpin {pages_in}\npswpout {pages_out}")
}

mod tests;
