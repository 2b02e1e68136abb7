//! The memory system calls: `brk`, `mmap`, `mremap`, `munmap`,
//! `mprotect`, `madvise`, `mincore`, `mlock` and friends, `msync`, with
//! Linux's flags and error values.

use alloc::sync::Arc;
use core::sync::atomic::Ordering;

use vm::map::{Inherit, MapError, Remap, RemapError};
use vm::pmap::Prot;

use crate::mm::vmspace::{AddressSpace, TASK_SIZE};
use crate::proc::{self, RLIMIT_AS, RLIMIT_MEMLOCK};
use crate::syscall::errno::*;

const PAGE: u64 = vm::PAGE_SIZE as u64;

const PROT_READ: u64 = 1;
const PROT_WRITE: u64 = 2;
const PROT_EXEC: u64 = 4;

const MAP_SHARED: u64 = 0x01;
const MAP_PRIVATE: u64 = 0x02;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_POPULATE: u64 = 0x8000;
const MAP_GROWSDOWN: u64 = 0x100;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
/// Flags accepted (and ignored where they only advise).
const MAP_KNOWN: u64 = MAP_SHARED | MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS | MAP_POPULATE | MAP_FIXED_NOREPLACE
    | MAP_GROWSDOWN | 0x4000 /* MAP_NORESERVE */ | 0x2_0000 /* MAP_STACK */;

/// Where `mmap` looks for space when given no usable hint.
const MMAP_BASE: u64 = 0x7000_0000_0000;

fn prot(p: u64) -> Option<Prot> {
    if p & !(PROT_READ | PROT_WRITE | PROT_EXEC) != 0 {
        return None;
    }
    let mut r = Prot::empty();
    if p & PROT_READ != 0 {
        r |= Prot::READ;
    }
    if p & PROT_WRITE != 0 {
        r |= Prot::WRITE;
    }
    if p & PROT_EXEC != 0 {
        r |= Prot::EXEC;
    }
    Some(r)
}

fn page_up(x: u64) -> Option<u64> {
    x.checked_add(PAGE - 1).map(|v| v & !(PAGE - 1))
}

/// `brk(addr)`: moves the end of the heap; returns the (new or old) end.
pub fn brk(addr: u64) -> i64 {
    let Some(p) = proc::current() else { return -ENOMEM };
    let Some(space) = p.space() else { return -ENOMEM };
    let mut b = p.brk.lock();
    let (start, cur) = *b;
    if addr < start || addr >= TASK_SIZE {
        return cur as i64;
    }
    let (old_top, new_top) = (page_up(cur).unwrap_or(cur), page_up(addr).unwrap_or(addr));
    let mut map = space.map.lock();
    if new_top > old_top {
        if map.size().saturating_add(new_top - old_top) > p.limit(RLIMIT_AS)
            || (p.lock_future.load(Ordering::SeqCst)
                && map.wired_size().saturating_add(new_top - old_top) > p.limit(RLIMIT_MEMLOCK))
        {
            return cur as i64;
        }
        if map.map(Some(old_top), new_top - old_top, Prot::RW, Prot::ALL, Inherit::Copy, None, false).is_err() {
            return cur as i64;
        }
        drop(map);
        if p.lock_future.load(Ordering::SeqCst)
            && vm::fault::lock(&space.map, old_top, new_top, p.lock_future_on_fault.load(Ordering::SeqCst)).is_err()
        {
            let _ = space.map.lock().unmap(old_top, new_top);
            return cur as i64;
        }
    } else if new_top < old_top && map.unmap(new_top, old_top).is_err() {
        return cur as i64;
    }
    b.1 = addr;
    addr as i64
}

