//! `boot <kernel-elf>`: writes the symbol table and the BIOS and UEFI disk
//! images next to the kernel and prints their paths.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kernel] = args.as_slice() else {
        eprintln!("usage: boot <kernel-elf>");
        return ExitCode::from(2);
    };
    match boot::build_images(&PathBuf::from(kernel)) {
        Ok(images) => {
            println!("bios {}", images.bios.display());
            println!("uefi {}", images.uefi.display());
            println!("symbols {}", images.symbols.display());
            println!("fs {}", images.fs.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("boot: {e:#}");
            ExitCode::FAILURE
        }
    }
}
