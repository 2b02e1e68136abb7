//! Directories: a file of variable-length entries, read through the cache.
//!
//! ```text
//!  0      4        6         7          8
//! +------+--------+---------+----------+----------------+---------+
//! | ino  | rec_len| name_len| file_type| name (name_len)| padding |
//! +------+--------+---------+----------+----------------+---------+
//! ```
//!
//! `rec_len` (a multiple of 4) leads to the next entry; entries never cross a
//! block, and the last one in a block stretches to its end. An entry with
//! inode 0 is unused space. Removing an entry folds it into the one before
//! (or zeroes its inode if it is first in its block); adding one takes the
//! slack at the end of an entry whose `rec_len` is longer than it needs, or a
//! new block at the end of the directory.
//!
//! With dir_index, block 0's ".." entry stretches over the htree root and the
//! index blocks look like one empty entry each, so all of this works on them
//! unchanged; a directory we modify loses its INDEX flag (see `mod.rs`).

use alloc::vec::Vec;

use super::disk::{INDEX_FL, Inode, get16, get32, put16, put32};
use super::{Ext2, FsError, Ino, NAME_MAX, ROOT_INO};
use crate::block::BlockDevice;

/// Bytes of an entry before its name.
const HEADER: usize = 8;

/// Bytes an entry with a name of `len` bytes needs (rounded up to 4).
fn entry_len(len: usize) -> usize {
    (HEADER + len).next_multiple_of(4)
}

/// One entry as `readdir` returns it (for getdents64).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: Ino,
    pub name: Vec<u8>,
    /// Linux `d_type`: DT_REG 8, DT_DIR 4, DT_LNK 10, ... 0 if unknown.
    pub file_type: u8,
    /// Directory position of the entry after this one (`d_off`): pass it to
    /// the next `readdir` call to continue.
    pub next: u64,
}

/// An entry's header, checked against its block.
#[derive(Clone, Copy)]
struct Raw {
    ino: Ino,
    rec_len: usize,
    name_len: usize,
    file_type: u8,
}

/// Parses the entry at `off` of a directory block, refusing one that does
/// not fit the block.
fn parse(block: &[u8], off: usize) -> Result<Raw, FsError> {
    if off + HEADER > block.len() {
        return Err(FsError::Corrupt("directory entry past the end of its block"));
    }
    let raw = Raw {
        ino: get32(block, off),
        rec_len: get16(block, off + 4) as usize,
        name_len: block[off + 6] as usize,
        file_type: block[off + 7],
    };
    if raw.rec_len < HEADER || !raw.rec_len.is_multiple_of(4) || off + raw.rec_len > block.len() {
        return Err(FsError::Corrupt("bad directory entry length"));
    }
    if HEADER + raw.name_len > raw.rec_len {
        return Err(FsError::Corrupt("directory entry name longer than the entry"));
    }
    Ok(raw)
}

fn write_entry(block: &mut [u8], off: usize, ino: Ino, rec_len: usize, name: &[u8], file_type: u8) {
    put32(block, off, ino);
    put16(block, off + 4, rec_len as u16);
    block[off + 6] = name.len() as u8;
    block[off + 7] = file_type;
    block[off + HEADER..off + HEADER + name.len()].copy_from_slice(name);
}

/// ext2's file_type byte to Linux's `d_type`.
fn dtype(ft: u8) -> u8 {
    match ft {
        1 => 8,  // regular
        2 => 4,  // directory
        3 => 2,  // character device
        4 => 6,  // block device
        5 => 1,  // fifo
        6 => 12, // socket
        7 => 10, // symlink
        _ => 0,
    }
}

/// Where a found entry is: file block of the directory, offset in it, and
/// the offset of the entry before it in the same block (None if first).
struct Slot {
    fblock: u64,
    off: usize,
    prev: Option<usize>,
    ino: Ino,
}

/// Checks a name for a new entry.
pub(super) fn check_name(name: &[u8]) -> Result<(), FsError> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.iter().any(|&c| c == b'/' || c == 0) {
        return Err(FsError::InvalidName);
    }
    Ok(())
}

impl<D: BlockDevice> Ext2<D> {
    /// A directory's inode, or NotDir.
    pub(super) fn read_dir_inode(&mut self, ino: Ino) -> Result<Inode, FsError> {
        let inode = self.read_inode(ino)?;
        if !inode.is_dir() {
            return Err(FsError::NotDir);
        }
        Ok(inode)
    }