/// `mmap(addr, len, prot, flags, fd, off)`: anonymous memory or a file's
/// pages. Errors as Linux's: EINVAL for bad flags, lengths and alignment;
/// ENOMEM for a range past [`TASK_SIZE`], no free space, the map's entry
/// limit or RLIMIT_AS; EOVERFLOW for a file range whose end passes the
/// largest file offset; EEXIST for `MAP_FIXED_NOREPLACE` over a mapping.
pub fn mmap(addr: u64, len: u64, prot_bits: u64, flags: u64, fd: u64, off: u64) -> i64 {
    let Some(prot) = prot(prot_bits) else { return -EINVAL };
    let kind = flags & (MAP_SHARED | MAP_PRIVATE);
    if len == 0 || kind == 0 || kind == (MAP_SHARED | MAP_PRIVATE) || flags & !MAP_KNOWN != 0 {
        return -EINVAL;
    }
    if !off.is_multiple_of(PAGE) {
        return -EINVAL;
    }
    let Some(len) = page_up(len).filter(|l| *l <= TASK_SIZE) else { return -ENOMEM };
    // A file mapping: the vnode's object, shared, or private (copy on write).
    let file = if flags & MAP_ANONYMOUS == 0 {
        let Some(f) = proc::current().and_then(|p| p.file(fd)) else { return -EBADF };
        let Some(v) = f.vnode().cloned() else { return -ENODEV };
        // The range must end within the largest file offset (Linux's
        // file_mmap_ok with MAX_LFS_FILESIZE): page indices then fit the
        // pager's byte offsets.
        const MAX_FILE: u64 = i64::MAX as u64;
        if off / PAGE > (MAX_FILE - len) / PAGE {
            return -EOVERFLOW;
        }
        if !f.readable || (kind == MAP_SHARED && prot.contains(Prot::WRITE) && !f.writable) {
            return -EACCES;
        }
        // A shared mapping of a file opened read-only can never be made
        // writable; a private one can (its writes stay private).
        let max = if kind == MAP_SHARED && !f.writable { Prot::READ | Prot::EXEC } else { Prot::ALL };
        Some((v, max))
    } else {
        None
    };
    let fixed = flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0;
    let noreplace = flags & MAP_FIXED_NOREPLACE != 0;
    if fixed && (!addr.is_multiple_of(PAGE) || addr == 0) {
        return -EINVAL;
    }
    if fixed && addr > TASK_SIZE - len {
        return -ENOMEM;
    }
    let Some(p) = proc::current() else { return -ENOMEM };
    let Some(space) = p.space() else { return -ENOMEM };
    let inherit = if kind == MAP_SHARED { Inherit::Share } else { Inherit::Copy };
    let locked = p.lock_future.load(Ordering::SeqCst);
    let on_fault = p.lock_future_on_fault.load(Ordering::SeqCst);
    let start = {
        let mut map = space.map.lock();
        // RLIMIT_AS counts what the call adds; MAP_FIXED replaces what it
        // covers. mlockall(MCL_FUTURE) makes RLIMIT_MEMLOCK count too.
        let replaced = if fixed && !noreplace { map.mapped_in(addr, addr + len) } else { 0 };
        if (map.size() - replaced).saturating_add(len) > p.limit(RLIMIT_AS) {
            return -ENOMEM;
        }
        if locked && map.wired_size().saturating_add(len) > p.limit(RLIMIT_MEMLOCK) {
            return -EAGAIN;
        }
        let at = if fixed {
            // MAP_FIXED_NOREPLACE: `map` refuses an overlap (a range query
            // over the entries), as EEXIST below.
            if !noreplace {
                match map.unmap(addr, addr + len) {
                    Ok(()) => {}
                    Err(MapError::TooManyEntries | MapError::NoMemory) => return -ENOMEM,
                    Err(_) => return -EINVAL,
                }
            }
            addr
        } else {
            let hint = if addr.is_multiple_of(PAGE) && addr >= 0x1_0000 { addr } else { MMAP_BASE };
            match map.find_space_from(hint, len, PAGE).or_else(|| map.find_space_from(0x1_0000, len, PAGE)) {
                Some(a) => a,
                None => return -ENOMEM,
            }
        };
        let mapped = match &file {
            Some((v, max)) => {
                v.object.reference();
                let r = map.map(Some(at), len, prot, *max, inherit, Some((v.object.clone(), off / PAGE)), kind == MAP_PRIVATE);
                if r.is_err() {
                    v.object.clone().deallocate();
                }
                r
            }
            None => map.map(Some(at), len, prot, Prot::ALL, inherit, None, false),
        };
        match mapped {
            // MAP_GROWSDOWN: anonymous memory that grows down on faults
            // below it, as the stack does (a file mapping ignores it).
            Ok(a) if flags & MAP_GROWSDOWN != 0 && file.is_none() => {
                map.set_grows_down(a);
                a
            }
            Ok(a) => a,
            Err(MapError::Overlap) => return -EEXIST,
            Err(_) => return -ENOMEM,
        }
    };
    if locked {
        // mlockall(MCL_FUTURE): locked from the start, or not mapped at all.
        if let Err(e) = vm::fault::lock(&space.map, start, start + len, on_fault) {
            let _ = space.map.lock().unmap(start, start + len);
            return if e == vm::fault::FaultError::NoMemory { -EAGAIN } else { -ENOMEM };
        }
    } else if flags & MAP_POPULATE != 0 && prot.contains(Prot::READ) {
        let mut va = start;
        while va < start + len && !proc::signal_pending() {
            let access = if prot.contains(Prot::WRITE) { Prot::WRITE } else { Prot::READ };
            if vm::fault::fault(&space.map, va, access, false).is_err() {
                break;
            }
            va += PAGE;
        }
    }
    start as i64
}

