//! Swap: the swap space (a disk and the blist of its blocks) and the swap
//! pager, the pager of anonymous memory that has been paged out.
//!
//! The kernel finds the disk and makes the one [`SwapSpace`] at boot; each
//! swap object's [`SwapPager`] holds an `Arc` of it. Nothing here is
//! global: the host tests make as many swap spaces as they like, over RAM
//! disks that fail on demand.

mod pager;
mod space;

pub use pager::{CHUNK, DEBUG_CONSTANTS, SwBlk, SwapPager};
pub use space::{SECTORS_PER_PAGE, SwapError, SwapSpace, SwapStats};
