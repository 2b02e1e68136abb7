//! The kernel's side of the VM (the `vm` crate is the machine-independent
//! part): address spaces and the page-fault entry, the pageout daemon and
//! the laundry thread, and swap bring-up (the swap space and its pager are in `pager`).

pub mod pageout;
mod smp_tests;
pub mod swap;
pub mod vmspace;