/// `mremap(old, old_len, new_len, flags, new_addr)`: shrinks a range, grows
/// it in place, or moves it, its page-table entries with it (`vm::map`'s
/// `remap`), with Linux's checks, steps and errors. Memory added to a
/// locked range is locked (faulted in and wired) before the call returns.
pub fn mremap(old: u64, old_len: u64, new_len: u64, flags: u64, new_addr: u64) -> i64 {
    const MREMAP_MAYMOVE: u64 = 1;
    const MREMAP_FIXED: u64 = 2;
    const MREMAP_DONTUNMAP: u64 = 4;
    if flags & !(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP) != 0 {
        return -EINVAL;
    }
    let may_move = flags & MREMAP_MAYMOVE != 0;
    if flags & MREMAP_FIXED != 0 && !may_move {
        return -EINVAL;
    }
    // Before rounding, as Linux compares them.
    let dont_unmap = flags & MREMAP_DONTUNMAP != 0;
    if dont_unmap && (!may_move || old_len != new_len) {
        return -EINVAL;
    }
    if !old.is_multiple_of(PAGE) {
        return -EINVAL;
    }
    // Linux's PAGE_ALIGN, which wraps to 0.
    let round = |len: u64| len.wrapping_add(PAGE - 1) & !(PAGE - 1);
    let (old_len, new_len) = (round(old_len), round(new_len));
    if new_len == 0 {
        return -EINVAL;
    }
    let Some(p) = proc::current() else { return -EINVAL };
    let Some(space) = p.space() else { return -EINVAL };
    let fixed = flags & MREMAP_FIXED != 0;
    let hinted = dont_unmap && !fixed && new_addr.is_multiple_of(PAGE) && new_addr >= 0x1_0000;
    let r = Remap {
        old,
        old_len,
        new_len,
        may_move,
        fixed: fixed.then_some(new_addr),
        dont_unmap,
        new_addr,
        search_from: if hinted { new_addr } else { MMAP_BASE },
        size_limit: p.limit(RLIMIT_AS),
        wired_limit: p.limit(RLIMIT_MEMLOCK),
    };
    let done = match space.map.lock().remap(&r) {
        Ok(done) => done,
        Err(RemapError::Fault) => return -EFAULT,
        Err(RemapError::Invalid) => return -EINVAL,
        Err(RemapError::NoMemory) => return -ENOMEM,
        Err(RemapError::WiredLimit) => return -EAGAIN,
    };
    // A locked range's new memory: faulted in and wired, then one entry
    // with the rest. Linux leaves a failure here unreported too (the
    // range is in place; its pages come at their faults).
    if let Some(w) = done.wire
        && vm::fault::lock(&space.map, w.start, w.end, w.on_fault).is_ok()
    {
        let _ = space.map.lock().join(w.start, w.end);
    }
    done.addr as i64
}

