//! Regular files: read, write, truncate, create and unlink.
//!
//! Data blocks go straight between the caller's buffer and the device, in
//! one request per run of consecutive disk blocks when the transfer is
//! block-aligned. Partial blocks are read, patched and written back; a new
//! block (a hole being filled) starts from zeros instead.
//!
//! Every operation that changes an inode writes it back on its error path
//! too: blocks already attached must stay counted, or fsck would find them
//! leaked. `i_size` only ever covers data that reached the device.

use alloc::vec;

use super::cache::{read_blocks, write_blocks};
use super::disk::{Inode, S_IFMT, S_IFREG};
use super::{Ext2, FsError, Ino, dir};
use crate::block::BlockDevice;

/// ext2's directory-entry file type of a regular file.
const FT_REG: u8 = 1;

/// At most this many blocks go in one device request.
const MAX_RUN: usize = 64;

impl<D: BlockDevice> Ext2<D> {
    /// A regular file's inode, or IsDir / InvalidArgument.
    fn read_file_inode(&mut self, ino: Ino) -> Result<Inode, FsError> {
        let inode = self.read_inode(ino)?;
        if inode.is_dir() {
            return Err(FsError::IsDir);
        }
        if !inode.is_reg() {
            return Err(FsError::InvalidArgument);
        }
        Ok(inode)
    }

    /// Largest file size: what the block pointers can map.
    pub fn max_file_size(&self) -> u64 {
        self.max_file_blocks() * self.sb.block_size as u64
    }

