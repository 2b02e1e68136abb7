//! Read-only walks of the current x86_64 page tables.
//!
//! ```text
//!  63    48 47    39 38    30 29    21 20    12 11         0
//! +--------+--------+--------+--------+--------+------------+
//! |  sign  |  PML4  |  PDPT  |   PD   |   PT   |   offset   |
//! +--------+--------+--------+--------+--------+------------+
//! ```
//! Each table is 512 eight-byte entries; bit 0 is present, bit 7 at PDPT or PD
//! level marks a 1 GiB or 2 MiB page, bits 12..52 hold the next physical address.
//! The kernel reads tables through the direct map of physical memory.

use core::sync::atomic::Ordering;

use x86_64::registers::control::Cr3;

use crate::arch::direct_map::PHYS_OFFSET;

const PRESENT: u64 = 1;
const HUGE: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// The physical address `virt` maps to in the current address space, or `None`
/// if it is not mapped. Safe to call from the fault and panic paths: it reads
/// only page tables, which the direct map always covers.
pub fn translate(virt: u64) -> Option<u64> {
    let offset = PHYS_OFFSET.load(Ordering::Relaxed);
    if offset == 0 {
        return None;
    }
    // Non-canonical addresses are never mapped.
    let sign = virt >> 47;
    if sign != 0 && sign != 0x1FFFF {
        return None;
    }
    let mut table = Cr3::read_raw().0.start_address().as_u64();
    for level in (0..4).rev() {
        let index = (virt >> (12 + 9 * level)) & 0x1FF;
        // SAFETY: `table` is the physical address of a page table (from CR3 or
        // a present entry); the direct map covers all physical memory, and an
        // aligned u64 read of an entry has no side effects.
        let entry = unsafe { ((offset + table + index * 8) as *const u64).read_volatile() };
        if entry & PRESENT == 0 {
            return None;
        }
        if level == 0 || (entry & HUGE != 0 && (level == 1 || level == 2)) {
            let page_mask = (1u64 << (12 + 9 * level)) - 1;
            return Some((entry & ADDR_MASK & !page_mask) | (virt & page_mask));
        }
        table = entry & ADDR_MASK;
    }
    None
}

/// True if the whole range `[virt, virt + len)` is mapped.
pub fn is_mapped(virt: u64, len: u64) -> bool {
    let Some(end) = virt.checked_add(len) else { return false };
    let mut page = virt & !0xFFF;
    while page < end {
        if translate(page).is_none() {
            return false;
        }
        page += 0x1000;
    }
    true
}

/// What [`walk`] visits.
#[derive(Clone, Copy, Debug)]
pub enum Visit {
    /// A page-table page, by physical address.
    Table(u64),
    /// A present leaf mapping: virtual address, physical address, page size.
    Leaf { va: u64, pa: u64, size: u64 },
}

/// Visits every page-table page and every present leaf mapping of the
/// current address space, tables before what they map.
pub fn walk(mut visit: impl FnMut(Visit)) {
    let offset = PHYS_OFFSET.load(Ordering::Relaxed);
    if offset == 0 {
        return;
    }
    let root = Cr3::read_raw().0.start_address().as_u64();
    walk_level(offset, root, 3, 0, &mut visit);
}

fn walk_level(offset: u64, phys: u64, level: u32, base: u64, visit: &mut impl FnMut(Visit)) {
    visit(Visit::Table(phys));
    for index in 0..512u64 {
        // SAFETY: `phys` is a page table (CR3 or a present non-leaf entry),
        // reachable through the direct map; reading an entry has no effect.
        let entry = unsafe { ((offset + phys + index * 8) as *const u64).read_volatile() };
        if entry & PRESENT == 0 {
            continue;
        }
        let mut va = base | (index << (12 + 9 * level));
        if level == 3 && index >= 256 {
            va |= 0xFFFF_0000_0000_0000; // sign-extend the upper half
        }
        let size = 1u64 << (12 + 9 * level);
        if level == 0 || (entry & HUGE != 0 && (level == 1 || level == 2)) {
            visit(Visit::Leaf { va, pa: entry & ADDR_MASK & !(size - 1), size });
        } else {
            walk_level(offset, entry & ADDR_MASK, level - 1, va, visit);
        }
    }
}

/// The effective access of `virt`'s mapping: (writable, executable), the
/// write bit ANDed and the no-execute bit ORed over every level.
pub fn access(virt: u64) -> Option<(bool, bool)> {
    let offset = PHYS_OFFSET.load(Ordering::Relaxed);
    if offset == 0 {
        return None;
    }
    let (mut writable, mut executable) = (true, true);
    let mut table = Cr3::read_raw().0.start_address().as_u64();
    for level in (0..4).rev() {
        let index = (virt >> (12 + 9 * level)) & 0x1FF;
        // SAFETY: as in `translate`: a page table read through the direct map.
        let entry = unsafe { ((offset + table + index * 8) as *const u64).read_volatile() };
        if entry & PRESENT == 0 {
            return None;
        }
        writable &= entry & (1 << 1) != 0;
        executable &= entry & (1 << 63) == 0;
        if level == 0 || (entry & HUGE != 0 && (level == 1 || level == 2)) {
            return Some((writable, executable));
        }
        table = entry & ADDR_MASK;
    }
    None
}

mod tests {
    use core::sync::atomic::AtomicU64;

    use ktest::ktest;

    use super::access;

    static DATA: AtomicU64 = AtomicU64::new(1);
    static RODATA: [u8; 16] = *b"read-only bytes.";

    /// The kernel image is mapped with the right protections: text read-only
    /// and executable, read-only data neither writable nor executable, data
    /// writable but not executable (when the CPU has NX).
    #[ktest]
    fn kernel_image_protections() {
        let nx = x86_64::registers::model_specific::Efer::read()
            .contains(x86_64::registers::model_specific::EferFlags::NO_EXECUTE_ENABLE);
        let text = kernel_image_protections as fn() as usize as u64;
        let rodata = core::hint::black_box(&RODATA) as *const _ as u64;
        let data = &DATA as *const _ as u64;
        assert_eq!(access(text), Some((false, true)), "text");
        assert_eq!(access(rodata), Some((false, !nx)), "read-only data");
        assert_eq!(access(data), Some((true, !nx)), "data");
    }
}