/// `munmap(addr, len)`.
pub fn munmap(addr: u64, len: u64) -> i64 {
    if !addr.is_multiple_of(PAGE) || len == 0 {
        return -EINVAL;
    }
    let Some(end) = page_up(len).and_then(|l| addr.checked_add(l)).filter(|e| *e <= TASK_SIZE) else { return -EINVAL };
    let Some(space) = proc::current().and_then(|p| p.space()) else { return -EINVAL };
    match space.map.lock().unmap(addr, end) {
        Ok(()) => 0,
        // A hole in the middle of an entry needs one more (Linux: ENOMEM),
        // as does room for the objects let go.
        Err(MapError::TooManyEntries | MapError::NoMemory) => -ENOMEM,
        Err(_) => -EINVAL,
    }
}

/// `mprotect(addr, len, prot)`.
pub fn mprotect(addr: u64, len: u64, prot_bits: u64) -> i64 {
    let Some(prot) = prot(prot_bits) else { return -EINVAL };
    if !addr.is_multiple_of(PAGE) {
        return -EINVAL;
    }
    if len == 0 {
        return 0;
    }
    let Some(end) = page_up(len).and_then(|l| addr.checked_add(l)).filter(|e| *e <= TASK_SIZE) else { return -ENOMEM };
    let Some(space) = proc::current().and_then(|p| p.space()) else { return -EINVAL };
    let mut map = space.map.lock();
    if !map.fully_mapped(addr, end) {
        return -ENOMEM;
    }
    match map.protect(addr, end, prot) {
        Ok(()) => 0,
        Err(MapError::Protection) => -EACCES,
        Err(_) => -ENOMEM,
    }
}

/// What a call on mapped memory answers for a length whose page rounding
/// wraps (to 0, as Linux's PAGE_ALIGN) and for an end that wraps around:
/// each call has its own, as on Linux.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Wrap {
    /// None: the rounded length is 0, an empty range (mlock, msync).
    length: Option<i64>,
    end: i64,
}

/// madvise: EINVAL for either.
const WRAP_MADVISE: Wrap = Wrap { length: Some(EINVAL), end: EINVAL };
/// mlock and munlock: an empty range, or EINVAL.
const WRAP_MLOCK: Wrap = Wrap { length: None, end: EINVAL };
/// msync: an empty range, or ENOMEM.
const WRAP_MSYNC: Wrap = Wrap { length: None, end: ENOMEM };
/// mincore: not a user range, ENOMEM.
const WRAP_MINCORE: Wrap = Wrap { length: Some(ENOMEM), end: ENOMEM };

/// The page-aligned range `[addr, addr + len)` of a call on mapped memory,
/// with Linux's errors: `addr` unaligned is EINVAL; wrapping as `wrap`
/// says; an end past [`TASK_SIZE`] is ENOMEM (nothing is mapped there).
/// `len` 0 gives an empty range.
fn range(addr: u64, len: u64, wrap: Wrap) -> Result<(u64, u64), i64> {
    if !addr.is_multiple_of(PAGE) {
        return Err(EINVAL);
    }
    let len = match (page_up(len), wrap.length) {
        (Some(l), _) => l,
        (None, None) => 0,
        (None, Some(e)) => return Err(e),
    };
    let end = addr.checked_add(len).ok_or(wrap.end)?;
    if end > TASK_SIZE && end != addr {
        return Err(ENOMEM);
    }
    Ok((addr, end))
}

