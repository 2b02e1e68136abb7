//! Mapping file blocks to disk blocks: the inode's 15 pointers.
//!
//! ```text
//!  i_block[0..12] ──> data                    file blocks 0 .. 12
//!  i_block[12] ──> [p pointers] ──> data      next p         (single)
//!  i_block[13] ──> [p] ──> [p] ──> data       next p²        (double)
//!  i_block[14] ──> [p] ──> [p] ──> [p] ──> data  next p³     (triple)
//! ```
//!
//! with p = block size / 4. A zero pointer is a hole: the file reads zeros
//! there and nothing below it is allocated. Indirect blocks are metadata and
//! go through the cache; `i_blocks` counts them with the data blocks.

use alloc::vec::Vec;

use super::disk::{Inode, NDIR, get32, put32};
use super::{Ext2, FsError, Ino};
use crate::block::BlockDevice;

/// Where a file block's pointer lives: the slot in `i_block` and the index
/// in each indirect block on the way down (`depth` of them).
struct BlockPath {
    slot: usize,
    index: [usize; 3],
    depth: usize,
}

/// The path to file block `fblock`, or None past the triple indirect block.
fn block_path(fblock: u64, p: u64) -> Option<BlockPath> {
    let p = p as usize;
    let mut f = usize::try_from(fblock).ok()?;
    if f < NDIR {
        return Some(BlockPath { slot: f, index: [0; 3], depth: 0 });
    }
    f -= NDIR;
    if f < p {
        return Some(BlockPath { slot: 12, index: [f, 0, 0], depth: 1 });
    }
    f -= p;
    if f < p * p {
        return Some(BlockPath { slot: 13, index: [f / p, f % p, 0], depth: 2 });
    }
    f -= p * p;
    if f < p * p * p {
        return Some(BlockPath { slot: 14, index: [f / (p * p), (f / p) % p, f % p], depth: 3 });
    }
    None
}

impl<D: BlockDevice> Ext2<D> {
    /// Pointers per indirect block.
    pub(super) fn ptrs_per_block(&self) -> u64 {
        (self.sb.block_size / 4) as u64
    }

    /// File blocks an inode can map at most.
    pub(super) fn max_file_blocks(&self) -> u64 {
        let p = self.ptrs_per_block();
        NDIR as u64 + p + p * p + p * p * p
    }

    /// Sectors (the unit of `i_blocks`) per filesystem block.
    pub(super) fn sectors_per_block(&self) -> u32 {
        (self.sb.block_size / 512) as u32
    }

    /// The disk block holding file block `fblock`, or None for a hole.
    pub(super) fn map(&mut self, inode: &Inode, fblock: u64) -> Result<Option<u32>, FsError> {
        let Some(path) = block_path(fblock, self.ptrs_per_block()) else { return Ok(None) };
        let mut ptr = inode.block[path.slot];
        for &i in &path.index[..path.depth] {
            if ptr == 0 {
                return Ok(None);
            }
            self.check_block(ptr)?;
            ptr = get32(self.cache.get(&mut self.dev, ptr)?, 4 * i);
        }
        if ptr == 0 {
            return Ok(None);
        }
        self.check_block(ptr)?;
        Ok(Some(ptr))
    }

    /// The disk block holding file block `fblock`, allocated (with any
    /// missing indirect blocks) if it was a hole. Returns the block and
    /// whether it is new: a new data block holds garbage until written.
    /// The caller writes `inode` back even on error: blocks may have been
    /// attached to it before the failure.
    pub(super) fn map_alloc(&mut self, inode: &mut Inode, ino: Ino, fblock: u64) -> Result<(u32, bool), FsError> {
        if let Some(b) = self.map(inode, fblock)? {
            return Ok((b, false));
        }
        let path = block_path(fblock, self.ptrs_per_block()).ok_or(FsError::FileTooBig)?;
        let goal = self.alloc_goal(inode, ino, fblock)?;
        let mut ptr = inode.block[path.slot];
        if ptr == 0 {
            ptr = self.alloc_for(inode, goal, path.depth > 0)?;
            inode.block[path.slot] = ptr;
        }
        for (level, &i) in path.index[..path.depth].iter().enumerate() {
            let next = get32(self.cache.get(&mut self.dev, ptr)?, 4 * i);
            if next != 0 {
                self.check_block(next)?;
                ptr = next;
                continue;
            }
            let new = self.alloc_for(inode, goal, level + 1 < path.depth)?;
            put32(self.cache.get_mut(&mut self.dev, ptr)?, 4 * i, new);
            ptr = new;
        }
        Ok((ptr, true))
    }

    /// Allocates a block for `inode` and counts it in `i_blocks`; an indirect
    /// block starts zeroed (no pointers) in the cache.
    fn alloc_for(&mut self, inode: &mut Inode, goal: u32, indirect: bool) -> Result<u32, FsError> {
        let blocks = inode.blocks.checked_add(self.sectors_per_block()).ok_or(FsError::FileTooBig)?;
        let b = self.alloc_block(goal)?;
        inode.blocks = blocks;
        if indirect {
            self.cache.get_zeroed(&mut self.dev, b)?;
        }
        Ok(b)
    }

