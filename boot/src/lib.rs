//! Builds bootable disk images from the kernel ELF.
//!
//! For a kernel at `target/x86_64-unknown-none/<profile>/kernel` this writes,
//! next to it:
//!
//! - `kernel.stripped`: the kernel without debug information, which is what
//!   the images carry: the bootloader reads the kernel file through BIOS disk
//!   calls, and a 3 MiB debug build took seconds to load under emulation.
//!   gdb reads the unstripped ELF;
//! - `kernel.ksym`: the kernel's symbol table, demangled, in the format
//!   `kernel/src/kern/ksyms.rs` reads; it is loaded as the bootloader's ramdisk so
//!   that panics and fault reports name functions;
//! - `kernel-bios.img`: an MBR disk image that boots with SeaBIOS (QEMU's default);
//! - `kernel-uefi.img`: a GPT disk image that boots with OVMF;
//! - `kernel-fs.img`: the root filesystem, ext2, made by `mke2fs -d` from the
//!   repository's `rootfs/` folder with the programs of `user/` (built with
//!   `musl-gcc -static`) in `/bin`; attached as a virtio disk.
//!
//! The bootloader's own log is cut to warnings and kept off the frame buffer:
//! drawing text through emulated VGA is the slowest part of a boot under TCG.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use bootloader::{BootConfig, DiskImageBuilder};
use object::{Object, ObjectSymbol, SymbolKind};

/// The files [`build_images`] writes.
#[derive(Debug, Clone)]
pub struct Images {
    pub kernel: PathBuf,
    pub stripped: PathBuf,
    pub symbols: PathBuf,
    pub bios: PathBuf,
    pub uefi: PathBuf,
    pub fs: PathBuf,
}

impl Images {
    /// Paths of the images for `kernel`, whether or not they exist yet.
    pub fn for_kernel(kernel: &Path) -> Images {
        let with = |suffix: &str| {
            let mut name = kernel.file_name().unwrap_or_default().to_os_string();
            name.push(suffix);
            kernel.with_file_name(name)
        };
        Images {
            kernel: kernel.to_path_buf(),
            stripped: with(".stripped"),
            symbols: with(".ksym"),
            bios: with("-bios.img"),
            uefi: with("-uefi.img"),
            fs: with("-fs.img"),
        }
    }
}

/// Where the bootloader places the kernel image: `KERNEL_BASE` in
/// `kernel/src/main.rs`. gdb loads the symbols at this offset. The host tests
/// check the kernel reports the same value, so the two cannot drift apart.
pub const KERNEL_BASE: u64 = 0xffff_ffff_8000_0000;

const KSYM_MAGIC: &[u8; 8] = b"KSYM0001";

/// Encodes the function symbols of `elf` as a KSYM table (see `kernel/src/kern/ksyms.rs`).
pub fn symbol_table(elf: &[u8]) -> Result<Vec<u8>> {
    let file = object::File::parse(elf).context("kernel is not a valid ELF file")?;
    let mut syms: Vec<(u64, u32, String)> = file
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.address() != 0)
        .filter_map(|s| {
            let name = s.name().ok()?;
            let size = u32::try_from(s.size()).unwrap_or(u32::MAX);
            Some((s.address(), size, format!("{:#}", rustc_demangle::demangle(name))))
        })
        .collect();
    if syms.is_empty() {
        bail!("kernel has no function symbols (was it stripped?)");
    }
    // Sort by address; of several symbols at one address keep the sized one.
    syms.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    syms.dedup_by_key(|s| s.0);

    let mut strtab = Vec::new();
    let mut entries = Vec::with_capacity(syms.len() * 16);
    for (addr, size, name) in &syms {
        entries.extend_from_slice(&addr.to_le_bytes());
        entries.extend_from_slice(&size.to_le_bytes());
        entries.extend_from_slice(&(strtab.len() as u32).to_le_bytes());
        strtab.extend_from_slice(name.as_bytes());
        strtab.push(0);
    }
    let mut out = Vec::with_capacity(24 + entries.len() + strtab.len());
    out.extend_from_slice(KSYM_MAGIC);
    out.extend_from_slice(&(syms.len() as u64).to_le_bytes());
    out.extend_from_slice(&(strtab.len() as u64).to_le_bytes());
    out.extend_from_slice(&entries);
    out.extend_from_slice(&strtab);
    Ok(out)
}

