//! A small write-back cache of metadata blocks: bitmaps, inode-table blocks,
//! indirect blocks and directory blocks.
//!
//! Why write-back: one file write can touch a bitmap, an indirect block and an
//! inode block several times; writing each change through would multiply the
//! device requests. Why small and simple: the kernel's page cache (the VM's
//! objects) holds file data, so this only needs to hold the metadata being
//! worked on. Lookup is a linear scan of at most [`CACHE_BLOCKS`] slots,
//! eviction takes the least recently used one (written first if dirty).
//!
//! A write-back error can surface in an unrelated call (the one whose miss
//! evicted the dirty block); the block stays dirty and `sync` reports it
//! again, so the error is never lost.
//!
//! File data never passes through here. A block that stops being metadata
//! (freed) must be [`BlockCache::forget`]-ed, or a later eviction would write
//! stale metadata over whatever the block holds next.

use alloc::vec::Vec;

use super::FsError;
use crate::block::{BlockDevice, SECTOR_SIZE};

/// How many blocks the cache holds (256 KiB with 4 KiB blocks).
pub(super) const CACHE_BLOCKS: usize = 64;

struct Slot {
    block: u32,
    data: Vec<u8>,
    dirty: bool,
    last_used: u64,
}

pub(super) struct BlockCache {
    slots: Vec<Slot>,
    block_size: usize,
    tick: u64,
}

/// Reads `buf.len()` bytes (whole blocks of `block_size`) from the device,
/// starting at filesystem block `block`.
pub(super) fn read_blocks<D: BlockDevice>(dev: &mut D, block_size: usize, block: u32, buf: &mut [u8]) -> Result<(), FsError> {
    let sector = u64::from(block) * (block_size / SECTOR_SIZE) as u64;
    dev.read(sector, buf).map_err(FsError::Io)
}

/// Writes `buf` (whole blocks of `block_size`) from filesystem block `block` on.
pub(super) fn write_blocks<D: BlockDevice>(dev: &mut D, block_size: usize, block: u32, buf: &[u8]) -> Result<(), FsError> {
    let sector = u64::from(block) * (block_size / SECTOR_SIZE) as u64;
    dev.write(sector, buf).map_err(FsError::Io)
}

impl BlockCache {
    /// An empty cache, with room for every slot it may hold: the slot
    /// array is made once, at mount, and never grows afterwards (a file
    /// operation that fills one more slot allocates only that block).
    pub fn new(block_size: usize) -> BlockCache {
        BlockCache { slots: Vec::with_capacity(CACHE_BLOCKS), block_size, tick: 0 }
    }

    /// The block's contents, read from the device on a miss.
    pub fn get<D: BlockDevice>(&mut self, dev: &mut D, block: u32) -> Result<&[u8], FsError> {
        let i = self.slot(dev, block, true)?;
        Ok(&self.slots[i].data)
    }

    /// The block's contents to modify; the block becomes dirty.
    pub fn get_mut<D: BlockDevice>(&mut self, dev: &mut D, block: u32) -> Result<&mut [u8], FsError> {
        let i = self.slot(dev, block, true)?;
        self.slots[i].dirty = true;
        Ok(&mut self.slots[i].data)
    }

    /// A block just allocated as metadata: zero-filled and dirty, not read.
    pub fn get_zeroed<D: BlockDevice>(&mut self, dev: &mut D, block: u32) -> Result<&mut [u8], FsError> {
        let i = self.slot(dev, block, false)?;
        let slot = &mut self.slots[i];
        slot.data.fill(0);
        slot.dirty = true;
        Ok(&mut slot.data)
    }

    /// Drops the block without writing it (it was freed).
    pub fn forget(&mut self, block: u32) {
        self.slots.retain(|s| s.block != block);
    }

    /// Drops every clean block (tests use it to make the next access go to
    /// the device).
    pub fn drop_clean(&mut self) {
        self.slots.retain(|s| s.dirty);
    }

    /// Writes every dirty block, in block order. On an error the blocks not
    /// yet written stay dirty, so a later flush retries them.
    pub fn flush<D: BlockDevice>(&mut self, dev: &mut D) -> Result<(), FsError> {
        let mut order: Vec<usize> = (0..self.slots.len()).filter(|&i| self.slots[i].dirty).collect();
        order.sort_by_key(|&i| self.slots[i].block);
        for i in order {
            let slot = &mut self.slots[i];
            write_blocks(dev, self.block_size, slot.block, &slot.data)?;
            slot.dirty = false;
        }
        Ok(())
    }

    /// Index of the slot holding `block`, filling one (from the device if
    /// `read`) on a miss.
    fn slot<D: BlockDevice>(&mut self, dev: &mut D, block: u32, read: bool) -> Result<usize, FsError> {
        self.tick += 1;
        if let Some(i) = self.slots.iter().position(|s| s.block == block) {
            self.slots[i].last_used = self.tick;
            return Ok(i);
        }
        let i = self.free_slot(dev)?;
        let slot = &mut self.slots[i];
        if read {
            read_blocks(dev, self.block_size, block, &mut slot.data)?;
        }
        // Only now does the slot name the block: a failed read leaves it
        // holding nothing (block 0 is never metadata).
        slot.block = block;
        slot.last_used = self.tick;
        Ok(i)
    }

    /// A slot that may be overwritten: a new one while the cache is not full,
    /// else the least recently used, written back first if dirty.
    fn free_slot<D: BlockDevice>(&mut self, dev: &mut D) -> Result<usize, FsError> {
        if self.slots.len() < CACHE_BLOCKS {
            let mut data = Vec::new();
            data.try_reserve_exact(self.block_size).map_err(|_| FsError::NoMemory)?;
            data.resize(self.block_size, 0);
            self.slots.push(Slot { block: 0, data, dirty: false, last_used: 0 });
            return Ok(self.slots.len() - 1);
        }
        let i = (0..self.slots.len()).min_by_key(|&i| self.slots[i].last_used).unwrap_or(0);
        let slot = &mut self.slots[i];
        if slot.dirty {
            write_blocks(dev, self.block_size, slot.block, &slot.data)?;
            slot.dirty = false;
        }
        slot.block = 0;
        Ok(i)
    }
}
