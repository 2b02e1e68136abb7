//! Pagers and what they stand on: block devices, the filesystem, the vnode
//! pager and the swap pager. `no_std` + `alloc`: built into the kernel, and
//! unit-tested on the host.
//!
//! So far: the block-device trait, a RAM disk with injectable errors, the
//! ext2 filesystem, and the swap-space allocator (`blist`).

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod blist;
pub mod block;
pub mod ext2;
