//! DMA and address translation for virtio-drivers: its `Hal` trait over the
//! kernel's physical page allocator and page tables.
//!
//! There is no IOMMU: a device sees physical memory as the CPU does, so a
//! DMA address is a physical address.
//!
//! - `dma_alloc` (virtqueues and other driver-owned memory): a contiguous,
//!   naturally aligned run of zeroed, unmanaged pages from `vm::global()`,
//!   reached through the direct map; `dma_dealloc` frees it.
//! - `share` (a request's buffers): the buffer stays where it is; its
//!   physical address is looked up in the current page tables. The caller
//!   must hand in a physically contiguous buffer ([`is_contiguous`] tells):
//!   the kernel heap and `alloc_contig` runs are; a buffer that is not goes
//!   through a bounce buffer in the block driver. Nothing is copied, so
//!   `unshare` has nothing to do.
//! - `mmio_phys_to_virt` (device registers in BARs): the direct map, which
//!   covers at least the first 4 GiB.
//!
//! These run under the block driver's device lock with interrupts off
//! (`share`), or at probe time (`dma_alloc`), never in an interrupt handler:
//! the page allocator's locks do not disable interrupts.

use core::ptr::NonNull;

use virtio_drivers::{BufferDirection, Hal, PhysAddr};
use vm::phys::AllocFlags;

use crate::arch::direct_map::phys_to_virt;
use crate::arch::paging::translate;
use crate::kern::memory::PAGE_SIZE;

/// The `Hal` of every virtio device of the kernel.
pub struct KernelHal;

/// Physical address of the contiguous buffer at `[ptr, ptr + len)`, or
/// `None` if some page of it is unmapped or the pages are not physically
/// consecutive.
pub fn is_contiguous(ptr: *const u8, len: usize) -> Option<u64> {
    let start = ptr as u64;
    let first = translate(start)?;
    let end = start + len.max(1) as u64;
    let mut page = (start & !(PAGE_SIZE - 1)) + PAGE_SIZE;
    while page < end {
        if translate(page)? != first + (page - start) {
            return None;
        }
        page += PAGE_SIZE;
    }
    Some(first)
}

/// True if the device registers at `[pa, pa + size)` can be reached
/// through the direct map. It covers the first 4 GiB, where BIOS firmware
/// puts every BAR; UEFI firmware (OVMF) may put 64-bit BARs far above it.
pub fn mmio_reachable(pa: u64, size: u64) -> bool {
    let last = pa + size.max(1) - 1;
    translate(phys_to_virt(pa)) == Some(pa) && translate(phys_to_virt(last)) == Some(last)
}

/// Maps device registers at `[pa, pa + size)` where the direct map would
/// have them (at `phys_to_virt(pa)`), uncached, when the bootloader did not
/// map them: 64-bit BARs that UEFI firmware puts above the memory. Page
/// tables come from the page allocator (unmanaged, kept for good). Called
/// at boot, before any address space copies the kernel half. Returns
/// whether the registers are reachable now.
pub fn map_mmio(pa: u64, size: u64) -> bool {
    use x86_64::structures::paging::mapper::MapToError;
    use x86_64::structures::paging::{
        FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags as F, PhysFrame, Size4KiB,
    };

    if mmio_reachable(pa, size) {
        return true;
    }
    struct Frames;
    // SAFETY: each frame is a fresh, zeroed page from the allocator, used
    // only as the page table it is given for.
    unsafe impl FrameAllocator<Size4KiB> for Frames {
        fn allocate_frame(&mut self) -> Option<PhysFrame> {
            let p = vm::global().alloc(AllocFlags::UNMANAGED | AllocFlags::SYSTEM | AllocFlags::ZERO)?;
            Some(PhysFrame::containing_address(x86_64::PhysAddr::new(p.phys())))
        }
    }
    let offset = phys_to_virt(0);
    let (l4, _) = x86_64::registers::control::Cr3::read();
    // SAFETY: the active top-level table, through the direct map; nothing
    // else changes the kernel half of it at boot.
    let mut mapper = unsafe {
        let table = &mut *((offset + l4.start_address().as_u64()) as *mut PageTable);
        OffsetPageTable::new(table, x86_64::VirtAddr::new(offset))
    };
    let mut pa_page = pa & !(PAGE_SIZE - 1);
    while pa_page < pa + size.max(1) {
        let page = Page::<Size4KiB>::containing_address(x86_64::VirtAddr::new(phys_to_virt(pa_page)));
        let frame = PhysFrame::containing_address(x86_64::PhysAddr::new(pa_page));
        let flags = F::PRESENT | F::WRITABLE | F::NO_CACHE | F::WRITE_THROUGH | F::NO_EXECUTE;
        // SAFETY: device registers, mapped where nothing else is (they were
        // unreachable), uncached.
        match unsafe { mapper.map_to(page, frame, flags, &mut Frames) } {
            Ok(flush) => flush.flush(),
            Err(MapToError::PageAlreadyMapped(_)) => {}
            Err(e) => {
                log::warn!("cannot map device registers at {pa_page:#x}: {e:?}");
                return false;
            }
        }
        pa_page += PAGE_SIZE;
    }
    mmio_reachable(pa, size)
}

// SAFETY: dma_alloc returns zeroed, page-aligned memory that nothing else
// uses until dma_dealloc (a fresh allocation from the page allocator, mapped
// by the direct map); mmio_phys_to_virt returns the direct-map address of
// device registers, which no Rust reference covers; share returns the
// physical address of exactly the buffer given.
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let flags = AllocFlags::ZERO | AllocFlags::UNMANAGED | AllocFlags::SYSTEM;
        let Some(first) = vm::global().alloc_contig(pages, PAGE_SIZE, 0, 0, u64::MAX, flags) else {
            log::warn!("dma: no {pages} contiguous pages for a DMA buffer");
            // virtio-drivers turns a zero address into Error::DmaError.
            return (0, NonNull::dangling());
        };
        let pa = first.phys();
        let va = phys_to_virt(pa) as *mut u8;
        // A direct-map address is never null.
        (pa, NonNull::new(va).unwrap_or(NonNull::dangling()))
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        match vm::global().page_of(paddr) {
            Some(first) => {
                vm::global().free_contig(first, pages);
                0
            }
            None => -1,
        }
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        // The probe skips devices whose registers this does not hold for.
        assert!(mmio_reachable(paddr, size as u64), "device registers at {paddr:#x} (+{size:#x}) lie outside the direct map");
        NonNull::new(phys_to_virt(paddr) as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        let ptr = buffer.as_ptr() as *const u8;
        match is_contiguous(ptr, buffer.len()) {
            Some(pa) => pa,
            None => panic!("dma: buffer at {ptr:p} (+{:#x}) is unmapped or not physically contiguous", buffer.len()),
        }
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
