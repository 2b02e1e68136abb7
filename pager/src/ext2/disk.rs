//! The on-disk structures of ext2: superblock, group descriptors, inodes.
//!
//! Every structure is little-endian and read field by field from bytes (no
//! `repr(C)` casts: the bytes come from a disk that may lie). Each in-memory
//! struct keeps the raw bytes it was read from and patches only the fields it
//! owns when written back, so fields this driver does not understand (UUID,
//! hash seed, extended inode fields) survive untouched.

use alloc::vec::Vec;

use super::FsError;

pub(super) fn get16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

pub(super) fn get32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

pub(super) fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

pub(super) fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// The superblock always sits at byte 1024 of the device, whatever the
/// block size, and is 1024 bytes long.
pub(super) const SUPERBLOCK_OFFSET: u64 = 1024;
pub(super) const SUPERBLOCK_SIZE: usize = 1024;

const MAGIC: u16 = 0xEF53;

/// `s_state`: unmounted cleanly (set) or in use / crashed (clear).
const STATE_VALID: u16 = 1;

// Feature flags this driver knows. Compat features may be ignored by anyone;
// an unknown incompat feature means the layout is not what we think (refuse to
// mount); an unknown ro_compat feature means we may read but not write.
pub(super) const INCOMPAT_FILETYPE: u32 = 0x0002;
pub(super) const RO_COMPAT_SPARSE_SUPER: u32 = 0x0001;
pub(super) const RO_COMPAT_LARGE_FILE: u32 = 0x0002;
const INCOMPAT_SUPPORTED: u32 = INCOMPAT_FILETYPE;
const RO_COMPAT_WRITABLE: u32 = RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE;

/// The superblock fields this driver uses; `raw` keeps the rest.
pub(super) struct Superblock {
    raw: Vec<u8>,
    pub inodes_count: u32,
    pub blocks_count: u32,
    pub free_blocks: u32,
    pub free_inodes: u32,
    pub first_data_block: u32,
    pub block_size: usize,
    pub blocks_per_group: u32,
    pub inodes_per_group: u32,
    pub first_ino: u32,
    pub inode_size: usize,
    pub incompat: u32,
    pub ro_compat: u32,
    /// The latest of the superblock's times: the clock when none is set.
    pub last_time: u32,
    /// True when unknown ro_compat features forbid writing.
    pub read_only: bool,
}

impl Superblock {
    /// Parses and checks a superblock. Anything inconsistent is `Corrupt`,
    /// anything valid but beyond this driver is `Unsupported`.
    pub fn parse(raw: Vec<u8>) -> Result<Superblock, FsError> {
        if get16(&raw, 56) != MAGIC {
            return Err(FsError::Corrupt("bad superblock magic"));
        }
        let rev = get32(&raw, 76);
        let (first_ino, inode_size) = match rev {
            0 => (11, 128),
            1 => (get32(&raw, 84), get16(&raw, 88) as usize),
            _ => return Err(FsError::Unsupported("superblock revision above 1")),
        };
        let log = get32(&raw, 24);
        if log > 2 {
            return Err(FsError::Unsupported("block size above 4 KiB"));
        }
        let block_size = 1024usize << log;
        let incompat = if rev == 0 { 0 } else { get32(&raw, 96) };
        let ro_compat = if rev == 0 { 0 } else { get32(&raw, 100) };
        if incompat & !INCOMPAT_SUPPORTED != 0 {
            return Err(FsError::Unsupported(incompat_name(incompat & !INCOMPAT_SUPPORTED)));
        }
        let sb = Superblock {
            inodes_count: get32(&raw, 0),
            blocks_count: get32(&raw, 4),
            free_blocks: get32(&raw, 12),
            free_inodes: get32(&raw, 16),
            first_data_block: get32(&raw, 20),
            block_size,
            blocks_per_group: get32(&raw, 32),
            inodes_per_group: get32(&raw, 40),
            first_ino,
            inode_size,
            incompat,
            ro_compat,
            last_time: get32(&raw, 44).max(get32(&raw, 48)).max(get32(&raw, 64)),
            read_only: ro_compat & !RO_COMPAT_WRITABLE != 0,
            raw,
        };
        sb.check()?;
        Ok(sb)
    }

    fn check(&self) -> Result<(), FsError> {
        let bits_per_block = self.block_size as u32 * 8;
        if self.first_data_block != u32::from(self.block_size == 1024) {
            return Err(FsError::Corrupt("first data block does not match block size"));
        }
        if self.blocks_per_group == 0 || self.blocks_per_group > bits_per_block {
            return Err(FsError::Corrupt("bad blocks per group"));
        }
        if self.inodes_per_group == 0 || self.inodes_per_group > bits_per_block {
            return Err(FsError::Corrupt("bad inodes per group"));
        }
        if self.inode_size < 128 || self.inode_size > self.block_size || !self.inode_size.is_power_of_two() {
            return Err(FsError::Corrupt("bad inode size"));
        }
        if self.blocks_count <= self.first_data_block {
            return Err(FsError::Corrupt("bad block count"));
        }
        if u64::from(self.inodes_count) != u64::from(self.group_count()) * u64::from(self.inodes_per_group) {
            return Err(FsError::Corrupt("inode count does not match groups"));
        }
        if self.first_ino < 3 || self.first_ino > self.inodes_count {
            return Err(FsError::Corrupt("bad first inode"));
        }
        Ok(())
    }

    pub fn group_count(&self) -> u32 {
        (self.blocks_count - self.first_data_block).div_ceil(self.blocks_per_group)
    }

