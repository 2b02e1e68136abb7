//! Kernel symbol names for backtraces and fault reports.
//!
//! The kernel's own ELF symbol table is not loaded by the bootloader, so the
//! image builder (`boot/`) extracts it, demangles the names, and passes it as
//! the bootloader's ramdisk in this layout (little-endian):
//!
//! ```text
//! 0   magic "KSYM0001"
//! 8   u64 count            number of entries
//! 16  u64 strtab_len
//! 24  entries: count × { u64 addr (link-time); u32 size; u32 name offset }
//!     string table: strtab_len bytes of UTF-8 names, not terminated
//! ```
//!
//! Entries are sorted by address. Link-time addresses are relative to the
//! image base: the kernel is position independent, and the bootloader loads it
//! at `kernel_image_offset` (fixed by the boot config, see `main.rs`).

use core::fmt::Write;

use spin::Once;

const MAGIC: &[u8; 8] = b"KSYM0001";
const ENTRY_SIZE: usize = 16;

struct Table {
    data: &'static [u8],
    count: usize,
    strtab: usize,
    image_offset: u64,
}

static TABLE: Once<Table> = Once::new();

fn u64_at(d: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(off..off + 8)?.try_into().ok()?))
}

fn u32_at(d: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(off..off + 4)?.try_into().ok()?))
}

/// Installs the symbol table found in the ramdisk. A missing or malformed
/// table leaves backtraces with addresses only.
pub fn init(ramdisk: Option<&'static [u8]>, image_offset: u64) {
    let Some(data) = ramdisk else {
        log::warn!("ksyms: no ramdisk; backtraces will show addresses only");
        return;
    };
    let parsed = (|| {
        if data.get(..8)? != MAGIC {
            return None;
        }
        let count = u64_at(data, 8)? as usize;
        let strtab_len = u64_at(data, 16)? as usize;
        let strtab = 24usize.checked_add(count.checked_mul(ENTRY_SIZE)?)?;
        if strtab.checked_add(strtab_len)? > data.len() {
            return None;
        }
        Some(Table { data, count, strtab, image_offset })
    })();
    match parsed {
        Some(t) => {
            log::info!("ksyms: {} symbols", t.count);
            TABLE.call_once(|| t);
        }
        None => log::warn!("ksyms: ramdisk holds no valid symbol table"),
    }
}

impl Table {
    fn entry(&self, i: usize) -> (u64, u32, u32) {
        let off = 24 + i * ENTRY_SIZE;
        (u64_at(self.data, off).unwrap_or(0), u32_at(self.data, off + 8).unwrap_or(0), u32_at(self.data, off + 12).unwrap_or(0))
    }

    fn name(&self, name_off: u32) -> &'static str {
        let data: &'static [u8] = self.data;
        let rest = &data[(self.strtab + name_off as usize).min(data.len())..];
        // Names are stored without terminators; each ends where the next begins,
        // so the builder puts a NUL after each one.
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        core::str::from_utf8(&rest[..end]).unwrap_or("?")
    }

    fn lookup(&self, addr: u64) -> Option<(&'static str, u64)> {
        let rel = addr.checked_sub(self.image_offset)?;
        // Last entry with entry.addr <= rel.
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.entry(mid).0 <= rel {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let (start, size, name) = self.entry(lo.checked_sub(1)?);
        let off = rel - start;
        // A symbol without a size still names the addresses up to the next one.
        if size != 0 && off >= size as u64 {
            return None;
        }
        Some((self.name(name), off))
    }
}

/// The symbol containing `addr` and the offset into it.
pub fn lookup(addr: u64) -> Option<(&'static str, u64)> {
    TABLE.get()?.lookup(addr)
}

/// Writes ` <symbol+0xoff>` for `addr`, or nothing if it is unknown.
pub fn write_symbol(w: &mut dyn Write, addr: u64) {
    if let Some((name, off)) = lookup(addr) {
        let _ = write!(w, " <{name}+{off:#x}>");
    }
}

#[ktest::ktest]
fn this_function_is_named() {
    let here = this_function_is_named as fn() as usize as u64;
    let (name, off) = lookup(here).expect("no symbol for a kernel function");
    assert_eq!(off, 0);
    assert!(name.ends_with("ksyms::this_function_is_named"), "got {name}");
}
