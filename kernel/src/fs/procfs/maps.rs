//! `/proc/PID/maps`, `smaps` and `smaps_rollup`: the map's entries, and
//! what each holds in memory and on swap, read from the map, the pmap and
//! the objects.
//!
//! A page counts where the pmap maps it (Linux counts page-table entries
//! too): `Rss` is what the entry maps, `Pss` the same with each page
//! divided among the mappings it has, `Shared_*` the pages with more than
//! one mapping. A page is `Anonymous` unless it is the file's own page (a
//! private copy of a file page is anonymous, as on Linux). `Swap` counts
//! the entry's pages that are on swap and nowhere in memory along its
//! shadow chain.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::{self, Write};

use vm::map::{Inherit, MapEntry};
use vm::object::{ObjectKind, VmObject};
use vm::pmap::Prot;

use super::Text;
use crate::mm::vmspace::AddressSpace;
use crate::proc::Process;

const PAGE: u64 = vm::PAGE_SIZE as u64;
/// Pss is summed in bytes << PSS_SHIFT, so that pages shared three ways
/// add up without rounding (Linux's PSS_SHIFT).
const PSS_SHIFT: u32 = 12;

/// What pages come to, in bytes (`pss*` in bytes << [`PSS_SHIFT`]).
#[derive(Clone, Copy, Default)]
pub(super) struct Usage {
    pub rss: u64,
    pub pss: u64,
    pub pss_dirty: u64,
    pub pss_anon: u64,
    pub pss_file: u64,
    pub shared_clean: u64,
    pub shared_dirty: u64,
    pub private_clean: u64,
    pub private_dirty: u64,
    pub referenced: u64,
    pub anonymous: u64,
    pub swap: u64,
    pub locked: u64,
    pub lazy_free: u64,
}

impl core::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        self.rss += o.rss;
        self.pss += o.pss;
        self.pss_dirty += o.pss_dirty;
        self.pss_anon += o.pss_anon;
        self.pss_file += o.pss_file;
        self.shared_clean += o.shared_clean;
        self.shared_dirty += o.shared_dirty;
        self.private_clean += o.private_clean;
        self.private_dirty += o.private_dirty;
        self.referenced += o.referenced;
        self.anonymous += o.anonymous;
        self.swap += o.swap;
        self.locked += o.locked;
        self.lazy_free += o.lazy_free;
    }
}

/// One entry as the files show it, taken under the map lock and written
/// after it (a file's name takes locks the map lock may not be held over).
struct View {
    start: u64,
    end: u64,
    prot: Prot,
    max_prot: Prot,
    shared: bool,
    /// The offset of `start` in the file, in bytes (0 for anonymous memory).
    offset: u64,
    grows_down: bool,
    /// Part of the process's own stack (Linux names only that one).
    main_stack: bool,
    locked: bool,
    /// The file's object, for a file mapping.
    file: Option<Arc<VmObject>>,
    use_: Usage,
}

/// Whether `e` is a shared mapping (MAP_SHARED): the only entries a fork
/// shares rather than copies.
fn is_shared(e: &MapEntry) -> bool {
    e.inherit == Inherit::Share
}

/// The bottom of `e`'s shadow chain if it is a file's object, and the
/// entry's first page index in it.
fn file_of(e: &MapEntry) -> Option<(Arc<VmObject>, u64)> {
    let mut o = e.object.clone()?;
    let mut off = e.offset;
    loop {
        let backing = o.lock().backing();
        match backing {
            Some((b, boff)) => {
                off += boff;
                o = b;
            }
            None => break,
        }
    }
    (o.kind() == ObjectKind::Vnode).then_some((o, off))
}

/// Whether the page at `pindex` of `o` is in memory there, or held by its
/// pager.
fn holds(o: &VmObject, pindex: u64, resident_only: bool) -> bool {
    let (resident, pager) = {
        let l = o.lock();
        (l.lookup(pindex).is_some(), l.pager())
    };
    resident || (!resident_only && pager.is_some_and(|p| p.has_page(pindex).is_some()))
}

