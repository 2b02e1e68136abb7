//! Physical memory at boot: the bootloader's memory map, the direct map, and
//! the frames taken before the VM's page allocator exists.
//!
//! The bootloader maps all physical memory at [`PHYS_OFFSET`] (the direct
//! map, `arch::direct_map`), which is set here. Until the physical allocator
//! of `vm` takes over, frames come from [`EarlyFrames`], a bump allocator over
//! the usable regions whose allocations are never returned: the kernel heap
//! is the first of them.

use core::sync::atomic::Ordering;

use bootloader_api::info::{MemoryRegion, MemoryRegionKind};
use spin::Once;
use vm::sync::Mutex;

use crate::arch::direct_map::{PHYS_OFFSET, phys_to_virt};

pub const PAGE_SIZE: u64 = vm::PAGE_SIZE as u64;

/// The bootloader's memory map. (C) set once at boot.
static REGIONS: Once<&'static [MemoryRegion]> = Once::new();

/// A range of physical memory, `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysRange {
    pub start: u64,
    pub end: u64,
}

impl PhysRange {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
}

/// The bootloader's memory map.
pub fn regions() -> &'static [MemoryRegion] {
    REGIONS.get().copied().unwrap_or(&[])
}

/// Totals of the memory map, by kind.
#[derive(Clone, Copy, Debug, Default)]
pub struct MapSummary {
    pub regions: usize,
    pub usable_regions: usize,
    pub usable_bytes: u64,
    pub bootloader_bytes: u64,
    pub firmware_bytes: u64,
    pub highest_usable: u64,
}

pub fn summary() -> MapSummary {
    let mut s = MapSummary::default();
    for r in regions() {
        s.regions += 1;
        let len = r.end - r.start;
        match r.kind {
            MemoryRegionKind::Usable => {
                s.usable_regions += 1;
                s.usable_bytes += len;
                s.highest_usable = s.highest_usable.max(r.end);
            }
            MemoryRegionKind::Bootloader => s.bootloader_bytes += len,
            _ => s.firmware_bytes += len,
        }
    }
    s
}

/// Logs the memory map, one line per region and a total.
pub fn log_map() {
    for r in regions() {
        log::debug!("  {:#012x}..{:#012x} {:>8} KiB {:?}", r.start, r.end, (r.end - r.start) / 1024, r.kind);
    }
    let s = summary();
    log::info!(
        "memory map: {} regions; usable {} MiB in {} regions, bootloader {} KiB, firmware/reserved {} KiB",
        s.regions,
        s.usable_bytes >> 20,
        s.usable_regions,
        s.bootloader_bytes >> 10,
        s.firmware_bytes >> 10
    );
}

/// Hands out physical frames from the usable regions, lowest region first,
/// before the page allocator exists. Never frees. Frames below 1 MiB are left
/// alone (real-mode and BIOS leftovers; later, the AP trampoline).
pub struct EarlyFrames {
    next: u64,
    /// Ranges handed out, to be marked unmanaged by the page allocator.
    taken: [PhysRange; 8],
    ntaken: usize,
}

pub static EARLY_FRAMES: Mutex<EarlyFrames> =
    Mutex::new(EarlyFrames { next: 0x10_0000, taken: [PhysRange { start: 0, end: 0 }; 8], ntaken: 0 });

impl EarlyFrames {
    /// Takes `pages` physically contiguous frames. `None` when no usable
    /// region past the cursor has that many.
    pub fn alloc_contiguous(&mut self, pages: u64) -> Option<PhysRange> {
        let len = pages.checked_mul(PAGE_SIZE)?;
        for r in regions().iter().filter(|r| r.kind == MemoryRegionKind::Usable) {
            let start = self.next.max(r.start).next_multiple_of(PAGE_SIZE);
            if start.checked_add(len).is_some_and(|end| end <= r.end) {
                let range = PhysRange { start, end: start + len };
                if self.ntaken == self.taken.len() {
                    return None;
                }
                self.taken[self.ntaken] = range;
                self.ntaken += 1;
                self.next = range.end;
                return Some(range);
            }
        }
        None
    }

    /// Every range handed out so far.
    pub fn taken(&self) -> &[PhysRange] {
        &self.taken[..self.ntaken]
    }
}

