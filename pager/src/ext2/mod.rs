//! ext2: the filesystem under the vnode pager and the file system calls.
//!
//! # On-disk layout, briefly
//!
//! ```text
//!  byte 1024: superblock (counts, sizes, features)
//!  block group 0            block group 1             ...
//! +----+-----+----+----+------+--------+----+-----+----+----+------+--------+
//! | sb | GDT | rsv| bb | ib   | inodes | sb | GDT | rsv| bb | ib   | inodes | data...
//! +----+-----+----+----+------+--------+----+-----+----+----+------+--------+
//!   sb, GDT: superblock and group-descriptor table (copies only in some
//!            groups with sparse_super); rsv: blocks kept for online resize
//!   bb, ib:  block and inode bitmaps of the group (one bit per block/inode)
//!   inodes:  the group's inode table
//! ```
//!
//! An inode maps file blocks through 12 direct pointers and a single, a
//! double and a triple indirect block (`bmap.rs`). A directory is a file of
//! variable-length entries (`dir.rs`); with dir_index some of its blocks hold
//! an htree, disguised as empty entries so a linear reader never notices.
//!
//! # Choices
//!
//! - Metadata goes through a small write-back cache (`cache.rs`); the group
//!   descriptors and superblock live in memory. [`Ext2::sync`] writes it all:
//!   cached blocks first, then the descriptors, then the superblock marked
//!   clean. Before the first change after a mount or a sync, the superblock is
//!   written marked not clean, so a crash in between is noticed by fsck, which
//!   can repair anything this driver leaves half done (ext2 has no journal).
//! - File data goes straight between the caller's buffer and the device; the
//!   kernel's page cache is the VM's objects.
//! - A modified directory with an htree loses its INDEX flag (as Linux's ext2
//!   does): the entries stay valid for a linear scan, the stale index is never
//!   trusted again.
//! - Only what the kernel needs: regular files are created and unlinked;
//!   directories are read. No symlink following, no xattrs (an inode's xattr
//!   block is kept, and released on delete).
//! - No panics on a bad image or I/O error: every block number and directory
//!   entry read from disk is checked, and errors come back as [`FsError`].
//!
//! Locking: every method takes `&mut self`; the kernel serialises callers
//! with a sleeping lock around the whole filesystem.

mod allocator;
mod bmap;
mod cache;
mod dir;
mod disk;
mod file;

use alloc::vec;
use alloc::vec::Vec;

use crate::block::{BlockDevice, BlockError, SECTOR_SIZE};
use cache::BlockCache;
use disk::{DESC_SIZE, GroupDesc, Inode, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, Superblock};

pub use dir::DirEntry;

/// An inode number. Inode 2 is the root directory.
pub type Ino = u32;

/// The root directory's inode.
pub const ROOT_INO: Ino = 2;

/// Longest name in a directory entry.
pub const NAME_MAX: usize = 255;

/// Why a filesystem operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsError {
    /// No such file or directory.
    NotFound,
    /// A path component, or the directory argument, is not a directory.
    NotDir,
    /// The operation needs a regular file and got a directory.
    IsDir,
    /// The name already exists.
    Exists,
    /// No free block or inode left.
    NoSpace,
    /// The file would grow past what ext2 can map.
    FileTooBig,
    /// The device failed.
    Io(BlockError),
    /// The image contradicts itself; the text says where.
    Corrupt(&'static str),
    /// A name longer than [`NAME_MAX`] bytes.
    NameTooLong,
    /// An empty name, one containing '/' or NUL, or "." / "..".
    InvalidName,
    /// A valid filesystem using something this driver does not do.
    Unsupported(&'static str),
    /// The filesystem has features that forbid writing it here.
    ReadOnly,
    /// Not a file type this call handles (e.g. creating a device node).
    InvalidArgument,
    /// Kernel memory ran short (a vnode, an open file).
    NoMemory,
    /// The system's table of open files is full.
    TooManyOpen,
}

impl FsError {
    /// The Linux errno (positive) a system call returns for this error.
    pub fn errno(self) -> i32 {
        match self {
            FsError::NotFound => 2,                                // ENOENT
            FsError::Io(_) => 5,                                   // EIO
            FsError::Exists => 17,                                 // EEXIST
            FsError::NoMemory => 12,                               // ENOMEM
            FsError::NotDir => 20,                                 // ENOTDIR
            FsError::IsDir => 21,                                  // EISDIR
            FsError::InvalidArgument | FsError::InvalidName => 22, // EINVAL
            FsError::TooManyOpen => 23,                            // ENFILE
            FsError::FileTooBig => 27,                             // EFBIG
            FsError::NoSpace => 28,                                // ENOSPC
            FsError::ReadOnly => 30,                               // EROFS
            FsError::NameTooLong => 36,                            // ENAMETOOLONG
            FsError::Unsupported(_) => 95,                         // EOPNOTSUPP
            FsError::Corrupt(_) => 117,                            // EUCLEAN
        }
    }
}

/// What `stat` reports about an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub ino: Ino,
    /// File type and permission bits, as in `st_mode`.
    pub mode: u16,
    pub nlink: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub atime: u32,
    pub mtime: u32,
    pub ctime: u32,
    /// 512-byte units allocated, indirect blocks included (`st_blocks`).
    pub blocks: u64,
    /// The filesystem block size (`st_blksize`).
    pub blksize: u32,
}