    /// Blocks in a directory (its size is always whole blocks).
    fn dir_blocks(&self, dir: &Inode) -> u64 {
        dir.size / self.sb.block_size as u64
    }

    /// The disk block of a directory's file block; a hole is corruption.
    fn dir_block(&mut self, dir: &Inode, fblock: u64) -> Result<u32, FsError> {
        self.map(dir, fblock)?.ok_or(FsError::Corrupt("hole in a directory"))
    }

    /// Finds `name` in a directory.
    fn find(&mut self, dir: &Inode, name: &[u8]) -> Result<Option<Slot>, FsError> {
        for fblock in 0..self.dir_blocks(dir) {
            let block = self.dir_block(dir, fblock)?;
            let buf = self.cache.get(&mut self.dev, block)?;
            let (mut off, mut prev) = (0, None);
            while off < buf.len() {
                let e = parse(buf, off)?;
                if e.ino != 0 && &buf[off + HEADER..off + HEADER + e.name_len] == name {
                    return Ok(Some(Slot { fblock, off, prev, ino: e.ino }));
                }
                prev = Some(off);
                off += e.rec_len;
            }
        }
        Ok(None)
    }

    /// The inode `name` names in directory `dir` ("." and ".." included).
    pub fn lookup_in(&mut self, dir: Ino, name: &[u8]) -> Result<Ino, FsError> {
        if name.len() > NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        let inode = self.read_dir_inode(dir)?;
        let slot = self.find(&inode, name)?.ok_or(FsError::NotFound)?;
        self.check_ino(slot.ino)?;
        Ok(slot.ino)
    }

    /// Resolves a path: absolute from the root, relative from `start`.
    /// Empty components and "." are skipped; ".." goes up (the root's ".."
    /// is the root). Symbolic links are not followed.
    pub fn lookup_at(&mut self, start: Ino, path: impl AsRef<[u8]>) -> Result<Ino, FsError> {
        let path = path.as_ref();
        if path.is_empty() {
            return Err(FsError::NotFound);
        }
        let mut ino = if path.first() == Some(&b'/') { ROOT_INO } else { start };
        for name in path.split(|&c| c == b'/').filter(|n| !n.is_empty() && *n != b".") {
            ino = self.lookup_in(ino, name)?;
        }
        // "a/", "a/." and "a/.." must name directories.
        let last = path.rsplit(|&c| c == b'/').next().unwrap_or_default();
        let wants_dir = last.is_empty() || last == b"." || last == b"..";
        if wants_dir && !self.read_inode(ino)?.is_dir() {
            return Err(FsError::NotDir);
        }
        Ok(ino)
    }

    /// Resolves a path from the root.
    pub fn lookup(&mut self, path: impl AsRef<[u8]>) -> Result<Ino, FsError> {
        self.lookup_at(ROOT_INO, path)
    }

    /// The entries of directory `dir` from position `pos` on: those of the
    /// next directory block that has any, or none at the end. A position
    /// inside an entry (the directory changed) resumes at the next entry.
    pub fn readdir(&mut self, dir: Ino, pos: u64) -> Result<Vec<DirEntry>, FsError> {
        let inode = self.read_dir_inode(dir)?;
        let bs = self.sb.block_size as u64;
        let mut out = Vec::new();
        let mut fblock = pos / bs;
        while out.is_empty() && fblock < self.dir_blocks(&inode) {
            let block = self.dir_block(&inode, fblock)?;
            let buf = self.cache.get(&mut self.dev, block)?;
            let base = fblock * bs;
            let mut off = 0;
            while off < buf.len() {
                let e = parse(buf, off)?;
                let start = off;
                off += e.rec_len;
                if e.ino == 0 || base + (start as u64) < pos {
                    continue;
                }
                let name = buf[start + HEADER..start + HEADER + e.name_len].to_vec();
                out.push(DirEntry { ino: e.ino, name, file_type: dtype(e.file_type), next: base + off as u64 });
            }
            fblock += 1;
        }
        Ok(out)
    }

