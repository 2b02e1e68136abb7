//! Builds every C program in `user/` with `musl-gcc -static` into OUT_DIR and
//! writes `programs.rs` there: the table of embedded programs, by path
//! (`/bin/<name>`), that `kernel/src/proc/programs.rs` includes.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let user = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../user");
    println!("cargo:rerun-if-changed={}", user.display());
    for e in std::fs::read_dir(&user).expect("user/ is missing").filter_map(|e| e.ok()) {
        println!("cargo:rerun-if-changed={}", e.path().display());
    }
    let mut names: Vec<String> = std::fs::read_dir(&user)
        .expect("user/ is missing")
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".c")).map(String::from))
        .collect();
    names.sort();
    let mut table = String::from("&[\n");
    for name in &names {
        let src = user.join(format!("{name}.c"));
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