/// The entry's pages on swap and not in memory anywhere along its shadow
/// chain, nor shadowed by a copy above them: what a fault on them would
/// read from swap.
fn swapped(e: &MapEntry) -> u64 {
    let Some(top) = e.object.clone() else { return 0 };
    let pages = e.pages();
    let mut count = 0;
    // (object, index in it of the entry's first page, depth)
    let (mut o, mut off, mut depth) = (top.clone(), e.offset, 0);
    loop {
        let (pager, backing) = {
            let l = o.lock();
            (l.pager(), l.backing())
        };
        if let Some(pager) = pager.filter(|_| o.kind() == ObjectKind::Swap) {
            let mut from = off;
            while let Some((base, mask)) = pager.held_from(from, off + pages) {
                for n in (0..64).filter(|n| mask & 1 << n != 0) {
                    let i = base + n - off;
                    if !holds(&o, base + n, true) && !covered_above(&top, e.offset, i, depth) {
                        count += 1;
                    }
                }
                from = base + 64;
            }
        }
        let Some((b, boff)) = backing else { break };
        (o, off, depth) = (b, off + boff, depth + 1);
    }
    count * PAGE
}

/// Whether one of the first `depth` objects of the chain from `top` (whose
/// index of the entry's first page is `first`) holds the entry's page `i`.
fn covered_above(top: &Arc<VmObject>, first: u64, i: u64, depth: u32) -> bool {
    let (mut o, mut off) = (top.clone(), first);
    for _ in 0..depth {
        if holds(&o, off + i, false) {
            return true;
        }
        let Some((b, boff)) = o.lock().backing() else { return false };
        (o, off) = (b, off + boff);
    }
    false
}

/// What `e`'s mapped pages come to (the map lock held).
fn usage(space: &AddressSpace, e: &MapEntry, file: Option<&Arc<VmObject>>) -> Usage {
    let pm = vm::global();
    let file = file.map(|f| f.handle());
    let locked = e.wired_count > 0;
    let mut u = Usage::default();
    space.pmap.scan(e.start, e.end, |leaf| {
        // Device memory has no page record and no share in the counts.
        let Some(page) = pm.page_of(leaf.phys) else { return };
        let mappings = u64::from(page.mapping_count().max(1));
        let dirty = leaf.dirty || page.dirty() != 0;
        let pss = (PAGE << PSS_SHIFT) / mappings;
        u.rss += PAGE;
        u.pss += pss;
        if dirty {
            u.pss_dirty += pss;
        }
        if file.is_some() && page.object() == file {
            u.pss_file += pss;
        } else {
            u.anonymous += PAGE;
            u.pss_anon += pss;
        }
        match (mappings > 1, dirty) {
            (true, false) => u.shared_clean += PAGE,
            (true, true) => u.shared_dirty += PAGE,
            (false, false) => u.private_clean += PAGE,
            (false, true) => u.private_dirty += PAGE,
        }
        if leaf.accessed || page.flags().contains(vm::page::PageFlags::REFERENCED) {
            u.referenced += PAGE;
        }
        if locked {
            u.locked += pss;
        }
        // Given up with MADV_FREE and not reclaimed yet (Linux counts them
        // until the page daemon frees them or finds them written).
        if page.flags().contains(vm::page::PageFlags::DISCARDABLE) {
            u.lazy_free += PAGE;
        }
    });
    u.swap = swapped(e);
    u
}