    /// Adds the entry `name` -> `ino` to directory `dir_ino`, growing the
    /// directory by a block if no block has room. `file_type` is ext2's.
    pub(super) fn add_entry(&mut self, dir_ino: Ino, name: &[u8], ino: Ino, file_type: u8) -> Result<(), FsError> {
        let mut dir = self.read_dir_inode(dir_ino)?;
        let ft = if self.sb.has_filetype() { file_type } else { 0 };
        let need = entry_len(name.len());
        let bs = self.sb.block_size;
        for fblock in 0..self.dir_blocks(&dir) {
            let block = self.dir_block(&dir, fblock)?;
            let Some((off, keep)) = self.room_in(block, need)? else { continue };
            let buf = self.cache.get_mut(&mut self.dev, block)?;
            let rec_len = get16(buf, off + 4) as usize;
            if keep == 0 {
                // An unused entry: take it whole.
                write_entry(buf, off, ino, rec_len, name, ft);
            } else {
                put16(buf, off + 4, keep as u16);
                write_entry(buf, off + keep, ino, rec_len - keep, name, ft);
            }
            return self.touch_dir(dir_ino, &mut dir);
        }
        // No room: a new block holding only this entry.
        let fblock = self.dir_blocks(&dir);
        let result = self.map_alloc(&mut dir, dir_ino, fblock).and_then(|(block, _)| {
            let buf = self.cache.get_zeroed(&mut self.dev, block)?;
            write_entry(buf, 0, ino, bs, name, ft);
            Ok(())
        });
        if result.is_ok() {
            dir.size += bs as u64;
        }
        self.touch_dir(dir_ino, &mut dir)?;
        result
    }

    /// An entry in `block` with `need` bytes to spare: its offset and how
    /// many bytes it keeps (0 if it is unused and is taken whole).
    fn room_in(&mut self, block: u32, need: usize) -> Result<Option<(usize, usize)>, FsError> {
        let buf = self.cache.get(&mut self.dev, block)?;
        let mut off = 0;
        while off < buf.len() {
            let e = parse(buf, off)?;
            let used = if e.ino == 0 { 0 } else { entry_len(e.name_len) };
            if e.rec_len - used >= need {
                return Ok(Some((off, used)));
            }
            off += e.rec_len;
        }
        Ok(None)
    }

    /// Removes `name` from directory `dir_ino`; returns the inode it named.
    pub(super) fn remove_entry(&mut self, dir_ino: Ino, name: &[u8]) -> Result<Ino, FsError> {
        let mut dir = self.read_dir_inode(dir_ino)?;
        let slot = self.find(&dir, name)?.ok_or(FsError::NotFound)?;
        let block = self.dir_block(&dir, slot.fblock)?;
        let buf = self.cache.get_mut(&mut self.dev, block)?;
        match slot.prev {
            Some(prev) => {
                let merged = get16(buf, prev + 4) as usize + get16(buf, slot.off + 4) as usize;
                put16(buf, prev + 4, merged as u16);
            }
            None => put32(buf, slot.off, 0),
        }
        self.touch_dir(dir_ino, &mut dir)?;
        Ok(slot.ino)
    }

    /// After a change to a directory's entries: new mtime and ctime, and no
    /// htree index any more (it no longer matches the entries).
    fn touch_dir(&mut self, ino: Ino, dir: &mut Inode) -> Result<(), FsError> {
        let now = self.now();
        dir.mtime = now;
        dir.ctime = now;
        dir.flags &= !INDEX_FL;
        self.write_inode(ino, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_checked_against_their_block() {
        let mut block = [0u8; 64];
        write_entry(&mut block, 0, 5, 12, b"abc", 1);
        write_entry(&mut block, 12, 6, 52, b"x", 1);
        assert_eq!(parse(&block, 0).map(|e| (e.ino, e.rec_len)), Ok((5, 12)));
        assert!(parse(&block, 12).is_ok());
        put16(&mut block, 16, 56);
        assert!(matches!(parse(&block, 12), Err(FsError::Corrupt(_))), "rec_len past the block");
        put16(&mut block, 4, 6);
        assert!(matches!(parse(&block, 0), Err(FsError::Corrupt(_))), "rec_len below the header");
        assert!(matches!(parse(&block, 60), Err(FsError::Corrupt(_))), "header past the block");
        write_entry(&mut block, 0, 5, 12, b"abcdefgh", 1);
        assert!(matches!(parse(&block, 0), Err(FsError::Corrupt(_))), "name past rec_len");
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(check_name(b"ok"), Ok(()));
        assert_eq!(check_name(b""), Err(FsError::InvalidName));
        assert_eq!(check_name(b".."), Err(FsError::InvalidName));
        assert_eq!(check_name(b"a/b"), Err(FsError::InvalidName));
        assert_eq!(check_name(&[b'a'; 256]), Err(FsError::NameTooLong));
    }
}
