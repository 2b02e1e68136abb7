//! Builds the user programs in `user/` with `musl-gcc -static` into OUT_DIR,
//! for `include_bytes!` in `kernel/src/process.rs`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let user = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../user");
    println!("cargo:rerun-if-changed={}", user.display());
    for name in ["hello", "memory", "fork"] {
        let src = user.join(format!("{name}.c"));
        println!("cargo:rerun-if-changed={}", src.display());
        let status = Command::new("musl-gcc")
            .args(["-static", "-O2", "-o"])
            .arg(out.join(name))
            .arg(&src)
            .status()
            .unwrap_or_else(|e| panic!("cannot run musl-gcc ({e}): install the Debian package musl-tools (./run-qemu.sh does)"));
        assert!(status.success(), "musl-gcc failed on {}", src.display());
    }
}