fn current_space() -> Result<Arc<AddressSpace>, i64> {
    proc::current().and_then(|p| p.space()).ok_or(EINVAL)
}

/// `madvise(addr, len, advice)`. `MADV_DONTNEED` drops the pages of the
/// range: private anonymous memory reads as zeros afterwards, shared memory
/// keeps its contents (only the mappings go). `MADV_FREE` gives private
/// anonymous pages up lazily (`VmMap::free_lazily`). `MADV_WILLNEED` maps
/// the pages already resident; `MADV_POPULATE_*` fault them all in. The
/// other advice is accepted and has no effect yet.
pub fn madvise(addr: u64, len: u64, advice: u64) -> i64 {
    const MADV_NORMAL: u64 = 0;
    const MADV_RANDOM: u64 = 1;
    const MADV_SEQUENTIAL: u64 = 2;
    const MADV_WILLNEED: u64 = 3;
    const MADV_DONTNEED: u64 = 4;
    const MADV_FREE: u64 = 8;
    const MADV_DONTFORK: u64 = 10;
    const MADV_DOFORK: u64 = 11;
    const MADV_HUGEPAGE: u64 = 14;
    const MADV_NOHUGEPAGE: u64 = 15;
    const MADV_POPULATE_READ: u64 = 22;
    const MADV_POPULATE_WRITE: u64 = 23;
    match advice {
        MADV_NORMAL | MADV_RANDOM | MADV_SEQUENTIAL | MADV_WILLNEED | MADV_DONTNEED | MADV_FREE | MADV_DONTFORK | MADV_DOFORK
        | MADV_HUGEPAGE | MADV_NOHUGEPAGE => {}
        MADV_POPULATE_READ | MADV_POPULATE_WRITE => {
            let access = if advice == MADV_POPULATE_WRITE { Prot::WRITE } else { Prot::READ };
            return match range(addr, len, WRAP_MADVISE) {
                Ok((start, end)) => populate(start, end, access),
                Err(e) => -e,
            };
        }
        _ => return -EINVAL,
    }
    let (space, start, end) = match mapped_range(addr, len, WRAP_MADVISE) {
        Ok(Some(r)) => r,
        Ok(None) => return 0,
        Err(e) => return -e,
    };
    let mut map = space.map.lock();
    match advice {
        MADV_DONTNEED => {
            if map.overlapping(start, end).any(|e| e.wired_count > 0) {
                return -EINVAL;
            }
            match map.discard(start, end) {
                Ok(()) => 0,
                Err(MapError::TooManyEntries) => -ENOMEM,
                Err(_) => -EAGAIN,
            }
        }
        MADV_FREE => {
            // Private anonymous memory only, and not locked (Linux's
            // EINVAL otherwise).
            if map.overlapping(start, end).any(|e| e.wired_count > 0) || !map.private_anonymous(start, end) {
                return -EINVAL;
            }
            map.free_lazily(start, end);
            0
        }
        MADV_WILLNEED => {
            // Map what the first objects hold resident; no memory is
            // allocated on advice (the pagers will read ahead here).
            let mut addrs = alloc::vec::Vec::new();
            for e in map.overlapping(start, end).filter(|e| e.prot.contains(Prot::READ)) {
                let Some(obj) = &e.object else { continue };
                let (s, t) = (e.start.max(start), e.end.min(end));
                let first = e.offset + (s - e.start) / PAGE;
                let last = e.offset + (t - e.start) / PAGE;
                for page in obj.lock().pages_in(first, last) {
                    if addrs.try_reserve(1).is_err() {
                        break;
                    }
                    addrs.push(e.start + (page.pindex() - e.offset) * PAGE);
                }
            }
            drop(map);
            for va in addrs {
                let _ = vm::fault::fault(&space.map, va, Prot::READ, false);
            }
            0
        }
        _ => 0,
    }
}

