//! Loading a static ELF executable into an address space, and building the
//! initial user stack of the System V ABI (argc, argv, envp, auxv), so that
//! musl's start-up code finds what it needs.
//!
//! The image's bytes become a vm_object (an "image object", read by a pager
//! that copies from the bytes, where the vnode pager will read from the file
//! later). Each PT_LOAD segment is mapped from it private (copy-on-write):
//! text and read-only data are shared by every process running the image
//! until someone writes; data is copied on first write; the tail of the last
//! file page past the segment's file size is cleared (bss begins there), and
//! the rest of the bss is anonymous zero-fill memory. Every page comes in
//! through the fault path.
//!
//! Segments whose file offset and address disagree modulo the page size, or
//! that share a page with another segment, cannot be mapped this way: such an
//! image is loaded by copying into anonymous memory instead.

use alloc::sync::Arc;
use alloc::vec::Vec;

use vm::map::Inherit;
use vm::object::{ObjectKind, PagerResult, VmObject};
use vm::page::Page;
use vm::pmap::Prot;
use xmas_elf::ElfFile;
use xmas_elf::header::{Machine, Type as ElfType};
use xmas_elf::program::{ProgramHeader, Type};

use crate::kern::kmem::KBuf;
use crate::mm::vmspace::AddressSpace;
use crate::syscall::uaccess::copy_to_user;

const PAGE: u64 = vm::PAGE_SIZE as u64;

/// Why a program could not be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    NotElf,
    /// Not a static x86_64 executable.
    Unsupported,
    /// A segment outside the user half, or overlapping the stack.
    BadSegment,
    NoMemory,
    /// Copying into the new address space faulted.
    Fault,
    /// Arguments and environment too large for the stack.
    TooBig,
}

/// What the loader found: where to start, and the program headers' address.
pub struct Loaded {
    pub entry: u64,
    /// The first page above every segment: where the heap (brk) starts.
    pub end: u64,
    pub phdr: u64,
    pub phnum: u64,
    pub phent: u64,
}

fn segments<'a>(elf: &'a ElfFile<'a>) -> impl Iterator<Item = ProgramHeader<'a>> + 'a {
    elf.program_iter().filter(|p| matches!(p.get_type(), Ok(Type::Load)))
}

/// Checks that the program whose first bytes are `image` (of `len` bytes in
/// all) is a static x86_64 executable whose segments fit below the stack.
pub fn check(image: &[u8], len: u64) -> Result<(), ElfError> {
    check_header(image)?;
    let elf = ElfFile::new(image).map_err(|_| ElfError::NotElf)?;
    let h = &elf.header.pt2;
    if !matches!(h.type_().as_type(), ElfType::Executable) || !matches!(h.machine().as_machine(), Machine::X86_64) {
        return Err(ElfError::Unsupported);
    }
    if elf.program_iter().any(|p| matches!(p.get_type(), Ok(Type::Interp))) {
        return Err(ElfError::Unsupported);
    }
    let limit = crate::proc::STACK_TOP - crate::proc::STACK_LIMIT;
    for (i, seg) in segments(&elf).enumerate() {
        let end = seg.virtual_addr().checked_add(seg.mem_size()).ok_or(ElfError::BadSegment)?;
        let file_end = seg.offset().checked_add(seg.file_size()).ok_or(ElfError::BadSegment)?;
        if end > limit || seg.virtual_addr() < 0x1000 || seg.file_size() > seg.mem_size() || file_end > len {
            return Err(ElfError::BadSegment);
        }
        // Segments may share a page, not bytes.
        let overlaps = segments(&elf).take(i).any(|o| {
            let o_end = o.virtual_addr().saturating_add(o.mem_size());
            seg.virtual_addr() < o_end && o.virtual_addr() < end
        });
        if overlaps {
            return Err(ElfError::BadSegment);
        }
    }
    Ok(())
}

/// The size of an ELF64 program header, the only one accepted.
const PHENT: u64 = 56;
/// Most program headers (Linux's bound: 64 KiB of them).
const PHNUM_MAX: u64 = 65536 / PHENT;

