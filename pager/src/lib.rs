//! Pagers and what they stand on: block devices, the filesystem, the vnode
//! pager and the swap pager. `no_std` + `alloc`: built into the kernel, and
//! unit-tested on the host.
//!
//! So far: the block-device trait, a RAM disk with injectable errors, the
//! ext2 filesystem, the swap-space allocator (`blist`), and the swap space
//! and swap pager (`swap`), which implements `vm`'s `Pager` and reaches the
//! machine only through what it is given: a block device, a lock
//! (`sync::Lock`), the object's environment for page contents.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
// Fallible allocation (`Box::try_new`): a page-out never panics on a short
// heap.
#![feature(allocator_api)]

extern crate alloc;

pub mod blist;
pub mod block;
pub mod ext2;
pub mod swap;
pub mod sync;