/// `MADV_POPULATE_READ` / `MADV_POPULATE_WRITE`: faults every page of
/// `[start, end)` in as a read or a write would, without touching it (a
/// write fault copies a private page, and dirties it). Linux's errors:
/// ENOMEM for a hole (once what is mapped around it is done) or for want
/// of memory,
/// EINVAL where the protection refuses the access, EFAULT where the page
/// cannot be had (past a file's end, a read error), EINTR on a signal.
fn populate(start: u64, end: u64, access: Prot) -> i64 {
    let space = match current_space() {
        Ok(s) => s,
        Err(e) => return -e,
    };
    let mut va = start;
    let mut hole = false;
    while va < end {
        if proc::signal_pending() {
            return -EINTR;
        }
        // One entry at a time: its protection is checked once.
        let e_end = {
            let map = space.map.lock();
            let Some(e) = map.entry(va) else {
                hole = true;
                va = map.overlapping(va, end).next().map_or(end, |e| e.start);
                continue;
            };
            if !e.prot.contains(access) {
                return -EINVAL;
            }
            e.end.min(end)
        };
        while va < e_end {
            match vm::fault::fault(&space.map, va, access, false) {
                Ok(_) => {}
                Err(vm::fault::FaultError::NoEntry | vm::fault::FaultError::NoMemory) => return -ENOMEM,
                Err(vm::fault::FaultError::Protection) => return -EINVAL,
                Err(_) => return -EFAULT,
            }
            va += PAGE;
            if proc::signal_pending() {
                return -EINTR;
            }
        }
    }
    if hole { -ENOMEM } else { 0 }
}

/// True if the page at `va` is resident in the object chain behind it
/// (the map lock held: map lock, then object locks, is the lock order).
fn resident(map: &vm::map::VmMap, va: u64) -> bool {
    let Some(e) = map.entry(va) else { return false };
    let Some(obj) = &e.object else { return false };
    let pindex = e.offset + (va - e.start) / PAGE;
    vm::object::lookup_chain(obj, pindex).is_some_and(|(_, page, _)| page.all_valid())
}

/// `mincore(addr, len, vec)`: one byte per page, 1 if resident. The answer
/// is as long as the range, so the work is too; a signal (every one that is
/// delivered ends the process) stops it between chunks.
pub fn mincore(addr: u64, len: u64, vec: u64) -> i64 {
    let (space, start, end) = match mapped_range(addr, len, WRAP_MINCORE) {
        Ok(Some(r)) => r,
        Ok(None) => return 0,
        Err(e) => return -e,
    };
    let mut out = [0u8; 256];
    let mut va = start;
    let mut at = vec;
    while va < end {
        if proc::signal_pending() {
            return -EINTR;
        }
        let n = (((end - va) / PAGE) as usize).min(out.len());
        {
            let map = space.map.lock();
            for (i, b) in out[..n].iter_mut().enumerate() {
                *b = resident(&map, va + i as u64 * PAGE) as u8;
            }
        }
        if let Err(e) = crate::syscall::uaccess::copy_to_user(at, &out[..n]) {
            return -e;
        }
        va += n as u64 * PAGE;
        at += n as u64;
    }
    0
}

/// Locks `[start, end)`: wires every page of it not wired yet (locks do
/// not nest), or with `on_fault` marks it to be wired as it is faulted in.
fn lock_range(space: &AddressSpace, start: u64, end: u64, on_fault: bool) -> i64 {
    match vm::fault::lock(&space.map, start, end, on_fault) {
        Ok(()) => 0,
        Err(vm::fault::FaultError::NoMemory) => -EAGAIN,
        Err(_) => -ENOMEM,
    }
}