fn le(image: &[u8], off: usize, n: usize) -> u64 {
    image[off..off + n].iter().rev().fold(0, |v, &b| v << 8 | b as u64)
}

/// Checks the fields of the ELF header the parser trusts, before it reads
/// anything through them: its size, class and byte order, the size of a
/// program header, and that the program headers lie, aligned, inside the
/// bytes in memory (`image`). The parser indexes with these unchecked.
fn check_header(image: &[u8]) -> Result<(), ElfError> {
    if image.len() < 64 || image[..4] != *b"\x7fELF" || image[4] != 2 || image[5] != 1 {
        return Err(ElfError::NotElf);
    }
    let (phoff, phent, phnum) = (le(image, 32, 8), le(image, 54, 2), le(image, 56, 2));
    if phent != PHENT || phnum == 0 || phnum > PHNUM_MAX || phoff % 8 != 0 {
        return Err(ElfError::Unsupported);
    }
    // phnum * PHENT is at most 64 KiB: no overflow there.
    let ph_end = phoff.checked_add(phnum * PHENT).ok_or(ElfError::Unsupported)?;
    if phoff < 64 || ph_end > image.len() as u64 {
        return Err(ElfError::Unsupported);
    }
    Ok(())
}

fn seg_prot(seg: &ProgramHeader<'_>) -> Prot {
    let f = seg.flags();
    let mut prot = Prot::empty();
    if f.is_read() {
        prot |= Prot::READ;
    }
    if f.is_write() {
        prot |= Prot::WRITE;
    }
    if f.is_execute() {
        prot |= Prot::EXEC;
    }
    prot
}

/// The pager of an image object: page n is the image's bytes from n pages on,
/// zero past its end.
struct ImagePager {
    image: crate::proc::image::Image,
}

impl vm::object::Pager for ImagePager {
    fn has_page(&self, pindex: u64) -> Option<(u64, u64)> {
        pindex.checked_mul(PAGE).is_some_and(|off| off < self.image.bytes().len() as u64).then_some((0, 0))
    }

    fn get_page(&self, object: &VmObject, page: &'static Page) -> PagerResult {
        let off = page.pindex() as usize * PAGE as usize;
        let Some(src) = self.image.bytes().get(off..) else { return PagerResult::Bad };
        let n = src.len().min(PAGE as usize);
        let filled = object.env().pm.with_contents_mut(page, |dst| {
            dst[..n].copy_from_slice(&src[..n]);
            dst[n..].fill(0);
        });
        if filled.is_none() {
            return PagerResult::Error;
        }
        page.set_all_valid();
        PagerResult::Ok
    }
}

/// Maps and fills the segments of `image` in `space`, which must be the
/// current thread's address space.
pub fn load(space: &AddressSpace, program: &crate::proc::image::Image) -> Result<Loaded, ElfError> {
    let image = program.bytes();
    check(image, program.len())?;
    let elf = ElfFile::new(image).map_err(|_| ElfError::NotElf)?;
    let h = &elf.header.pt2;
    let mut end = 0;
    let mut phdr = 0;
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut mappable = true;
    for seg in segments(&elf) {
        let (va, memsz) = (seg.virtual_addr(), seg.mem_size());
        let (lo, hi) = (va & !(PAGE - 1), (va + memsz).next_multiple_of(PAGE));
        if seg.offset() % PAGE != va % PAGE || ranges.iter().any(|&(l, h)| lo < h && l < hi) {
            mappable = false;
        }
        ranges.try_reserve(1).map_err(|_| ElfError::NoMemory)?;
        ranges.push((lo, hi));
        end = end.max(hi);
        let ph = h.ph_offset();
        if seg.offset() <= ph && ph < seg.offset() + seg.file_size() {
            phdr = va + (ph - seg.offset());
        }
    }
    if mappable {
        map_segments(space, &elf, program)?;
    } else {
        copy_segments(space, &elf, program)?;
    }
    Ok(Loaded { entry: h.entry_point(), end, phdr, phnum: h.ph_count() as u64, phent: h.ph_entry_size() as u64 })
}