/// Copies `kernel` to `out` without its debug sections, with the toolchain's
/// `llvm-objcopy` (the `llvm-tools-preview` component).
pub fn strip_debug(kernel: &Path, out: &Path) -> Result<()> {
    let tools = llvm_tools::LlvmTools::new().map_err(|e| {
        anyhow::anyhow!("llvm-tools-preview is not installed ({e:?}); run `rustup component add llvm-tools-preview`")
    })?;
    let objcopy =
        tools.tool(&llvm_tools::exe("llvm-objcopy")).context("llvm-objcopy not found in the llvm-tools-preview component")?;
    let status = Command::new(&objcopy)
        .arg("--strip-debug")
        .arg(kernel)
        .arg(out)
        .status()
        .with_context(|| format!("cannot run {}", objcopy.display()))?;
    if !status.success() {
        bail!("{} --strip-debug {} failed: {status}", objcopy.display(), kernel.display());
    }
    Ok(())
}

/// Writes the symbol table and both disk images for `kernel`.
pub fn build_images(kernel: &Path) -> Result<Images> {
    let images = Images::for_kernel(kernel);
    let elf = fs::read(kernel).with_context(|| format!("cannot read kernel {}", kernel.display()))?;
    fs::write(&images.symbols, symbol_table(&elf)?).with_context(|| format!("cannot write {}", images.symbols.display()))?;

    let mut config = BootConfig::default();
    config.log_level = bootloader_boot_config::LevelFilter::Warn;
    config.frame_buffer_logging = false;
    config.serial_logging = true;

    strip_debug(kernel, &images.stripped)?;
    let mut builder = DiskImageBuilder::new(images.stripped.clone());
    builder.set_ramdisk(images.symbols.clone());
    builder.set_boot_config(&config);
    builder.create_bios_image(&images.bios).context("cannot create the BIOS image")?;
    builder.create_uefi_image(&images.uefi).context("cannot create the UEFI image")?;
    build_rootfs(&images)?;
    Ok(images)
}

/// Size of the root filesystem image.
pub const ROOTFS_SIZE: &str = "160M";

/// `/data/seq32`: a 32 MiB file of [`data_byte`]s, for the tests of file
/// mappings and read-ahead (and the checksum the host compares).
pub const DATA_FILE: &str = "data/seq32";
pub const DATA_SIZE: usize = 32 << 20;

/// Byte `i` of the data file: no two neighbouring pages alike.
pub fn data_byte(i: usize) -> u8 {
    (i as u32).wrapping_mul(2_654_435_761).rotate_right(13) as u8 ^ (i >> 12) as u8
}