    /// Where to look for a new block of file block `fblock`: right after
    /// the previous file block if it is mapped, else the inode's group.
    fn alloc_goal(&mut self, inode: &Inode, ino: Ino, fblock: u64) -> Result<u32, FsError> {
        if fblock > 0
            && let Some(prev) = self.map(inode, fblock - 1)?
        {
            return Ok(prev + 1);
        }
        let group = (ino - 1) / self.sb.inodes_per_group;
        Ok(self.sb.first_data_block + group * self.sb.blocks_per_group)
    }

    /// Frees every block mapping file blocks `first..` (data and indirect
    /// blocks that end up empty) and clears their pointers. On error the
    /// inode still describes exactly the blocks it holds; write it back.
    pub(super) fn free_from(&mut self, inode: &mut Inode, first: u64) -> Result<(), FsError> {
        for slot in (first.min(NDIR as u64) as usize)..NDIR {
            let b = inode.block[slot];
            if b != 0 {
                self.free_block(b)?;
                inode.block[slot] = 0;
                inode.blocks = inode.blocks.saturating_sub(self.sectors_per_block());
            }
        }
        let p = self.ptrs_per_block();
        let mut base = NDIR as u64;
        let mut span = p;
        for (slot, depth) in [(12, 1), (13, 2), (14, 3)] {
            let root = inode.block[slot];
            if root != 0 && first < base + span && self.free_tree(inode, root, depth, base, first)? {
                self.free_block(root)?;
                inode.block[slot] = 0;
                inode.blocks = inode.blocks.saturating_sub(self.sectors_per_block());
            }
            base += span;
            span *= p;
        }
        Ok(())
    }

    /// Frees the file blocks `first..` below indirect block `ptr`, which
    /// maps file blocks from `base` through `depth` levels. Returns true
    /// when no pointer is left in it (the caller frees `ptr` itself).
    fn free_tree(&mut self, inode: &mut Inode, ptr: u32, depth: u32, base: u64, first: u64) -> Result<bool, FsError> {
        self.check_block(ptr)?;
        let span = self.ptrs_per_block().pow(depth - 1);
        let entries: Vec<u32> = {
            let buf = self.cache.get(&mut self.dev, ptr)?;
            (0..buf.len() / 4).map(|i| get32(buf, 4 * i)).collect()
        };
        let mut left = 0;
        for (i, &e) in entries.iter().enumerate() {
            let entry_base = base + i as u64 * span;
            if e == 0 {
                continue;
            }
            let freed = entry_base + span > first && (depth == 1 || self.free_tree(inode, e, depth - 1, entry_base, first)?);
            if !freed {
                left += 1;
                continue;
            }
            // Clear the pointer before the block goes back to the bitmap.
            put32(self.cache.get_mut(&mut self.dev, ptr)?, 4 * i, 0);
            self.free_block(e)?;
            inode.blocks = inode.blocks.saturating_sub(self.sectors_per_block());
        }
        Ok(left == 0)
    }

    /// `bmap` for the vnode pager: the disk block of file block `fblock` of
    /// inode `ino`, or None for a hole (or past the mappable range).
    pub fn bmap(&mut self, ino: Ino, fblock: u64) -> Result<Option<u32>, FsError> {
        let inode = self.read_inode(ino)?;
        self.map(&inode, fblock)
    }

    /// Like [`Ext2::bmap`], and also how many file blocks from `fblock` on
    /// (at most `max`, at least 1) sit at consecutive disk blocks, so they
    /// can be read in one request. None for a hole.
    pub fn bmap_run(&mut self, ino: Ino, fblock: u64, max: usize) -> Result<Option<(u32, usize)>, FsError> {
        let inode = self.read_inode(ino)?;
        let Some(start) = self.map(&inode, fblock)? else { return Ok(None) };
        let mut run = 1;
        while run < max && self.map(&inode, fblock + run as u64)? == Some(start + run as u32) {
            run += 1;
        }
        Ok(Some((start, run)))
    }
}

#[cfg(test)]
mod tests {
    use super::block_path;

    #[test]
    fn paths_cross_each_level_at_the_right_block() {
        let p = 256; // 1 KiB blocks
        let at = |f| block_path(f, p).map(|b| (b.slot, b.index, b.depth));
        assert_eq!(at(11), Some((11, [0; 3], 0)));
        assert_eq!(at(12), Some((12, [0, 0, 0], 1)));
        assert_eq!(at(12 + 255), Some((12, [255, 0, 0], 1)));
        assert_eq!(at(12 + 256), Some((13, [0, 0, 0], 2)));
        assert_eq!(at(12 + 256 + 257), Some((13, [1, 1, 0], 2)));
        assert_eq!(at(12 + 256 + 65536), Some((14, [0, 0, 0], 3)));
        assert_eq!(at(12 + 256 + 65536 + 16_777_215), Some((14, [255, 255, 255], 3)));
        assert_eq!(at(12 + 256 + 65536 + 16_777_216), None);
    }
}