/// Maps every segment from an image object (see the module comment).
fn map_segments(space: &AddressSpace, elf: &ElfFile<'_>, program: &crate::proc::image::Image) -> Result<(), ElfError> {
    // A file's own object (its pages are shared with every other use of
    // the file), or an image object over the bytes in memory.
    let object = match program {
        crate::proc::image::Image::File { vnode, .. } => {
            vnode.object.reference();
            vnode.object.clone()
        }
        crate::proc::image::Image::Static(_) => {
            let size = program.len().div_ceil(PAGE);
            let object = VmObject::try_new(ObjectKind::Vnode, size, vm::kernel_env()).map_err(|_| ElfError::NoMemory)?;
            object.lock().set_pager(Arc::new(ImagePager { image: program.clone() }));
            object
        }
    };
    let result = (|| {
        for seg in segments(elf) {
            let prot = seg_prot(&seg);
            let (va, filesz, memsz) = (seg.virtual_addr(), seg.file_size(), seg.mem_size());
            let lo = va & !(PAGE - 1);
            let file_hi = (va + filesz).next_multiple_of(PAGE);
            let hi = (va + memsz).next_multiple_of(PAGE);
            if file_hi > lo {
                object.reference();
                let at = Some((object.clone(), (seg.offset() & !(PAGE - 1)) / PAGE));
                let mapped = space.map.lock().map(Some(lo), file_hi - lo, prot, Prot::ALL, Inherit::Copy, at, true);
                if mapped.is_err() {
                    object.clone().deallocate();
                    return Err(ElfError::NoMemory);
                }
                // The rest of the last file page belongs to the bss: clear it
                // in the process's private copy.
                let tail = (va + filesz)..file_hi.min(va + memsz);
                if !tail.is_empty() {
                    let writable = prot.contains(Prot::WRITE);
                    if !writable {
                        space.map.lock().protect(lo, file_hi, prot | Prot::WRITE).map_err(|_| ElfError::BadSegment)?;
                    }
                    let zeros = [0u8; PAGE as usize];
                    copy_to_user(tail.start, &zeros[..(tail.end - tail.start) as usize]).map_err(|_| ElfError::Fault)?;
                    if !writable {
                        space.map.lock().protect(lo, file_hi, prot).map_err(|_| ElfError::BadSegment)?;
                    }
                }
            }
            let bss = file_hi.max(lo);
            if hi > bss {
                space
                    .map
                    .lock()
                    .map(Some(bss), hi - bss, prot, Prot::ALL, Inherit::Copy, None, false)
                    .map_err(|_| ElfError::NoMemory)?;
            }
        }
        Ok(())
    })();
    // The maps hold their own references.
    object.deallocate();
    result
}

/// Most pages an image loaded by copying may have (each is a record here).
const COPY_PAGES_MAX: u64 = 16384;

/// Loads the segments by copying into anonymous memory: for images whose
/// segments share pages. Shared pages get the union of the protections.
fn copy_segments(space: &AddressSpace, elf: &ElfFile<'_>, program: &crate::proc::image::Image) -> Result<(), ElfError> {
    let mut pages: Vec<(u64, Prot)> = Vec::new();
    for seg in segments(elf) {
        let prot = seg_prot(&seg);
        let (va, memsz) = (seg.virtual_addr(), seg.mem_size());
        let mut p = va & !(PAGE - 1);
        if (va + memsz - p).div_ceil(PAGE) + pages.len() as u64 > COPY_PAGES_MAX {
            return Err(ElfError::NoMemory);
        }
        while p < va + memsz {
            match pages.iter_mut().find(|(q, _)| *q == p) {
                Some((_, pr)) => *pr |= prot,
                None => pages.try_reserve(1).map(|_| pages.push((p, prot))).map_err(|_| ElfError::NoMemory)?,
            }
            p += PAGE;
        }
    }
    pages.sort_by_key(|(p, _)| *p);
    // Map writable first, to copy the file's bytes in.
    for &(p, _) in &pages {
        space.map.lock().map(Some(p), PAGE, Prot::RW, Prot::ALL, Inherit::Copy, None, false).map_err(|_| ElfError::NoMemory)?;
    }
    let mut chunk = [0u8; 512];
    for seg in segments(elf) {
        let mut done = 0;
        while done < seg.file_size() {
            let n = (seg.file_size() - done).min(chunk.len() as u64) as usize;
            program.read_at(seg.offset() + done, &mut chunk[..n]).map_err(|_| ElfError::BadSegment)?;
            copy_to_user(seg.virtual_addr() + done, &chunk[..n]).map_err(|_| ElfError::Fault)?;
            done += n as u64;
        }
    }
    for &(p, prot) in &pages {
        space.map.lock().protect(p, p + PAGE, prot).map_err(|_| ElfError::BadSegment)?;
    }
    Ok(())
}