/// Records the boot information the rest of the kernel reads.
pub fn init(phys_offset: u64, regions: &'static [MemoryRegion]) {
    PHYS_OFFSET.store(phys_offset, Ordering::Relaxed);
    REGIONS.call_once(|| regions);
}

/// Builds the page array and the page allocator over the memory map, and
/// installs it as `vm::global()`.
///
/// Segments are the usable and bootloader regions above 1 MiB, merged where
/// they touch. Every record starts reserved; the usable frames not taken by
/// [`EarlyFrames`] (heap, the page array itself) are then freed. Bootloader
/// regions (kernel image, boot page tables, boot stack, boot info, ramdisk)
/// stay reserved until the kernel has its own page tables and stack, when
/// `PhysMem::add_free_range` can reclaim them.
pub fn init_page_allocator() -> Result<&'static vm::phys::PhysMem, vm::phys::PhysError> {
    use vm::phys::{PhysMem, PhysRange as VmRange};

    const LOW: u64 = 0x10_0000;
    let mut segs: alloc::vec::Vec<VmRange> = alloc::vec::Vec::new();
    let mut regions: alloc::vec::Vec<&MemoryRegion> = regions()
        .iter()
        .filter(|r| matches!(r.kind, MemoryRegionKind::Usable | MemoryRegionKind::Bootloader) && r.end > LOW)
        .collect();
    regions.sort_by_key(|r| r.start);
    for r in regions {
        let start = r.start.max(LOW).next_multiple_of(PAGE_SIZE);
        let end = r.end & !(PAGE_SIZE - 1);
        if end <= start {
            continue;
        }
        match segs.last_mut() {
            Some(last) if last.end == start => last.end = end,
            _ => segs.push(VmRange { start, end }),
        }
    }
    let needed = PhysMem::records_needed(&segs);
    let bytes = (needed * core::mem::size_of::<vm::page::Page>()) as u64;
    let storage_range = EARLY_FRAMES
        .lock()
        .alloc_contiguous(bytes.div_ceil(PAGE_SIZE))
        .ok_or(vm::phys::PhysError::StorageTooSmall { needed, got: 0 })?;
    // SAFETY: the frames were just taken from the early allocator and are
    // never handed out again; the direct map makes them writable; the slice
    // covers `needed` records of uninitialised memory, which PhysMem::new
    // initialises before reading.
    let storage = unsafe {
        core::slice::from_raw_parts_mut(phys_to_virt(storage_range.start) as *mut core::mem::MaybeUninit<vm::page::Page>, needed)
    };
    let pm = PhysMem::new(&segs, storage, Some(PHYS_OFFSET.load(Ordering::Relaxed) as usize))?;
    let mut taken: alloc::vec::Vec<PhysRange> = EARLY_FRAMES.lock().taken().to_vec();
    taken.sort_by_key(|x| x.start);
    for r in regions_of_kind(MemoryRegionKind::Usable) {
        let region_start = r.start.max(LOW).next_multiple_of(PAGE_SIZE);
        let end = r.end & !(PAGE_SIZE - 1);
        let mut start = region_start;
        // Walk the region, stepping over the taken ranges (sorted by start).
        for x in taken.iter().filter(|x| x.end > region_start && x.start < end) {
            if x.start > start {
                pm.add_free_range(VmRange { start, end: x.start });
            }
            start = start.max(x.end);
        }
        if start < end {
            pm.add_free_range(VmRange { start, end });
        }
    }
    let pm = vm::set_global(pm);
    log::info!(
        "page array: {} records of {} bytes ({} KiB) for {} segments; {} pages ({} MiB) free",
        needed,
        core::mem::size_of::<vm::page::Page>(),
        bytes / 1024,
        segs.len(),
        pm.free_count(),
        pm.free_count() >> 8
    );
    Ok(pm)
}

fn regions_of_kind(kind: MemoryRegionKind) -> impl Iterator<Item = &'static MemoryRegion> {
    regions().iter().filter(move |r| r.kind == kind)
}

