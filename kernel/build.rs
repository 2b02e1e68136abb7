//! Builds the programs the kernel carries in its image (init and the demo,
//! what it runs without a disk) from `user/` with `musl-gcc -static` into
//! OUT_DIR, and writes `programs.rs` there: the table of embedded programs,
//! by path (`/bin/<name>`), that `kernel/src/proc/programs.rs` includes.
//! Every other program of `user/` (the test programs) is on the root
//! filesystem only, where `boot` puts all of them.

use std::path::PathBuf;
use std::process::Command;

/// The programs in the kernel image.
const EMBEDDED: &[&str] = &["demo", "init"];

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let user = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../user");
    println!("cargo:rerun-if-changed={}", user.join("check.h").display());
    let mut table = String::from("&[\n");
    for name in EMBEDDED {
        let src = user.join(format!("{name}.c"));
        println!("cargo:rerun-if-changed={}", src.display());
        let status = Command::new("musl-gcc")
            .args(["-static", "-O2", "-Wall", "-o"])
            .arg(out.join(name))
            .arg(&src)
            .status()
            .unwrap_or_else(|e| panic!("cannot run musl-gcc ({e}): install the Debian package musl-tools (./run-qemu.sh does)"));
        assert!(status.success(), "musl-gcc failed on {}", src.display());
        table
            .push_str(&format!("    (\"/bin/{name}\", &Aligned(*include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{name}\"))).0),\n"));
    }
    table.push_str("]\n");
    std::fs::write(out.join("programs.rs"), table).expect("writing programs.rs");
}
