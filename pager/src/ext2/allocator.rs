//! Block and inode allocation from the group bitmaps.
//!
//! Each group has one bitmap block for its blocks and one for its inodes; a
//! set bit is in use. Every allocation or release updates three places: the
//! bitmap (through the cache), the group descriptor's free count and the
//! superblock's free count (both in memory until sync), so fsck's pass 5
//! finds them in agreement.
//!
//! Placement is first-fit from a goal: a file's next block is looked for
//! right after its previous one, so files come out contiguous and the vnode
//! pager can read many pages in one request; a new inode goes into its
//! directory's group.

use super::{Ext2, FsError, Ino};
use crate::block::BlockDevice;

/// Index of the first clear bit in `bitmap[start..end)`.
fn find_clear(bitmap: &[u8], start: usize, end: usize) -> Option<usize> {
    let mut bit = start;
    while bit < end {
        if bit.is_multiple_of(8) && bitmap[bit / 8] == 0xFF {
            bit += 8;
            continue;
        }
        if bitmap[bit / 8] & (1 << (bit % 8)) == 0 {
            return Some(bit);
        }
        bit += 1;
    }
    None
}

impl<D: BlockDevice> Ext2<D> {
    /// Blocks in group `g` (the last group may be short).
    fn blocks_in_group(&self, g: usize) -> u32 {
        let start = self.sb.first_data_block + g as u32 * self.sb.blocks_per_group;
        (self.sb.blocks_count - start).min(self.sb.blocks_per_group)
    }

    /// Allocates one block, as near after `goal` as possible.
    pub(super) fn alloc_block(&mut self, goal: u32) -> Result<u32, FsError> {
        if self.sb.free_blocks == 0 {
            return Err(FsError::NoSpace);
        }
        let bpg = self.sb.blocks_per_group;
        let goal = goal.clamp(self.sb.first_data_block, self.sb.blocks_count - 1);
        let first_group = ((goal - self.sb.first_data_block) / bpg) as usize;
        let ngroups = self.groups.len();
        // The goal's group from the goal on, then every group from its start
        // (the goal's group again last, for the bits before the goal).
        for k in 0..=ngroups {
            let g = (first_group + k) % ngroups;
            if self.groups[g].free_blocks == 0 {
                continue;
            }
            let start = if k == 0 { ((goal - self.sb.first_data_block) % bpg) as usize } else { 0 };
            let end = self.blocks_in_group(g) as usize;
            let bitmap_block = self.groups[g].block_bitmap;
            let bitmap = self.cache.get(&mut self.dev, bitmap_block)?;
            let Some(bit) = find_clear(bitmap, start, end) else { continue };
            self.cache.get_mut(&mut self.dev, bitmap_block)?[bit / 8] |= 1 << (bit % 8);
            self.groups[g].free_blocks -= 1;
            self.sb.free_blocks -= 1;
            return Ok(self.sb.first_data_block + g as u32 * bpg + bit as u32);
        }
        Err(FsError::NoSpace)
    }

    /// Returns a block to its group's bitmap. The block must not be used as
    /// metadata any more: it leaves the cache unwritten.
    pub(super) fn free_block(&mut self, block: u32) -> Result<(), FsError> {
        self.check_block(block)?;
        let rel = block - self.sb.first_data_block;
        let g = (rel / self.sb.blocks_per_group) as usize;
        let bit = (rel % self.sb.blocks_per_group) as usize;
        let bitmap_block = self.groups[g].block_bitmap;
        let bitmap = self.cache.get_mut(&mut self.dev, bitmap_block)?;
        if bitmap[bit / 8] & (1 << (bit % 8)) == 0 {
            return Err(FsError::Corrupt("freeing a free block"));
        }
        bitmap[bit / 8] &= !(1 << (bit % 8));
        self.cache.forget(block);
        self.groups[g].free_blocks += 1;
        self.sb.free_blocks += 1;
        Ok(())
    }

    /// Allocates an inode, preferring the group of directory `parent`.
    pub(super) fn alloc_inode(&mut self, parent: Ino) -> Result<Ino, FsError> {
        if self.sb.free_inodes == 0 {
            return Err(FsError::NoSpace);
        }
        let ipg = self.sb.inodes_per_group;
        let ngroups = self.groups.len();
        let first_group = ((parent.max(1) - 1) / ipg) as usize % ngroups;
        for k in 0..ngroups {
            let g = (first_group + k) % ngroups;
            if self.groups[g].free_inodes == 0 {
                continue;
            }
            // Inodes below first_ino are reserved even if their bit is clear.
            let group_first = g as u32 * ipg + 1;
            let start = self.sb.first_ino.saturating_sub(group_first) as usize;
            let bitmap_block = self.groups[g].inode_bitmap;
            let bitmap = self.cache.get(&mut self.dev, bitmap_block)?;
            let Some(bit) = find_clear(bitmap, start, ipg as usize) else { continue };
            self.cache.get_mut(&mut self.dev, bitmap_block)?[bit / 8] |= 1 << (bit % 8);
            self.groups[g].free_inodes -= 1;
            self.sb.free_inodes -= 1;
            return Ok(group_first + bit as u32);
        }
        Err(FsError::NoSpace)
    }

    /// Returns an inode to its group's bitmap.
    pub(super) fn free_inode(&mut self, ino: Ino, was_dir: bool) -> Result<(), FsError> {
        self.check_ino(ino)?;
        let g = ((ino - 1) / self.sb.inodes_per_group) as usize;
        let bit = ((ino - 1) % self.sb.inodes_per_group) as usize;
        let bitmap = self.cache.get_mut(&mut self.dev, self.groups[g].inode_bitmap)?;
        if bitmap[bit / 8] & (1 << (bit % 8)) == 0 {
            return Err(FsError::Corrupt("freeing a free inode"));
        }
        bitmap[bit / 8] &= !(1 << (bit % 8));
        self.groups[g].free_inodes += 1;
        self.sb.free_inodes += 1;
        if was_dir {
            self.groups[g].used_dirs = self.groups[g].used_dirs.saturating_sub(1);
        }
        Ok(())
    }

    /// Checks that a block number read from disk lies inside the filesystem.
    pub(super) fn check_block(&self, block: u32) -> Result<(), FsError> {
        if block < self.sb.first_data_block || block >= self.sb.blocks_count || block == 0 {
            return Err(FsError::Corrupt("block number out of range"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::find_clear;

    #[test]
    fn find_clear_skips_full_bytes_and_respects_bounds() {
        let bitmap = [0xFF, 0xFF, 0b1110_1111, 0x00];
        assert_eq!(find_clear(&bitmap, 0, 32), Some(20));
        assert_eq!(find_clear(&bitmap, 21, 32), Some(24));
        assert_eq!(find_clear(&bitmap, 0, 20), None);
        assert_eq!(find_clear(&bitmap, 3, 16), None);
    }
}