/// Frees the bootloader's memory that the kernel no longer uses.
///
/// The bootloader's regions hold the kernel image, the boot page tables, the
/// boot stack, the boot information (with this memory map), the ramdisk, and
/// its own stages and scratch memory. Everything the kernel still uses is
/// either a page-table page or mapped outside the direct map; whatever else
/// lies in a bootloader region is no longer needed and goes to the page
/// allocator. Returns the number of pages reclaimed.
pub fn reclaim_boot_memory(pm: &vm::phys::PhysMem) -> u64 {
    use alloc::collections::BTreeSet;

    let offset = PHYS_OFFSET.load(Ordering::Relaxed);
    let direct_end = offset + (summary_highest_phys().max(1 << 32));
    let boot: alloc::vec::Vec<(u64, u64)> = regions_of_kind(MemoryRegionKind::Bootloader)
        .map(|r| (r.start.next_multiple_of(PAGE_SIZE), r.end & !(PAGE_SIZE - 1)))
        .collect();
    let in_boot = |pa: u64| boot.iter().any(|&(s, e)| s <= pa && pa < e);

    let mut used: BTreeSet<u64> = BTreeSet::new();
    for_each_frame_in_use(offset, direct_end, |pa| {
        if in_boot(pa) {
            used.insert(pa);
        }
    });
    let mut tables = 0u64;
    crate::arch::paging::walk(|v| tables += matches!(v, crate::arch::paging::Visit::Table(_)) as u64);

    let mut reclaimed = 0;
    for &(start, end) in &boot {
        let mut pa = start;
        while pa < end {
            // The longest run of unused frames from `pa`.
            let run_start = pa;
            while pa < end && !used.contains(&pa) && pm.page_of(pa).is_some() {
                pa += PAGE_SIZE;
            }
            if pa > run_start {
                pm.add_free_range(vm::phys::PhysRange { start: run_start, end: pa });
                reclaimed += (pa - run_start) / PAGE_SIZE;
            } else {
                pa += PAGE_SIZE;
            }
        }
    }
    log::info!(
        "reclaimed {} KiB of bootloader memory; {} KiB still in use: {} KiB of boot page tables, the rest kernel image, stack, boot info, ramdisk",
        reclaimed * 4,
        boot.iter().map(|&(s, e)| (e - s) / 1024).sum::<u64>() - reclaimed * 4,
        tables * 4
    );
    reclaimed
}

/// Calls `f` for every frame the current page tables use: the tables
/// themselves and every frame mapped outside the direct map
/// (`[direct_start, direct_end)`).
fn for_each_frame_in_use(direct_start: u64, direct_end: u64, mut f: impl FnMut(u64)) {
    use crate::arch::paging::{Visit, walk};
    walk(|v| match v {
        Visit::Table(pa) => f(pa),
        Visit::Leaf { va, .. } if (direct_start..direct_end).contains(&va) => {}
        Visit::Leaf { pa, size, .. } => (0..size / PAGE_SIZE).for_each(|i| f(pa + i * PAGE_SIZE)),
    });
}

/// The end of the highest region of the memory map (of any kind).
fn summary_highest_phys() -> u64 {
    regions().iter().map(|r| r.end).max().unwrap_or(0)
}

mod tests {
    use ktest::ktest;
    use vm::page::PageFlags;

    use super::*;

    /// After boot memory is reclaimed, no free page is still mapped outside
    /// the direct map: the kernel image, stack, boot info, ramdisk and page
    /// tables all survived the reclaim.
    #[ktest]
    fn reclaim_kept_everything_mapped() {
        let pm = vm::global();
        let offset = PHYS_OFFSET.load(Ordering::Relaxed);
        let direct_end = offset + summary_highest_phys().max(1 << 32);
        let mut bad = alloc::vec::Vec::new();
        for_each_frame_in_use(offset, direct_end, |pa| {
            if pm.page_of(pa).is_some_and(|p| p.flags().contains(PageFlags::FREE)) {
                bad.push(pa);
            }
        });
        assert!(bad.is_empty(), "free pages still in use: {bad:x?}");
        // And the reclaim did find something to give back.
        let boot_pages: u64 = regions_of_kind(MemoryRegionKind::Bootloader).map(|r| (r.end - r.start) / PAGE_SIZE).sum();
        let reserved = pm.pages().iter().filter(|p| p.flags().contains(PageFlags::RESERVED)).count() as u64;
        assert!(reserved < boot_pages + EARLY_FRAMES.lock().taken().iter().map(|r| r.len() / PAGE_SIZE).sum::<u64>());
    }
}
