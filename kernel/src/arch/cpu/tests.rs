use ktest::ktest;

use super::*;

/// SMEP and SMAP are on exactly when the CPU has them.
#[ktest]
fn protections_match_the_cpu() {
    use x86_64::registers::control::{Cr4, Cr4Flags};
    let (smep, smap) = supported();
    let cr4 = Cr4::read();
    assert_eq!(cr4.contains(Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION), smep);
    assert_eq!(cr4.contains(Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION), smap);
    assert_eq!((smep_on(), smap_on()), (smep, smap));
}

/// With SMAP the kernel reaches a user page only through the user
/// copies; without it, plain kernel code reaches it too.
#[ktest]
fn smap_confines_user_access_to_the_copies() {
    use vm::map::Inherit;
    use vm::pmap::Prot;

    let space = crate::mm::vmspace::AddressSpace::new().unwrap();
    let a = space.map.lock().map(None, 4096, Prot::RW, Prot::RW, Inherit::Copy, None, false).unwrap();
    let on = space.activate();
    // The activation allows direct access (AC set): the page faults in.
    // SAFETY: mapped read-write in the active space.
    unsafe { (a as *mut u8).write_volatile(0x5A) };
    clac();
    assert_eq!(crate::syscall::uaccess::kernel_read_faults(a), smap_on(), "plain kernel read of a user page");
    let mut b = [0u8; 1];
    crate::syscall::uaccess::copy_from_user(&mut b, a).unwrap();
    assert_eq!(b[0], 0x5A, "the user copy works either way");
    stac();
    drop(on);
}
