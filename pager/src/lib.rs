//! Pagers and what they stand on: block devices, the filesystem, the vnode
//! pager and the swap pager. `no_std` + `alloc`: built into the kernel, and
//! unit-tested on the host.
//!
//! - `block`: the block-device trait, and a RAM disk with injectable errors;
//! - `ext2`: the filesystem;
//! - `vnode`: mounts, vnodes and the vnode pager;
//! - `blist`: the swap-space allocator;
//! - `swap`: the swap space and the swap pager.
//!
//! Both pagers implement `vm`'s `Pager` and reach the machine only through
//! what they are given: a block device, a lock (`sync::Lock`, `vm`'s
//! sleeping lock), a clock, the object's environment for page contents.

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
pub mod vnode;