/// Unwires every wired entry part of `[start, end)`.
fn unlock_range(space: &AddressSpace, start: u64, end: u64) {
    // One entry at a time, by range queries: nothing to allocate.
    let mut cur = start;
    while cur < end {
        let mut map = space.map.lock();
        let Some((s, e)) = map.overlapping(cur, end).find(|e| e.wired_count > 0).map(|e| (e.start.max(cur), e.end.min(end)))
        else {
            break;
        };
        let _ = map.unwire(s, e);
        cur = e;
    }
}

/// The current address space and the range of a call on mapped memory:
/// `addr` page-aligned (EINVAL if not) and the whole range mapped (ENOMEM
/// if not); None for an empty range.
fn mapped_range(addr: u64, len: u64, wrap: Wrap) -> Result<Option<(Arc<AddressSpace>, u64, u64)>, i64> {
    let (start, end) = range(addr, len, wrap)?;
    if start == end {
        return Ok(None);
    }
    let space = current_space()?;
    if !space.map.lock().fully_mapped(start, end) {
        return Err(ENOMEM);
    }
    Ok(Some((space, start, end)))
}

/// The range of `mlock` / `munlock`: the address is rounded down, as Linux
/// does.
fn lock_args(addr: u64, len: u64) -> Result<Option<(Arc<AddressSpace>, u64, u64)>, i64> {
    let addr_down = addr & !(PAGE - 1);
    match (addr - addr_down).checked_add(len) {
        Some(len) => mapped_range(addr_down, len, WRAP_MLOCK),
        // The length and the offset wrap: 0 after rounding, as Linux's.
        None => Ok(None),
    }
}

/// RLIMIT_MEMLOCK for wiring `[start, end)` in `space` as well as what is
/// wired already: EPERM when the limit is 0, ENOMEM past it (Linux's
/// errors for an unprivileged caller).
fn memlock_check(space: &AddressSpace, start: u64, end: u64) -> Result<(), i64> {
    let limit = proc::current().map_or(0, |p| p.limit(RLIMIT_MEMLOCK));
    if limit == 0 {
        return Err(EPERM);
    }
    let map = space.map.lock();
    let already: u64 =
        map.overlapping(start, end).filter(|e| e.wired_count > 0).map(|e| e.end.min(end) - e.start.max(start)).sum();
    if map.wired_size() + (end - start - already) > limit {
        return Err(ENOMEM);
    }
    Ok(())
}

/// `mlock(addr, len)`: faults every page in and wires it.
pub fn mlock(addr: u64, len: u64) -> i64 {
    mlock2(addr, len, 0)
}

/// `mlock2(addr, len, flags)`: `mlock`, or with `MLOCK_ONFAULT` the range
/// is locked but its pages are wired only as they are faulted in (those
/// there now at once).
pub fn mlock2(addr: u64, len: u64, flags: u64) -> i64 {
    const MLOCK_ONFAULT: u64 = 1;
    if flags & !MLOCK_ONFAULT != 0 {
        return -EINVAL;
    }
    match lock_args(addr, len) {
        Ok(Some((space, start, end))) => match memlock_check(&space, start, end) {
            Ok(()) => lock_range(&space, start, end, flags & MLOCK_ONFAULT != 0),
            Err(e) => -e,
        },
        Ok(None) => 0,
        Err(e) => -e,
    }
}

/// `munlock(addr, len)`.
pub fn munlock(addr: u64, len: u64) -> i64 {
    match lock_args(addr, len) {
        Ok(Some((space, start, end))) => {
            unlock_range(&space, start, end);
            0
        }
        Ok(None) => 0,
        Err(e) => -e,
    }
}