const AT_NULL: u64 = 0;
const AT_PHDR: u64 = 3;
const AT_PHENT: u64 = 4;
const AT_PHNUM: u64 = 5;
const AT_PAGESZ: u64 = 6;
const AT_ENTRY: u64 = 9;
const AT_UID: u64 = 11;
const AT_EUID: u64 = 12;
const AT_GID: u64 = 13;
const AT_EGID: u64 = 14;
const AT_SECURE: u64 = 23;
const AT_RANDOM: u64 = 25;

/// Most bytes the argument block may take: its strings with their NULs
/// and a pointer for each, a quarter of the stack limit (Linux's limit
/// for an 8 MiB stack; beyond it, E2BIG).
pub const ARG_MAX: usize = (crate::proc::STACK_LIMIT / 4) as usize;
/// Most bytes of one string, its NUL included (Linux's MAX_ARG_STRLEN).
pub const ARG_STRLEN_MAX: usize = 32 * vm::PAGE_SIZE;

/// The argument and environment strings of an exec, copied in before the
/// old image goes: NUL-terminated, the arguments first, one after another
/// in kernel virtual memory (a [`KBuf`] of up to [`ARG_MAX`] bytes, mapped
/// as it fills), not in a heap block.
pub struct ArgBlock {
    strings: KBuf,
    argc: usize,
    envc: usize,
}

impl ArgBlock {
    /// An empty block (a reservation of address space, no pages yet).
    pub fn new() -> Result<ArgBlock, ElfError> {
        let strings = KBuf::with_capacity(ARG_MAX).map_err(|_| ElfError::NoMemory)?;
        Ok(ArgBlock { strings, argc: 0, envc: 0 })
    }

    /// A block of `argv` and `envp`.
    pub fn from_strs(argv: &[&[u8]], envp: &[&[u8]]) -> Result<ArgBlock, ElfError> {
        let mut b = ArgBlock::new()?;
        for a in argv {
            b.push_arg(a)?;
        }
        for e in envp {
            b.push_env(e)?;
        }
        Ok(b)
    }

    fn push(&mut self, s: &[u8]) -> Result<(), ElfError> {
        if s.len() >= ARG_STRLEN_MAX {
            return Err(ElfError::TooBig);
        }
        let strings = self.strings.len() + s.len() + 1;
        let pointers = 8 * (self.argc + self.envc + 1);
        if strings + pointers > ARG_MAX {
            return Err(ElfError::TooBig);
        }
        self.extend(s)?;
        self.extend(&[0])
    }

    /// Appends `bytes`, waiting for memory while pages are short, as making
    /// the address space does ([`crate::mm::vmspace::CREATE_WAIT_SECS`]): an
    /// exec or a spawn under memory pressure waits for the pageout daemon
    /// (or the OOM kill) rather than failing. Nothing is held across the
    /// wait. A failed extension leaves the block as it was.
    fn extend(&mut self, bytes: &[u8]) -> Result<(), ElfError> {
        let deadline = crate::kern::time::ticks() + crate::mm::vmspace::CREATE_WAIT_SECS * crate::kern::time::HZ;
        loop {
            match self.strings.extend_from_slice(bytes) {
                Ok(()) => return Ok(()),
                Err(crate::kern::kmem::KmemError::NoMemory) if crate::kern::time::ticks() < deadline && vm::vm_wait() => {}
                Err(_) => return Err(ElfError::NoMemory),
            }
        }
    }

    /// Appends an argument (before any environment string).
    pub fn push_arg(&mut self, s: &[u8]) -> Result<(), ElfError> {
        debug_assert_eq!(self.envc, 0, "an argument after the environment");
        self.push(s)?;
        self.argc += 1;
        Ok(())
    }