    pub fn has_filetype(&self) -> bool {
        self.incompat & INCOMPAT_FILETYPE != 0
    }

    /// The superblock's bytes with the in-memory fields written in and
    /// `s_state` set to say whether the disk is consistent.
    pub fn encode(&mut self, clean: bool, now: u32) -> &[u8] {
        put32(&mut self.raw, 12, self.free_blocks);
        put32(&mut self.raw, 16, self.free_inodes);
        put32(&mut self.raw, 48, now);
        put32(&mut self.raw, 100, self.ro_compat);
        let state = get16(&self.raw, 58);
        let state = if clean { state | STATE_VALID } else { state & !STATE_VALID };
        put16(&mut self.raw, 58, state);
        &self.raw
    }
}

fn incompat_name(bits: u32) -> &'static str {
    const NAMES: [(u32, &str); 8] = [
        (0x0001, "compression is not supported"),
        (0x0004, "the journal needs recovery"),
        (0x0008, "journal devices are not supported"),
        (0x0010, "meta_bg is not supported"),
        (0x0040, "extents are not supported (ext4)"),
        (0x0080, "64bit is not supported (ext4)"),
        (0x0200, "flex_bg is not supported (ext4)"),
        (0x0400, "ea_inode is not supported"),
    ];
    NAMES.iter().find(|(b, _)| bits & b != 0).map_or("unknown incompatible feature", |(_, n)| n)
}

/// Bytes per group descriptor (no 64bit feature).
pub(super) const DESC_SIZE: usize = 32;

/// One block group's descriptor: where its bitmaps and inode table are and
/// how much of it is free.
#[derive(Clone, Copy, Debug)]
pub(super) struct GroupDesc {
    pub block_bitmap: u32,
    pub inode_bitmap: u32,
    pub inode_table: u32,
    pub free_blocks: u16,
    pub free_inodes: u16,
    pub used_dirs: u16,
}

impl GroupDesc {
    pub fn parse(b: &[u8]) -> GroupDesc {
        GroupDesc {
            block_bitmap: get32(b, 0),
            inode_bitmap: get32(b, 4),
            inode_table: get32(b, 8),
            free_blocks: get16(b, 12),
            free_inodes: get16(b, 14),
            used_dirs: get16(b, 16),
        }
    }

    /// Writes the counters back; the locations never change.
    pub fn store(&self, b: &mut [u8]) {
        put16(b, 12, self.free_blocks);
        put16(b, 14, self.free_inodes);
        put16(b, 16, self.used_dirs);
    }
}

// Inode modes (the file type is the top four bits).
pub(super) const S_IFMT: u16 = 0o170000;
pub(super) const S_IFREG: u16 = 0o100000;
pub(super) const S_IFDIR: u16 = 0o040000;

/// `i_flags`: the directory has an htree index (dir_index).
pub(super) const INDEX_FL: u32 = 0x1000;

/// Direct block pointers in an inode; then single, double, triple indirect.
pub(super) const NDIR: usize = 12;

/// The 128-byte "good old" inode, parsed. The extended part of a 256-byte
/// inode is left as it is on disk.
#[derive(Clone, Debug, Default)]
pub(super) struct Inode {
    pub mode: u16,
    pub uid: u32,
    pub size: u64,
    pub atime: u32,
    pub ctime: u32,
    pub mtime: u32,
    pub dtime: u32,
    pub gid: u32,
    pub links: u16,
    /// 512-byte sectors held, data and indirect blocks alike.
    pub blocks: u32,
    pub flags: u32,
    pub block: [u32; 15],
    pub file_acl: u32,
}

impl Inode {
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }

    pub fn is_reg(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }

    pub fn parse(b: &[u8]) -> Inode {
        let mode = get16(b, 0);
        let mut size = u64::from(get32(b, 4));
        // i_size_high: for regular files only; directories keep i_dir_acl there.
        if mode & S_IFMT == S_IFREG {
            size |= u64::from(get32(b, 108)) << 32;
        }
        let mut block = [0u32; 15];
        for (i, p) in block.iter_mut().enumerate() {
            *p = get32(b, 40 + 4 * i);
        }
        Inode {
            mode,
            uid: u32::from(get16(b, 2)) | u32::from(get16(b, 120)) << 16,
            size,
            atime: get32(b, 8),
            ctime: get32(b, 12),
            mtime: get32(b, 16),
            dtime: get32(b, 20),
            gid: u32::from(get16(b, 24)) | u32::from(get16(b, 122)) << 16,
            links: get16(b, 26),
            blocks: get32(b, 28),
            flags: get32(b, 32),
            block,
            file_acl: get32(b, 104),
        }
    }

    /// Writes the fields back into the inode's first 128 bytes.
    pub fn store(&self, b: &mut [u8]) {
        put16(b, 0, self.mode);
        put16(b, 2, self.uid as u16);
        put32(b, 4, self.size as u32);
        put32(b, 8, self.atime);
        put32(b, 12, self.ctime);
        put32(b, 16, self.mtime);
        put32(b, 20, self.dtime);
        put16(b, 24, self.gid as u16);
        put16(b, 26, self.links);
        put32(b, 28, self.blocks);
        put32(b, 32, self.flags);
        for (i, p) in self.block.iter().enumerate() {
            put32(b, 40 + 4 * i, *p);
        }
        put32(b, 104, self.file_acl);
        if self.is_reg() {
            put32(b, 108, (self.size >> 32) as u32);
        }
        put16(b, 120, (self.uid >> 16) as u16);
        put16(b, 122, (self.gid >> 16) as u16);
    }
}
