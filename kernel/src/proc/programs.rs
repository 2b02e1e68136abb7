//! The programs `execve` can find, by path, until there is a filesystem: the
//! C programs of `user/` (built with musl by `kernel/build.rs`, embedded as
//! `/bin/<name>`), and the program `./run-qemu.sh run` hands in
//! (`/run/<name>`).

use alloc::string::String;
use alloc::vec::Vec;

use crate::kern::sync::IrqMutex;

/// Embedded bytes aligned for the ELF parser, which reads headers in place.
#[repr(C, align(8))]
struct Aligned<B: ?Sized>(B);

/// `/bin/<name>` for each `user/<name>.c`.
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

/// The embedded program `/bin/<name>`; panics if there is none (the build
/// embeds every `user/*.c`).
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