    /// Appends an environment string.
    pub fn push_env(&mut self, s: &[u8]) -> Result<(), ElfError> {
        self.push(s)?;
        self.envc += 1;
        Ok(())
    }

    /// The strings, each with its NUL.
    pub fn strings(&self) -> &[u8] {
        self.strings.as_slice()
    }

    /// The words of the vector part of the initial stack: argc, the argv
    /// and envp pointers with their ends, the auxiliary vector.
    fn words(&self) -> usize {
        3 + self.argc + self.envc + 2 * AUX_ENTRIES
    }

    /// Bytes [`initial_stack`] writes below the top: the strings, the
    /// AT_RANDOM bytes, the vector, and the alignment between.
    pub fn stack_bytes(&self) -> u64 {
        (self.strings.len() as u64).next_multiple_of(16) + 16 + 8 * self.words() as u64 + 16
    }
}

/// Entries of the auxiliary vector, AT_NULL included.
const AUX_ENTRIES: usize = 12;

/// Builds the System V initial process stack (strings, AT_RANDOM bytes,
/// argc, argv, envp, auxv) below `top` in the current address space, which
/// must have [`ArgBlock::stack_bytes`] mapped below `top`, and returns the
/// initial stack pointer (16-byte aligned, pointing at argc).
pub fn initial_stack(top: u64, args: &ArgBlock, loaded: &Loaded, random: [u8; 16]) -> Result<u64, ElfError> {
    let strings = args.strings();
    let strings_at = (top - strings.len() as u64) & !15;
    copy_to_user(strings_at, strings).map_err(|_| ElfError::Fault)?;
    let random_at = strings_at - 16;
    copy_to_user(random_at, &random).map_err(|_| ElfError::Fault)?;
    let aux: [(u64, u64); AUX_ENTRIES] = [
        (AT_PHDR, loaded.phdr),
        (AT_PHENT, loaded.phent),
        (AT_PHNUM, loaded.phnum),
        (AT_PAGESZ, PAGE),
        (AT_ENTRY, loaded.entry),
        (AT_UID, 0),
        (AT_EUID, 0),
        (AT_GID, 0),
        (AT_EGID, 0),
        (AT_SECURE, 0),
        (AT_RANDOM, random_at),
        (AT_NULL, 0),
    ];
    let sp = (random_at - 8 * args.words() as u64) & !15;
    // The vector, written in chunks from a buffer on the kernel stack (no
    // heap block however many strings there are): argc, a pointer to each
    // string with a 0 after the arguments and after the environment, then
    // the auxiliary vector.
    let mut out = VectorWriter { at: sp, buf: [0; 64], n: 0 };
    out.push(args.argc as u64)?;
    let mut at = strings_at;
    for (i, s) in strings.split_inclusive(|&b| b == 0).enumerate() {
        if i == args.argc {
            out.push(0)?;
        }
        out.push(at)?;
        at += s.len() as u64;
    }
    if args.envc == 0 {
        out.push(0)?;
    }
    out.push(0)?;
    for (k, v) in aux {
        out.push(k)?;
        out.push(v)?;
    }
    out.flush()?;
    Ok(sp)
}

/// Words copied out to user memory in chunks.
struct VectorWriter {
    at: u64,
    buf: [u64; 64],
    n: usize,
}

impl VectorWriter {
    fn push(&mut self, w: u64) -> Result<(), ElfError> {
        self.buf[self.n] = w;
        self.n += 1;
        if self.n == self.buf.len() { self.flush() } else { Ok(()) }
    }

    fn flush(&mut self) -> Result<(), ElfError> {
        let mut bytes = [0u8; 64 * 8];
        for (i, w) in self.buf[..self.n].iter().enumerate() {
            bytes[8 * i..8 * i + 8].copy_from_slice(&w.to_le_bytes());
        }
        copy_to_user(self.at, &bytes[..8 * self.n]).map_err(|_| ElfError::Fault)?;
        self.at += 8 * self.n as u64;
        self.n = 0;
        Ok(())
    }
}