/// `mlockall(flags)`: MCL_CURRENT wires everything mapped now; MCL_FUTURE
/// wires what is mapped later (mmap, brk, stack growth); with MCL_ONFAULT
/// either is wired as its pages are faulted in. Each call says anew what
/// happens to later mappings, as on Linux.
pub fn mlockall(flags: u64) -> i64 {
    const MCL_CURRENT: u64 = 1;
    const MCL_FUTURE: u64 = 2;
    const MCL_ONFAULT: u64 = 4;
    if flags == 0 || flags & !(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0 || flags == MCL_ONFAULT {
        return -EINVAL;
    }
    let Some(p) = proc::current() else { return -EINVAL };
    let space = match current_space() {
        Ok(s) => s,
        Err(e) => return -e,
    };
    let limit = p.limit(RLIMIT_MEMLOCK);
    if limit == 0 {
        return -EPERM;
    }
    // Linux compares all that is mapped with the limit.
    if flags & MCL_CURRENT != 0 && space.map.lock().size() > limit {
        return -ENOMEM;
    }
    p.lock_future.store(flags & MCL_FUTURE != 0, Ordering::SeqCst);
    p.lock_future_on_fault.store(flags & (MCL_FUTURE | MCL_ONFAULT) == MCL_FUTURE | MCL_ONFAULT, Ordering::SeqCst);
    p.update_map_limits();
    if flags & MCL_CURRENT != 0 {
        // Only what can be wired: inaccessible ranges (guard pages) stay out.
        let all: alloc::vec::Vec<(u64, u64)> =
            space.map.lock().entries().filter(|e| !e.prot.is_empty()).map(|e| (e.start, e.end)).collect();
        for (s, e) in all {
            let r = lock_range(&space, s, e, flags & MCL_ONFAULT != 0);
            if r != 0 {
                return r;
            }
        }
    }
    0
}

/// `munlockall()`.
pub fn munlockall() -> i64 {
    let Some(p) = proc::current() else { return -EINVAL };
    p.lock_future.store(false, Ordering::SeqCst);
    p.lock_future_on_fault.store(false, Ordering::SeqCst);
    p.update_map_limits();
    if let Some(space) = p.space() {
        unlock_range(&space, 0, TASK_SIZE);
    }
    0
}

/// `msync(addr, len, flags)`: anonymous memory has nothing to write back;
/// file mappings write their dirty pages with the vnode pager.
pub fn msync(addr: u64, len: u64, flags: u64) -> i64 {
    const MS_ASYNC: u64 = 1;
    const MS_INVALIDATE: u64 = 2;
    const MS_SYNC: u64 = 4;
    if flags & !(MS_ASYNC | MS_INVALIDATE | MS_SYNC) != 0 || flags & (MS_ASYNC | MS_SYNC) == (MS_ASYNC | MS_SYNC) {
        return -EINVAL;
    }
    let (space, start, end) = match mapped_range(addr, len, WRAP_MSYNC) {
        Ok(Some(r)) => r,
        Ok(None) => return 0,
        Err(e) => return -e,
    };
    if flags & MS_INVALIDATE != 0 && space.map.lock().overlapping(start, end).any(|e| e.wired_count > 0) {
        return -EBUSY;
    }
    // Shared file mappings: their dirty pages go back to the file (MS_ASYNC
    // too: the write is not deferred).
    // One entry at a time (range queries, nothing allocated); the map lock
    // is dropped for the writes.
    let mut cur = start;
    while cur < end {
        let next = {
            let map = space.map.lock();
            let Some(e) = map.overlapping(cur, end).find(|e| !e.cow && e.inherit == Inherit::Share && e.object.is_some()) else {
                break;
            };
            let first = e.offset + (e.start.max(cur) - e.start) / PAGE;
            let last = e.offset + (e.end.min(end) - e.start) / PAGE;
            (e.object.clone(), first, last, e.end.min(end))
        };
        let (Some(object), first, last, e_end) = next else { break };
        cur = e_end;
        if let Some(v) = crate::fs::vnode_of(&object) {
            // mmap keeps a file range's end within i64::MAX; saturate all
            // the same, for objects mapped some other way.
            if v.flush(first.saturating_mul(PAGE), last.saturating_mul(PAGE)).is_err() {
                return -EIO;
            }
        }
    }
    0
}