/// FNV-1a, 64 bits: the checksum `user/cksum.c` computes.
pub fn fnv1a(bytes: impl Iterator<Item = u8>) -> u64 {
    bytes.fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Programs of `user/` also built against glibc, as `/bin/<name>.glibc`:
/// glibc makes its system calls its own way (`fork` is a `clone`, say).
const BUILT_WITH_GLIBC_TOO: &[&str] = &["clone", "fork", "signals", "threads", "vmthreads"];

/// Makes the root filesystem image: `rootfs/` plus `user/*.c` built into
/// `/bin` (with musl, and some with glibc too), by `mke2fs -t ext2 -b 4096
/// -d`.
pub fn build_rootfs(images: &Images) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let staging = images.fs.with_extension("staging");
    if staging.exists() {
        fs::remove_dir_all(&staging).with_context(|| format!("cannot clear {}", staging.display()))?;
    }
    copy_tree(&root.join("rootfs"), &staging)?;
    let data = staging.join(DATA_FILE);
    fs::create_dir_all(data.parent().unwrap_or(&staging))?;
    fs::write(&data, (0..DATA_SIZE).map(data_byte).collect::<Vec<u8>>())?;
    // The benchmark's 64 MiB file: the same bytes, twice as many.
    fs::write(staging.join("data/seq64"), (0..2 * DATA_SIZE).map(data_byte).collect::<Vec<u8>>())?;
    let bin = staging.join("bin");
    fs::create_dir_all(&bin)?;
    let user = root.join("user");
    for entry in fs::read_dir(&user).with_context(|| format!("cannot read {}", user.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_stem().and_then(|n| n.to_str()).filter(|_| path.extension().is_some_and(|e| e == "c")) else {
            continue;
        };
        let status = Command::new("musl-gcc")
            .args(["-static", "-O2", "-o"])
            .arg(bin.join(name))
            .arg(&path)
            .arg("-lm")
            .status()
            .context("cannot run musl-gcc: install the Debian package musl-tools (./run-qemu.sh does)")?;
        if !status.success() {
            bail!("musl-gcc failed on {}", path.display());
        }
        if BUILT_WITH_GLIBC_TOO.contains(&name) {
            let status = Command::new("gcc")
                .args(["-static", "-O2", "-o"])
                .arg(bin.join(format!("{name}.glibc")))
                .arg(&path)
                .arg("-lm")
                .status()
                .context("cannot run gcc: install the Debian packages gcc and libc6-dev (./run-qemu.sh does)")?;
            if !status.success() {
                bail!("gcc -static failed on {}", path.display());
            }
        }
    }
    let _ = fs::remove_file(&images.fs);
    let out = Command::new("mke2fs")
        .args(["-q", "-t", "ext2", "-b", "4096", "-d"])
        .arg(&staging)
        .arg("-F")
        .arg(&images.fs)
        .arg(ROOTFS_SIZE)
        .output()
        .context("cannot run mke2fs: install the Debian package e2fsprogs (./run-qemu.sh does)")?;
    if !out.status.success() {
        bail!("mke2fs failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    fs::remove_dir_all(&staging).ok();
    Ok(())
}

/// Copies the folder `from` into `to`, recursively.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else {
            fs::copy(entry.path(), &dest).with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table this crate writes for its own test binary reads back in the
    /// layout the kernel expects: sorted, in bounds, names resolvable.
    #[test]
    fn symbol_table_layout() {
        let exe = std::env::current_exe().unwrap();
        let elf = fs::read(exe).unwrap();
        let t = symbol_table(&elf).unwrap();
        assert_eq!(&t[..8], KSYM_MAGIC);
        let count = u64::from_le_bytes(t[8..16].try_into().unwrap()) as usize;
        let strtab_len = u64::from_le_bytes(t[16..24].try_into().unwrap()) as usize;
        assert!(count > 100);
        assert_eq!(t.len(), 24 + count * 16 + strtab_len);
        let strtab = &t[24 + count * 16..];
        let mut last = 0;
        let mut found = false;
        for i in 0..count {
            let e = &t[24 + i * 16..24 + i * 16 + 16];
            let addr = u64::from_le_bytes(e[..8].try_into().unwrap());
            let off = u32::from_le_bytes(e[12..16].try_into().unwrap()) as usize;
            assert!(addr > last || i == 0, "entries not strictly sorted");
            last = addr;
            let end = off + strtab[off..].iter().position(|&b| b == 0).unwrap();
            let name = std::str::from_utf8(&strtab[off..end]).unwrap();
            found |= name.ends_with("tests::symbol_table_layout");
        }
        assert!(found, "this test's own function is missing from the table");
    }

    #[test]
    fn image_paths_sit_next_to_the_kernel() {
        let i = Images::for_kernel(Path::new("/t/debug/kernel"));
        assert_eq!(i.bios, Path::new("/t/debug/kernel-bios.img"));
        assert_eq!(i.uefi, Path::new("/t/debug/kernel-uefi.img"));
        assert_eq!(i.symbols, Path::new("/t/debug/kernel.ksym"));
        assert_eq!(i.stripped, Path::new("/t/debug/kernel.stripped"));
    }

    #[test]
    fn a_non_elf_file_is_refused() {
        assert!(symbol_table(b"not an elf").is_err());
    }
}
