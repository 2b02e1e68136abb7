//! The programs `execve` finds without the root filesystem: the two the
//! kernel image carries, `/bin/init` and `/bin/demo` (built with musl by
//! `kernel/build.rs`: what the kernel runs when no disk is attached), and
//! the program `./run-qemu.sh run` hands in (`/run/<name>`). Every program
//! of `user/`, the test programs among them, is on the root filesystem in
//! `/bin`, where `execve` looks first.

use alloc::string::String;
use alloc::vec::Vec;

use crate::kern::sync::IrqMutex;

/// Embedded bytes aligned for the ELF parser, which reads headers in place.
#[repr(C, align(8))]
struct Aligned<B: ?Sized>(B);

/// `/bin/<name>` for each program `kernel/build.rs` embeds.
static EMBEDDED: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/programs.rs"));

/// Programs added at run time (the one handed in by the host).
static ADDED: IrqMutex<Vec<(String, &'static [u8])>> = IrqMutex::new(Vec::new());

/// The program at `path`, if there is one.
pub fn lookup(path: &str) -> Option<&'static [u8]> {
    if let Some((_, b)) = EMBEDDED.iter().find(|(p, _)| *p == path) {
        return Some(b);
    }
    ADDED.lock().iter().find(|(p, _)| p == path).map(|(_, b)| *b)
}

/// The embedded program `/bin/<name>` (`init` or `demo`); panics if there
/// is none: the build embeds both.
pub fn bin(name: &str) -> &'static [u8] {
    EMBEDDED
        .iter()
        .find(|(p, _)| p.strip_prefix("/bin/") == Some(name))
        .map(|(_, b)| *b)
        .unwrap_or_else(|| panic!("no program user/{name}.c is embedded"))
}

/// Makes `bytes` available as `path`.
pub fn add(path: String, bytes: &'static [u8]) {
    ADDED.lock().push((path, bytes));
}
