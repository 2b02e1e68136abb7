//! The memory system calls: `brk`, `mmap` (anonymous for now), `munmap`,
//! `mprotect`, with Linux's flags and error values.

use vm::map::{Inherit, MapError};
use vm::pmap::Prot;

use crate::pmap::USER_END;
use crate::process;

const PAGE: u64 = 4096;

pub const EEXIST: i64 = 17;
pub const ENOMEM: i64 = 12;
pub const EACCES: i64 = 13;
pub const EINVAL: i64 = 22;
pub const ENODEV: i64 = 19;

const PROT_READ: u64 = 1;
const PROT_WRITE: u64 = 2;
const PROT_EXEC: u64 = 4;

const MAP_SHARED: u64 = 0x01;
const MAP_PRIVATE: u64 = 0x02;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_POPULATE: u64 = 0x8000;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
/// Flags accepted (and ignored where they only advise).
const MAP_KNOWN: u64 = MAP_SHARED | MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS | MAP_POPULATE | MAP_FIXED_NOREPLACE
    | 0x100 /* MAP_GROWSDOWN */ | 0x4000 /* MAP_NORESERVE */ | 0x2_0000 /* MAP_STACK */;

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
    let Some(p) = process::current() else { return -ENOMEM };
    let mut b = p.brk.lock();
    let (start, cur) = *b;
    if addr < start || addr >= USER_END {
        return cur as i64;
    }
    let (old_top, new_top) = (page_up(cur).unwrap_or(cur), page_up(addr).unwrap_or(addr));
    let mut map = p.space.map.lock();
    if new_top > old_top {
        if map.map(Some(old_top), new_top - old_top, Prot::RW, Prot::ALL, Inherit::Copy, None, false).is_err() {
            return cur as i64;
        }
    } else if new_top < old_top && map.unmap(new_top, old_top).is_err() {
        return cur as i64;
    }
    b.1 = addr;
    addr as i64
}

/// `mmap(addr, len, prot, flags, fd, off)`, anonymous mappings.
pub fn mmap(addr: u64, len: u64, prot_bits: u64, flags: u64, _fd: u64, off: u64) -> i64 {
    let Some(prot) = prot(prot_bits) else { return -EINVAL };
    let kind = flags & (MAP_SHARED | MAP_PRIVATE);
    if len == 0 || kind == 0 || kind == (MAP_SHARED | MAP_PRIVATE) || flags & !MAP_KNOWN != 0 {
        return -EINVAL;
    }
    if flags & MAP_ANONYMOUS == 0 {
        // File mappings arrive with the vnode pager.
        return -ENODEV;
    }
    if off % PAGE != 0 {
        return -EINVAL;
    }
    let Some(len) = page_up(len).filter(|l| *l < USER_END) else { return -ENOMEM };
    let fixed = flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0;
    if fixed && (addr % PAGE != 0 || addr.checked_add(len).is_none_or(|e| e > USER_END) || addr == 0) {
        return -EINVAL;
    }
    let Some(p) = process::current() else { return -ENOMEM };
    let inherit = if kind == MAP_SHARED { Inherit::Share } else { Inherit::Copy };
    let start = {
        let mut map = p.space.map.lock();
        let at = if fixed {
            if flags & MAP_FIXED_NOREPLACE != 0 {
                let mut cur = addr;
                let mut overlap = false;
                while cur < addr + len {
                    if let Some(e) = map.entry(cur) {
                        overlap = true;
                        cur = e.end;
                    } else {
                        cur += PAGE;
                    }
                    if overlap {
                        break;
                    }
                }
                if overlap {
                    return -EEXIST;
                }
            } else if map.unmap(addr, addr + len).is_err() {
                return -EINVAL;
            }
            addr
        } else {
            let hint = if addr % PAGE == 0 && addr >= 0x1_0000 { addr } else { MMAP_BASE };
            match map.find_space_from(hint, len, PAGE).or_else(|| map.find_space_from(0x1_0000, len, PAGE)) {
                Some(a) => a,
                None => return -ENOMEM,
            }
        };
        match map.map(Some(at), len, prot, Prot::ALL, inherit, None, false) {
            Ok(a) => a,
            Err(MapError::Overlap) => return -EEXIST,
            Err(_) => return -ENOMEM,
        }
    };
    if flags & MAP_POPULATE != 0 && prot.contains(Prot::READ) {
        let mut va = start;
        while va < start + len {
            let access = if prot.contains(Prot::WRITE) { Prot::WRITE } else { Prot::READ };
            if vm::fault::fault(&p.space.map, va, access, false).is_err() {
                break;
            }
            va += PAGE;
        }
    }
    start as i64
}

/// `munmap(addr, len)`.
pub fn munmap(addr: u64, len: u64) -> i64 {
    if addr % PAGE != 0 || len == 0 {
        return -EINVAL;
    }
    let Some(end) = page_up(len).and_then(|l| addr.checked_add(l)).filter(|e| *e <= USER_END) else { return -EINVAL };
    let Some(p) = process::current() else { return -EINVAL };
    match p.space.map.lock().unmap(addr, end) {
        Ok(()) => 0,
        Err(_) => -EINVAL,
    }
}

/// `mprotect(addr, len, prot)`.
pub fn mprotect(addr: u64, len: u64, prot_bits: u64) -> i64 {
    let Some(prot) = prot(prot_bits) else { return -EINVAL };
    if addr % PAGE != 0 {
        return -EINVAL;
    }
    if len == 0 {
        return 0;
    }
    let Some(end) = page_up(len).and_then(|l| addr.checked_add(l)).filter(|e| *e <= USER_END) else { return -ENOMEM };
    let Some(p) = process::current() else { return -EINVAL };
    let mut map = p.space.map.lock();
    if !map.fully_mapped(addr, end) {
        return -ENOMEM;
    }
    match map.protect(addr, end, prot) {
        Ok(()) => 0,
        Err(MapError::Protection) => -EACCES,
        Err(_) => -ENOMEM,
    }
}
