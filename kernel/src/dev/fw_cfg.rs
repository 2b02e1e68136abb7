//! QEMU's fw_cfg device: named files the host hands to the guest
//! (`-fw_cfg name=opt/...,file=...` or `string=...`), read through two I/O
//! ports (QEMU's docs/specs/fw_cfg.rst).
//!
//! The kernel command line arrives this way (`opt/kernel/cmdline`), and so do
//! the program and arguments of `./run-qemu.sh run` (`opt/run/program`,
//! `opt/run/args`). Without QEMU the signature check fails and every file is
//! absent.

use x86_64::instructions::port::Port;

use crate::proc::image::AlignedBytes;

const FW_CFG_SELECTOR: u16 = 0x510;
const FW_CFG_DATA: u16 = 0x511;
const FW_CFG_SIGNATURE: u16 = 0x0000;
const FW_CFG_FILE_DIR: u16 = 0x0019;

fn select(key: u16) {
    // SAFETY: 0x510 is fw_cfg's selector port on QEMU's PC machines; on other
    // machines the write goes nowhere, and the signature check fails.
    unsafe { Port::<u16>::new(FW_CFG_SELECTOR).write(key) };
}

fn read(buf: &mut [u8]) {
    // SAFETY: reading fw_cfg's data port only advances its read offset; the
    // string instruction stores into `buf`, which is ours, `len` bytes.
    unsafe {
        core::arch::asm!("rep insb", in("dx") FW_CFG_DATA, inout("rdi") buf.as_mut_ptr() => _,
            inout("rcx") buf.len() => _, options(nostack, preserves_flags));
    }
}

/// Finds file `name`: its selector key and size.
fn find(name: &[u8]) -> Option<(u16, usize)> {
    let mut sig = [0u8; 4];
    select(FW_CFG_SIGNATURE);
    read(&mut sig);
    if &sig != b"QEMU" {
        return None;
    }
    select(FW_CFG_FILE_DIR);
    let mut count = [0u8; 4];
    read(&mut count);
    for _ in 0..u32::from_be_bytes(count) {
        // struct FWCfgFile { be32 size; be16 select; u16 reserved; char name[56]; }
        let mut entry = [0u8; 64];
        read(&mut entry);
        let n = &entry[8..];
        let n = &n[..n.iter().position(|&b| b == 0).unwrap_or(n.len())];
        if n == name {
            let size = u32::from_be_bytes(entry[0..4].try_into().ok()?) as usize;
            let key = u16::from_be_bytes(entry[4..6].try_into().ok()?);
            return Some((key, size));
        }
    }
    None
}

/// Reads file `name` into `buf` without the heap (for the command line
/// before the heap exists): the number of bytes read, at most `buf.len()`.
pub fn read_into(name: &str, buf: &mut [u8]) -> Option<usize> {
    let (key, size) = find(name.as_bytes())?;
    let n = size.min(buf.len());
    select(key);
    read(&mut buf[..n]);
    Some(n)
}

/// Why a file could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FwCfgError {
    Missing,
    /// Larger than the caller's limit (its size).
    TooLarge(usize),
    NoMemory,
}

/// Reads file `name` whole, if it exists and is at most `limit` bytes. The
/// buffer is 8-byte aligned (an ELF image is parsed in place).
pub fn read_file(name: &str, limit: usize) -> Result<AlignedBytes, FwCfgError> {
    let (key, size) = find(name.as_bytes()).ok_or(FwCfgError::Missing)?;
    if size > limit {
        return Err(FwCfgError::TooLarge(size));
    }
    let mut buf = AlignedBytes::zeroed(size).ok_or(FwCfgError::NoMemory)?;
    select(key);
    read(buf.as_mut_slice());
    Ok(buf)
}