/// The entries of `space`, with what they hold if `pages`.
fn views(space: &AddressSpace, pages: bool) -> Result<Vec<View>, ()> {
    let map = space.map.lock();
    let mut out = Vec::new();
    out.try_reserve_exact(map.entry_count()).map_err(|_| ())?;
    let stack = map.stack_bottom().zip(map.stack_top());
    for e in map.entries() {
        let file = file_of(e);
        let use_ = if pages { usage(space, e, file.as_ref().map(|f| &f.0)) } else { Usage::default() };
        // A stack grows by a new entry below its bottom each time; Linux
        // grows the one area, and shows one line for it.
        if let Some(v) = out.last_mut().filter(|v: &&mut View| {
            v.grows_down
                && e.grows_down
                && v.end == e.start
                && (v.prot, v.max_prot, v.locked) == (e.prot, e.max_prot, e.wired_count > 0)
        }) {
            v.end = e.end;
            v.use_ += use_;
            continue;
        }
        out.push(View {
            start: e.start,
            end: e.end,
            prot: e.prot,
            max_prot: e.max_prot,
            shared: is_shared(e),
            offset: file.as_ref().map_or(0, |f| f.1 * PAGE),
            grows_down: e.grows_down,
            main_stack: stack.is_some_and(|(bottom, top)| bottom <= e.start && e.end <= top),
            locked: e.wired_count > 0,
            file: file.map(|f| f.0),
            use_,
        });
    }
    Ok(out)
}

/// The first part of a maps line: range, permissions, offset, device and
/// inode; then, padded to Linux's column, the name if there is one.
fn header(out: &mut Text, v: &View, brk: (u64, u64)) -> fmt::Result {
    let line_start = out.0.len();
    let flag = |on: bool, c: char| if on { c } else { '-' };
    let vnode = v.file.as_ref().and_then(crate::fs::vnode_of);
    let (dev, ino) = match &vnode {
        Some(vn) => ("08:01", u64::from(vn.ino)),
        None => ("00:00", 0),
    };
    write!(
        out,
        "{:08x}-{:08x} {}{}{}{} {:08x} {dev} {ino} ",
        v.start,
        v.end,
        flag(v.prot.contains(Prot::READ), 'r'),
        flag(v.prot.contains(Prot::WRITE), 'w'),
        flag(v.prot.contains(Prot::EXEC), 'x'),
        if v.shared { 's' } else { 'p' },
        v.offset
    )?;
    let pad = |out: &mut Text| {
        let used = out.0.len() - line_start;
        write!(out, "{:w$}", "", w = 73usize.saturating_sub(used))
    };
    if let Some(vn) = &vnode {
        let named = vn.with_name(|name| -> Result<bool, fmt::Error> {
            let Some(name) = name else { return Ok(false) };
            pad(out)?;
            out.bytes(name)?;
            Ok(true)
        })?;
        if named && vn.is_unlinked() {
            out.write_str(" (deleted)")?;
        }
    } else if v.start < brk.1 && v.end > brk.0 {
        pad(out)?;
        out.write_str("[heap]")?;
    } else if v.main_stack {
        pad(out)?;
        out.write_str("[stack]")?;
    }
    out.write_char('\n')
}

/// One `Name:   N kB` line, the figure ending in column 24 as Linux has it.
fn kb_line(out: &mut Text, name: &str, bytes: u64) -> fmt::Result {
    writeln!(out, "{name}:{:>w$} kB", bytes >> 10, w = 23 - name.len())
}

/// The lines an entry and the rollup share, from `Rss` on.
fn usage_lines(out: &mut Text, u: &Usage, rollup: bool) -> fmt::Result {
    let pss = |p: u64| p >> PSS_SHIFT;
    kb_line(out, "Rss", u.rss)?;
    kb_line(out, "Pss", pss(u.pss))?;
    kb_line(out, "Pss_Dirty", pss(u.pss_dirty))?;
    if rollup {
        kb_line(out, "Pss_Anon", pss(u.pss_anon))?;
        kb_line(out, "Pss_File", pss(u.pss_file))?;
        kb_line(out, "Pss_Shmem", 0)?;
    }
    kb_line(out, "Shared_Clean", u.shared_clean)?;
    kb_line(out, "Shared_Dirty", u.shared_dirty)?;
    kb_line(out, "Private_Clean", u.private_clean)?;
    kb_line(out, "Private_Dirty", u.private_dirty)?;
    kb_line(out, "Referenced", u.referenced)?;
    kb_line(out, "Anonymous", u.anonymous)?;
    kb_line(out, "LazyFree", u.lazy_free)?;
    for zero in ["AnonHugePages", "ShmemPmdMapped", "FilePmdMapped", "Shared_Hugetlb", "Private_Hugetlb"] {
        kb_line(out, zero, 0)?;
    }
    kb_line(out, "Swap", u.swap)?;
    // Not divided yet: a block of a backing object that two processes'
    // chains reach counts whole in each (Linux divides it among them).
    kb_line(out, "SwapPss", u.swap)?;
    kb_line(out, "Locked", pss(u.locked))
}