    /// Reads from file `ino` at `offset` into `buf`; returns the bytes read
    /// (0 at or past the end of the file). Holes read as zeros.
    pub fn read(&mut self, ino: Ino, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        let inode = self.read_file_inode(ino)?;
        if offset >= inode.size {
            return Ok(0);
        }
        let len = buf.len().min((inode.size - offset).try_into().unwrap_or(usize::MAX));
        let bs = self.sb.block_size;
        let mut done = 0;
        let mut tmp = vec![0u8; bs];
        while done < len {
            let pos = offset + done as u64;
            let (fblock, within) = (pos / bs as u64, (pos % bs as u64) as usize);
            let whole = if within == 0 { (len - done) / bs } else { 0 };
            if whole > 0 {
                done += self.read_run(&inode, fblock, &mut buf[done..done + whole.min(MAX_RUN) * bs])?;
                continue;
            }
            let n = (bs - within).min(len - done);
            match self.map(&inode, fblock)? {
                Some(b) => {
                    read_blocks(&mut self.dev, self.sb.block_size, b, &mut tmp)?;
                    buf[done..done + n].copy_from_slice(&tmp[within..within + n]);
                }
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
        Ok(len)
    }

    /// Reads whole blocks from `fblock` into `buf` (a multiple of the block
    /// size): as many as are consecutive on disk, or as make up a hole.
    fn read_run(&mut self, inode: &Inode, fblock: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        let bs = self.sb.block_size;
        let max = buf.len() / bs;
        let Some(start) = self.map(inode, fblock)? else {
            buf[..bs].fill(0);
            return Ok(bs);
        };
        let mut run = 1;
        while run < max && self.map(inode, fblock + run as u64)? == Some(start + run as u32) {
            run += 1;
        }
        read_blocks(&mut self.dev, self.sb.block_size, start, &mut buf[..run * bs])?;
        Ok(run * bs)
    }

    /// Writes `buf` to file `ino` at `offset`, allocating blocks as needed
    /// and growing the file if the write ends past its size. Returns the
    /// bytes written (all of them, or an error).
    pub fn write(&mut self, ino: Ino, offset: u64, buf: &[u8]) -> Result<usize, FsError> {
        let mut inode = self.read_file_inode(ino)?;
        let end = offset.checked_add(buf.len() as u64).ok_or(FsError::FileTooBig)?;
        if end > self.max_file_size() {
            return Err(FsError::FileTooBig);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        self.begin_change()?;
        if offset > inode.size {
            self.zero_tail(&inode, inode.size)?;
        }
        let result = self.write_blocks(&mut inode, ino, offset, buf);
        let written = *result.as_ref().unwrap_or(&0);
        inode.size = inode.size.max(offset + written as u64);
        let now = self.now();
        inode.mtime = now;
        inode.ctime = now;
        self.write_inode(ino, &inode)?;
        result.and(Ok(buf.len()))
    }

    /// The data part of `write`: returns how many bytes reached the device
    /// before an error, or the error itself if nothing did.
    fn write_blocks(&mut self, inode: &mut Inode, ino: Ino, offset: u64, buf: &[u8]) -> Result<usize, FsError> {
        let bs = self.sb.block_size;
        let mut done = 0;
        let mut tmp = vec![0u8; bs];
        while done < buf.len() {
            let pos = offset + done as u64;
            let (fblock, within) = (pos / bs as u64, (pos % bs as u64) as usize);
            let whole = if within == 0 { (buf.len() - done) / bs } else { 0 };
            let step = if whole > 0 {
                self.write_run(inode, ino, fblock, &buf[done..done + whole.min(MAX_RUN) * bs])
            } else {
                let n = (bs - within).min(buf.len() - done);
                self.write_partial(inode, ino, fblock, within, &buf[done..done + n], &mut tmp)
            };
            match step {
                Ok(n) => done += n,
                Err(e) if done == 0 => return Err(e),
                Err(e) => {
                    // Report the error; the size grows by what was written.
                    inode.size = inode.size.max(offset + done as u64);
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    /// Writes whole blocks from `fblock`: as many as land on consecutive
    /// disk blocks, in one request.
    fn write_run(&mut self, inode: &mut Inode, ino: Ino, fblock: u64, buf: &[u8]) -> Result<usize, FsError> {
        let bs = self.sb.block_size;
        let (start, _) = self.map_alloc(inode, ino, fblock)?;
        let mut run = 1;
        while run < buf.len() / bs {
            // A block that is not next on disk, or an allocation error (say
            // NoSpace), ends the run; the blocks allocated so far are written
            // first, so that no allocated block lies past the file's size,
            // and the next call meets the error again.
            match self.map_alloc(inode, ino, fblock + run as u64) {
                Ok((b, _)) if b == start + run as u32 => run += 1,
                _ => break,
            }
        }
        write_blocks(&mut self.dev, self.sb.block_size, start, &buf[..run * bs])?;
        Ok(run * bs)
    }

    /// Writes part of one block: read-modify-write, or zero-fill if new.
    fn write_partial(
        &mut self,
        inode: &mut Inode,
        ino: Ino,
        fblock: u64,
        within: usize,
        data: &[u8],
        tmp: &mut [u8],
    ) -> Result<usize, FsError> {
        let (block, fresh) = self.map_alloc(inode, ino, fblock)?;
        if fresh {
            tmp.fill(0);
        } else {
            read_blocks(&mut self.dev, self.sb.block_size, block, tmp)?;
        }
        tmp[within..within + data.len()].copy_from_slice(data);
        write_blocks(&mut self.dev, self.sb.block_size, block, tmp)?;
        Ok(data.len())
    }

    /// Zeroes the bytes from `size` to the end of its block, if that block
    /// is mapped: they become file data when the file grows past `size`, and
    /// must read as zeros whatever an older writer left there.
    fn zero_tail(&mut self, inode: &Inode, size: u64) -> Result<(), FsError> {
        let bs = self.sb.block_size as u64;
        if size.is_multiple_of(bs) {
            return Ok(());
        }
        let Some(block) = self.map(inode, size / bs)? else { return Ok(()) };
        let mut tmp = vec![0u8; bs as usize];
        read_blocks(&mut self.dev, self.sb.block_size, block, &mut tmp)?;
        tmp[(size % bs) as usize..].fill(0);
        write_blocks(&mut self.dev, self.sb.block_size, block, &tmp)
    }

    /// Sets the size of file `ino`. Shrinking frees the blocks past the new
    /// end (indirect blocks too) and zeroes the rest of the last partial
    /// block; growing leaves a hole.
    pub fn truncate(&mut self, ino: Ino, size: u64) -> Result<(), FsError> {
        let mut inode = self.read_file_inode(ino)?;
        if size > self.max_file_size() {
            return Err(FsError::FileTooBig);
        }
        self.begin_change()?;
        let old = inode.size;
        // Zero the tail first: if it fails, nothing has changed yet.
        self.zero_tail(&inode, size.min(old))?;
        inode.size = size;
        let bs = self.sb.block_size as u64;
        let result = if size < old { self.free_from(&mut inode, size.div_ceil(bs)) } else { Ok(()) };
        let now = self.now();
        inode.mtime = now;
        inode.ctime = now;
        self.write_inode(ino, &inode)?;
        result
    }

    /// Creates an empty regular file `name` in directory `dir` with
    /// permission bits `mode` (the type bits must be zero or S_IFREG).
    /// Returns its inode; Exists if the name is taken.
    pub fn create(&mut self, dir: Ino, name: impl AsRef<[u8]>, mode: u16) -> Result<Ino, FsError> {
        let name = name.as_ref();
        dir::check_name(name)?;
        if mode & S_IFMT != 0 && mode & S_IFMT != S_IFREG {
            return Err(FsError::InvalidArgument);
        }
        match self.lookup_in(dir, name) {
            Ok(_) => return Err(FsError::Exists),
            Err(FsError::NotFound) => {}
            Err(e) => return Err(e),
        }
        self.begin_change()?;
        let ino = self.alloc_inode(dir)?;
        let now = self.now();
        let inode = Inode { mode: S_IFREG | (mode & 0o7777), links: 1, atime: now, ctime: now, mtime: now, ..Inode::default() };
        let added = self.write_new_inode(ino, &inode).and_then(|()| self.add_entry(dir, name, ino, FT_REG));
        if let Err(e) = added {
            // Give the inode back, marked deleted (links 0, dtime set) so
            // fsck agrees it is free. Best effort: fsck repairs the rest.
            let dead = Inode { dtime: now.max(1), ..Inode::default() };
            let _ = self.write_inode(ino, &dead).and_then(|()| self.free_inode(ino, false));
            return Err(e);
        }
        Ok(ino)
    }

    /// Removes the name `name` from directory `dir`. When the file's last
    /// link goes, its blocks and inode are freed at once (the kernel must
    /// not call this for a file it still has open; see `unlink_keep`).
    pub fn unlink(&mut self, dir: Ino, name: impl AsRef<[u8]>) -> Result<(), FsError> {
        let ino = self.unlink_keep(dir, name)?;
        if self.read_inode(ino)?.links == 0 {
            self.release(ino)?;
        }
        Ok(())
    }

    /// Removes the name and drops a link, but keeps the inode even at zero
    /// links, for a file still open; [`Ext2::release`] frees it on last close.
    /// (A crash in between leaves an orphan inode that fsck frees.)
    pub fn unlink_keep(&mut self, dir: Ino, name: impl AsRef<[u8]>) -> Result<Ino, FsError> {
        let name = name.as_ref();
        if name == b"." || name == b".." {
            return Err(FsError::InvalidName);
        }
        let ino = self.lookup_in(dir, name)?;
        let mut inode = self.read_inode(ino)?;
        if inode.is_dir() {
            return Err(FsError::IsDir);
        }
        self.begin_change()?;
        self.remove_entry(dir, name)?;
        inode.links = inode.links.saturating_sub(1);
        inode.ctime = self.now();
        self.write_inode(ino, &inode)?;
        Ok(ino)
    }

    /// Frees an inode with no links left: its blocks, its xattr block, and
    /// the inode. Does nothing if it still has links.
    pub fn release(&mut self, ino: Ino) -> Result<(), FsError> {
        let mut inode = self.read_inode(ino)?;
        if inode.links != 0 || inode.mode == 0 {
            return Ok(());
        }
        self.begin_change()?;
        let freed = self.free_from(&mut inode, 0).and_then(|()| self.release_xattr(&mut inode));
        if freed.is_ok() {
            inode.size = 0;
            inode.dtime = self.now().max(1);
        }
        self.write_inode(ino, &inode)?;
        freed?;
        self.free_inode(ino, inode.is_dir())
    }

    /// Drops the inode's reference to its extended-attribute block, freeing
    /// the block if it was the last one (`h_refcount` at offset 4).
    fn release_xattr(&mut self, inode: &mut Inode) -> Result<(), FsError> {
        const XATTR_MAGIC: u32 = 0xEA02_0000;
        let b = inode.file_acl;
        if b == 0 {
            return Ok(());
        }
        self.check_block(b)?;
        let buf = self.cache.get_mut(&mut self.dev, b)?;
        if super::disk::get32(buf, 0) != XATTR_MAGIC {
            return Err(FsError::Corrupt("bad xattr block magic"));
        }
        let refs = super::disk::get32(buf, 4);
        if refs > 1 {
            super::disk::put32(buf, 4, refs - 1);
        } else {
            self.free_block(b)?;
        }
        inode.file_acl = 0;
        inode.blocks = inode.blocks.saturating_sub(self.sectors_per_block());
        Ok(())
    }
}
