//! The virtual-memory subsystem, in the manner of FreeBSD's `sys/vm`.
//!
//! `no_std` + `alloc`: built into the kernel and unit-tested on the host. It
//! knows nothing of x86_64 or devices; the kernel gives it the memory map, a
//! direct map of physical memory, and (later) a `Pmap`.
//!
//! | module | BSD concept |
//! | --- | --- |
//! | [`page`] | `vm_page`: the per-frame record and its busy/wire/valid/dirty/queue state |
//! | [`phys`] | `vm_phys`: the buddy allocator over the page array |
//! | [`queue`] | `vm_pagequeue`: active, inactive, laundry |
//! | [`radix`] | `vm_radix`: the per-object trie of resident pages |
//! | [`zone`] | a UMA-like zone of fixed-size items (trie nodes) |
//! | [`failpoint`] | `fail(9)`: named places that can be told to fail |
//! | [`invariants`] | what must always hold, checked |
//!
//! ## Lock order
//!
//! Written once, here; take locks only in this order:
//!
//! ```text
//! map lock ⇒ object lock ⇒ page busy ⇒ page-queue lock
//!                                      ⇒ allocator cache lock ⇒ free-list lock
//! ```
//!
//! The queue lock and the allocator locks are leaves: nothing is taken while
//! holding them, except the free-list lock under the cache lock.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod failpoint;
pub mod invariants;
pub mod page;
pub mod phys;
pub mod queue;
pub mod radix;
pub mod zone;

/// Bytes in a page.
pub const PAGE_SIZE: usize = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// The kernel's allocator, once the kernel has built it ([`phys::PhysMem`]).
static GLOBAL: spin::Once<phys::PhysMem> = spin::Once::new();

/// Installs the kernel's page allocator (once, at boot).
pub fn set_global(pm: phys::PhysMem) -> &'static phys::PhysMem {
    GLOBAL.call_once(|| pm)
}

/// The kernel's page allocator. Panics before [`set_global`].
pub fn global() -> &'static phys::PhysMem {
    GLOBAL.get().expect("the page allocator is not initialised")
}

/// The kernel's page allocator, if it exists yet.
pub fn try_global() -> Option<&'static phys::PhysMem> {
    GLOBAL.get()
}
