//! Page contents: the bytes of a page that the caller holds exclusively
//! busy, reached through the allocator's direct map (the kernel's, or the
//! host model's backing memory). Pagers read and write pages this way, so
//! that they need the object's environment and a busy page, not a global
//! allocator or a raw address.
//!
//! Exclusive busy is what makes the access sound: no one else reads or
//! writes the contents meanwhile (a page being paged in is invalid and
//! unmapped; one being paged out is write-protected in every mapping).

use crate::PAGE_SIZE;
use crate::page::Page;
use crate::phys::PhysMem;

impl PhysMem {
    /// Runs `f` over the bytes of `page`, which the caller holds
    /// exclusively busy; `None` when this allocator has no direct map (the
    /// host models without backing memory). Panics if the page is not
    /// exclusively busy.
    pub fn with_contents<R>(&self, page: &'static Page, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        assert!(page.xbusied(), "page {:#x}: contents read without exclusive busy", page.phys());
        let p = self.page_addr(page)?;
        // SAFETY: the direct map covers every frame of the page array, and
        // the exclusive busy the caller holds (checked above) keeps every
        // writer out while `f` runs.
        Some(f(unsafe { core::slice::from_raw_parts(p, PAGE_SIZE) }))
    }

    /// Runs `f` over the bytes of `page`, to change them; as
    /// [`PhysMem::with_contents`].
    pub fn with_contents_mut<R>(&self, page: &'static Page, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        assert!(page.xbusied(), "page {:#x}: contents written without exclusive busy", page.phys());
        let p = self.page_addr(page)?;
        // SAFETY: as in `with_contents`; the exclusive busy also keeps every
        // other reader out.
        Some(f(unsafe { core::slice::from_raw_parts_mut(p, PAGE_SIZE) }))
    }
}
