//! Loading a static ELF executable into an address space, and building the
//! initial user stack of the System V ABI (argc, argv, envp, auxv), so that
//! musl's start-up code finds what it needs.
//!
//! Each PT_LOAD segment becomes map entries: anonymous memory for now (the
//! vnode pager will map text and read-only data from the file later), the
//! file's bytes copied in through the fault path, the rest (bss) left to
//! zero fill, and then the segment's protection. Pages shared by two
//! segments get the union of their protections.

use alloc::vec::Vec;

use vm::map::Inherit;
use vm::pmap::Prot;
use xmas_elf::ElfFile;
use xmas_elf::header::{Machine, Type as ElfType};
use xmas_elf::program::{ProgramHeader, Type};

use crate::syscall::copy_to_user;
use crate::vmspace::AddressSpace;

const PAGE: u64 = 4096;

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

/// Maps and fills the segments of `image` in `space`, which must be the
/// current thread's address space.
pub fn load(space: &AddressSpace, image: &[u8]) -> Result<Loaded, ElfError> {
    let elf = ElfFile::new(image).map_err(|_| ElfError::NotElf)?;
    let h = &elf.header.pt2;
    if !matches!(h.type_().as_type(), ElfType::Executable) || !matches!(h.machine().as_machine(), Machine::X86_64) {
        return Err(ElfError::Unsupported);
    }
    // Pages and the union of the protections wanted for each.
    let mut pages: Vec<(u64, Prot)> = Vec::new();
    for seg in segments(&elf) {
        let (va, memsz) = (seg.virtual_addr(), seg.mem_size());
        let end = va.checked_add(memsz).ok_or(ElfError::BadSegment)?;
        if end > crate::process::STACK_TOP - crate::process::STACK_SIZE || seg.file_size() > memsz {
            return Err(ElfError::BadSegment);
        }
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
        let mut p = va & !(PAGE - 1);
        while p < end {
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
    let mut phdr = 0;
    for seg in segments(&elf) {
        let off = seg.offset() as usize;
        let len = seg.file_size() as usize;
        let bytes = image.get(off..off + len).ok_or(ElfError::BadSegment)?;
        copy_to_user(seg.virtual_addr(), bytes).map_err(|_| ElfError::Fault)?;
        let ph = h.ph_offset();
        if seg.offset() <= ph && ph < seg.offset() + seg.file_size() {
            phdr = seg.virtual_addr() + (ph - seg.offset());
        }
    }
    for &(p, prot) in &pages {
        space.map.lock().protect(p, p + PAGE, prot).map_err(|_| ElfError::BadSegment)?;
    }
    let end = pages.last().map_or(0, |(p, _)| p + PAGE);
    Ok(Loaded { entry: h.entry_point(), end, phdr, phnum: h.ph_count() as u64, phent: h.ph_entry_size() as u64 })
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

/// Writes argv and the auxiliary vector below `top` in the current address
/// space and returns the initial stack pointer (pointing at argc, 16-byte
/// aligned):
///
/// ```text
///   top ► [argument strings] [16 random bytes]
///         ... padding ...
///   rsp ► argc, argv[0..n], NULL, NULL (no envp), auxv pairs, AT_NULL
/// ```
pub fn initial_stack(top: u64, argv: &[&str], loaded: &Loaded, random: [u8; 16]) -> Result<u64, ElfError> {
    let mut sp = top;
    let mut arg_ptrs: Vec<u64> = Vec::new();
    arg_ptrs.try_reserve(argv.len()).map_err(|_| ElfError::NoMemory)?;
    for a in argv.iter().rev() {
        sp -= a.len() as u64 + 1;
        copy_to_user(sp, a.as_bytes()).map_err(|_| ElfError::Fault)?;
        copy_to_user(sp + a.len() as u64, &[0]).map_err(|_| ElfError::Fault)?;
        arg_ptrs.push(sp);
    }
    arg_ptrs.reverse();
    sp -= 16;
    let random_at = sp;
    copy_to_user(sp, &random).map_err(|_| ElfError::Fault)?;
    let aux = [
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
    let mut words: Vec<u64> = Vec::new();
    words.try_reserve(3 + argv.len() + 2 * aux.len()).map_err(|_| ElfError::NoMemory)?;
    words.push(argv.len() as u64);
    words.extend_from_slice(&arg_ptrs);
    words.push(0); // end of argv
    words.push(0); // envp: empty
    for (k, v) in aux {
        words.push(k);
        words.push(v);
    }
    sp = (sp - words.len() as u64 * 8) & !15;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    copy_to_user(sp, &bytes).map_err(|_| ElfError::Fault)?;
    Ok(sp)
}
