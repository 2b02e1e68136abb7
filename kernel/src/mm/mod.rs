//! The kernel's side of the VM (the `vm` crate is the machine-independent
//! part): address spaces and the page-fault entry, the pageout daemon and
//! the laundry thread, and the swap space and its pager.

pub mod pageout;
pub mod swap;
pub mod swap_pager;
pub mod vmspace;