/// A mounted ext2 filesystem on device `D`.
///
/// Lock legend: (F) the filesystem lock, i.e. the `&mut self` every method
/// takes (the kernel holds a sleeping lock around the whole `Ext2`);
/// (C) constant after mount.
pub struct Ext2<D: BlockDevice> {
    /// The device; data blocks are read and written on it directly. (F)
    dev: D,
    /// Superblock: geometry (C), free counts and features (F).
    sb: Superblock,
    /// Group descriptors: locations (C), free counts (F).
    groups: Vec<GroupDesc>,
    /// The group-descriptor table's bytes, as read; `groups` is written into
    /// it on sync. (F)
    gdt_raw: Vec<u8>,
    /// Metadata blocks, written back on sync or eviction. (F)
    cache: BlockCache,
    /// Something changed since the last sync (descriptors and superblock need
    /// writing, and the disk is marked not clean). (F)
    dirty: bool,
    /// Source of timestamps; None: the superblock's last time. (F)
    clock: Option<fn() -> u32>,
}

impl<D: BlockDevice> Ext2<D> {
    /// Mounts the filesystem on `dev`: reads and checks the superblock and
    /// the group descriptors. Fails with `Unsupported` for incompatible
    /// features; unknown read-only-compatible ones mount read-only.
    pub fn mount(dev: D) -> Result<Ext2<D>, FsError> {
        let mut raw = vec![0u8; SUPERBLOCK_SIZE];
        let sector = SUPERBLOCK_OFFSET / SECTOR_SIZE as u64;
        dev.read(sector, &mut raw).map_err(FsError::Io)?;
        let sb = Superblock::parse(raw)?;
        let bs = sb.block_size as u64;
        if u64::from(sb.blocks_count) * bs > dev.capacity() * SECTOR_SIZE as u64 {
            return Err(FsError::Corrupt("filesystem larger than the device"));
        }
        let ngroups = sb.group_count() as usize;
        let gdt_blocks = (ngroups * DESC_SIZE).div_ceil(sb.block_size);
        let mut gdt_raw = vec![0u8; gdt_blocks * sb.block_size];
        let gdt_start = u64::from(sb.first_data_block + 1) * bs / SECTOR_SIZE as u64;
        dev.read(gdt_start, &mut gdt_raw).map_err(FsError::Io)?;
        let groups = (0..ngroups).map(|g| GroupDesc::parse(&gdt_raw[g * DESC_SIZE..])).collect();
        let fs = Ext2 { dev, cache: BlockCache::new(sb.block_size), sb, groups, gdt_raw, dirty: false, clock: None };
        fs.check_groups()?;
        Ok(fs)
    }

    /// Every group's bitmaps and inode table must lie inside the filesystem.
    fn check_groups(&self) -> Result<(), FsError> {
        let itable_blocks = self.inode_table_blocks();
        for g in &self.groups {
            let inside =
                |b: u32, n: u32| b >= self.sb.first_data_block && u64::from(b) + u64::from(n) <= u64::from(self.sb.blocks_count);
            if !inside(g.block_bitmap, 1) || !inside(g.inode_bitmap, 1) || !inside(g.inode_table, itable_blocks) {
                return Err(FsError::Corrupt("group descriptor points outside the filesystem"));
            }
        }
        Ok(())
    }

    fn inode_table_blocks(&self) -> u32 {
        (self.sb.inodes_per_group as usize * self.sb.inode_size).div_ceil(self.sb.block_size) as u32
    }

    /// Bytes per filesystem block (1024, 2048 or 4096). Disk block `b` is
    /// at sector `b * block_size() / 512` of the device.
    pub fn block_size(&self) -> usize {
        self.sb.block_size
    }

    /// True when the filesystem was mounted read-only (unknown features).
    pub fn read_only(&self) -> bool {
        self.sb.read_only
    }

    /// Free blocks and free inodes.
    pub fn free_counts(&self) -> (u32, u32) {
        (self.sb.free_blocks, self.sb.free_inodes)
    }

    /// Sets the clock used for timestamps (seconds since 1970). Without one,
    /// the latest time recorded in the superblock is used.
    pub fn set_clock(&mut self, clock: fn() -> u32) {
        self.clock = Some(clock);
    }

    /// The device, e.g. for the vnode pager's clustered reads at the disk
    /// blocks [`Ext2::bmap_run`] returns. Writing metadata blocks behind the
    /// filesystem's back is not allowed.
    pub fn device(&mut self) -> &mut D {
        &mut self.dev
    }