/// `maps`, or `smaps` if `pages`: each entry's line, and for `smaps` its
/// sizes and flags.
pub(super) fn maps(space: &AddressSpace, p: &Process, out: &mut Text, pages: bool) -> fmt::Result {
    let views = views(space, pages).map_err(|_| fmt::Error)?;
    let brk = *p.brk.lock();
    for v in &views {
        header(out, v, brk)?;
        if !pages {
            continue;
        }
        kb_line(out, "Size", v.end - v.start)?;
        kb_line(out, "KernelPageSize", PAGE)?;
        kb_line(out, "MMUPageSize", PAGE)?;
        usage_lines(out, &v.use_, false)?;
        writeln!(out, "THPeligible:    0")?;
        out.write_str("VmFlags: ")?;
        let flags = [
            (v.prot.contains(Prot::READ), "rd"),
            (v.prot.contains(Prot::WRITE), "wr"),
            (v.prot.contains(Prot::EXEC), "ex"),
            (v.shared, "sh"),
            (v.max_prot.contains(Prot::READ), "mr"),
            (v.max_prot.contains(Prot::WRITE), "mw"),
            (v.max_prot.contains(Prot::EXEC), "me"),
            (v.shared, "ms"),
            (v.grows_down, "gd"),
            (v.locked, "lo"),
            (!v.shared && v.prot.contains(Prot::WRITE), "ac"),
        ];
        for (_, name) in flags.iter().filter(|f| f.0) {
            write!(out, "{name} ")?;
        }
        out.write_char('\n')?;
    }
    Ok(())
}

/// `smaps_rollup`: every entry's figures summed, under a line spanning
/// them all.
pub(super) fn rollup(space: &AddressSpace, out: &mut Text) -> fmt::Result {
    let views = views(space, true).map_err(|_| fmt::Error)?;
    let (Some(first), Some(last)) = (views.first(), views.last()) else { return Ok(()) };
    let mut sum = Usage::default();
    for v in &views {
        sum += v.use_;
    }
    let line_start = out.0.len();
    write!(out, "{:08x}-{:08x} ---p 00000000 00:00 0 ", first.start, last.end)?;
    let used = out.0.len() - line_start;
    writeln!(out, "{:w$}[rollup]", "", w = 73usize.saturating_sub(used))?;
    usage_lines(out, &sum, true)
}

/// A process's sizes, for `status` and `statm`, in bytes.
#[derive(Default)]
pub(super) struct Totals {
    pub size: u64,
    pub locked_size: u64,
    /// Private writable memory other than the stack (Linux's `VmData`).
    pub data: u64,
    pub stack: u64,
    /// Executable memory that is not writable (the program's text).
    pub exec: u64,
    /// Shared anonymous memory resident.
    pub shmem: u64,
    pub use_: Usage,
}

/// The sizes and pages of `space`, summed.
pub(super) fn totals(space: &AddressSpace) -> Result<Totals, ()> {
    let views = views(space, true)?;
    let mut t = Totals::default();
    for v in &views {
        let len = v.end - v.start;
        t.size += len;
        if v.locked {
            t.locked_size += len;
        }
        if v.grows_down {
            t.stack += len;
        } else if v.prot.contains(Prot::WRITE) && !v.shared {
            t.data += len;
        } else if v.prot.contains(Prot::EXEC) && !v.prot.contains(Prot::WRITE) {
            t.exec += len;
        }
        if v.shared && v.file.is_none() {
            t.shmem += v.use_.anonymous;
        }
        t.use_ += v.use_;
    }
    Ok(t)
}