    /// Gives the device back, without syncing (call [`Ext2::sync`] first).
    pub fn into_device(self) -> D {
        self.dev
    }

    /// Drops clean cached metadata so the next accesses read the device.
    pub fn drop_caches(&mut self) {
        self.cache.drop_clean();
    }

    /// Writes all dirty metadata: cached blocks, group descriptors, and last
    /// the superblock, marked clean. On an error what is not written stays
    /// dirty and the disk stays marked not clean.
    pub fn sync(&mut self) -> Result<(), FsError> {
        self.cache.flush(&mut self.dev)?;
        if !self.dirty {
            return Ok(());
        }
        for (g, desc) in self.groups.iter().enumerate() {
            desc.store(&mut self.gdt_raw[g * DESC_SIZE..]);
        }
        let gdt_start = u64::from(self.sb.first_data_block + 1) * self.sb.block_size as u64 / SECTOR_SIZE as u64;
        self.dev.write(gdt_start, &self.gdt_raw).map_err(FsError::Io)?;
        self.write_superblock(true)?;
        self.dirty = false;
        Ok(())
    }

    /// Called before the first change after a mount or sync: refuses if the
    /// filesystem is read-only, and marks the disk not clean.
    fn begin_change(&mut self) -> Result<(), FsError> {
        if self.sb.read_only {
            return Err(FsError::ReadOnly);
        }
        if !self.dirty {
            self.write_superblock(false)?;
            self.dirty = true;
        }
        Ok(())
    }

    fn write_superblock(&mut self, clean: bool) -> Result<(), FsError> {
        let now = self.now();
        let bytes = self.sb.encode(clean, now);
        self.dev.write(SUPERBLOCK_OFFSET / SECTOR_SIZE as u64, bytes).map_err(FsError::Io)
    }

    fn now(&self) -> u32 {
        self.clock.map_or(self.sb.last_time, |c| c())
    }

    /// Checks that an inode number names an inode that can exist.
    fn check_ino(&self, ino: Ino) -> Result<(), FsError> {
        if ino == 0 || ino > self.sb.inodes_count {
            return Err(FsError::Corrupt("inode number out of range"));
        }
        Ok(())
    }

    /// The inode-table block holding `ino`, and the inode's offset in it.
    fn inode_location(&self, ino: Ino) -> Result<(u32, usize), FsError> {
        self.check_ino(ino)?;
        let index = (ino - 1) as usize;
        let group = index / self.sb.inodes_per_group as usize;
        let byte = (index % self.sb.inodes_per_group as usize) * self.sb.inode_size;
        let block = self.groups[group].inode_table + (byte / self.sb.block_size) as u32;
        Ok((block, byte % self.sb.block_size))
    }

    fn read_inode(&mut self, ino: Ino) -> Result<Inode, FsError> {
        let (block, off) = self.inode_location(ino)?;
        let buf = self.cache.get(&mut self.dev, block)?;
        Ok(Inode::parse(&buf[off..off + 128]))
    }

    fn write_inode(&mut self, ino: Ino, inode: &Inode) -> Result<(), FsError> {
        // A file of 2 GiB or more needs i_size_high, which old drivers
        // ignore: the large_file feature tells them to keep away.
        if inode.is_reg() && inode.size > i32::MAX as u64 {
            self.sb.ro_compat |= disk::RO_COMPAT_LARGE_FILE;
        }
        let (block, off) = self.inode_location(ino)?;
        let buf = self.cache.get_mut(&mut self.dev, block)?;
        inode.store(&mut buf[off..off + 128]);
        Ok(())
    }

    /// Writes a brand-new inode: the whole on-disk slot is cleared first, and
    /// a large inode gets the extra-field size mke2fs and Linux give it.
    fn write_new_inode(&mut self, ino: Ino, inode: &Inode) -> Result<(), FsError> {
        let (block, off) = self.inode_location(ino)?;
        let size = self.sb.inode_size;
        let buf = self.cache.get_mut(&mut self.dev, block)?;
        let slot = &mut buf[off..off + size];
        slot.fill(0);
        if size >= 160 {
            disk::put16(slot, 128, 32);
        }
        inode.store(slot);
        Ok(())
    }

    /// `stat` for an inode.
    pub fn stat(&mut self, ino: Ino) -> Result<Stat, FsError> {
        let inode = self.read_inode(ino)?;
        Ok(Stat {
            ino,
            mode: inode.mode,
            nlink: inode.links,
            uid: inode.uid,
            gid: inode.gid,
            size: inode.size,
            atime: inode.atime,
            mtime: inode.mtime,
            ctime: inode.ctime,
            blocks: u64::from(inode.blocks),
            blksize: self.sb.block_size as u32,
        })
    }

    /// Same as [`Ext2::sync`]: ext2 keeps no per-file metadata apart.
    pub fn fsync(&mut self, _ino: Ino) -> Result<(), FsError> {
        self.sync()
    }
}
