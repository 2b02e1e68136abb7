//! The swap-space allocator: a radix tree of bitmaps over a device's blocks,
//! in the manner of FreeBSD's blist (`sys/kern/subr_blist.c`).
//!
//! The swap pager asks for runs of blocks (a block is a page-sized slot on
//! the swap device) so that a cluster of pages goes out in one write, and
//! gives them back one page at a time as pages are dirtied or freed. Runs
//! must be found quickly on a large, fragmented device; the bookkeeping
//! must be small (a 256 MiB device has 65,536 blocks) and allocated once.
//!
//! ## The tree
//!
//! ```text
//!   level 2 (root)                 [ S ]                      covers 64^3 blocks
//!                          /        |         \
//!   level 1             [ S ]     [ S ]  ...  [ S ]           64^2 blocks each
//!                       / | \
//!   level 0           [S][S]..[S]  ...                        64 blocks each
//!                      |  |    |
//!   leaves           u64 u64  u64  ...                        bit b of leaf i:
//!                                                             block 64*i + b is free
//! ```
//!
//! A leaf is one `u64` bitmap of 64 blocks, a set bit meaning free (as in
//! FreeBSD). Every leaf and every interior node has a [`Summary`] of its
//! subtree: the free run at its start (`head`), the free run at its end
//! (`tail`) and the longest free run anywhere in it (`big`). A node's
//! summary follows from its 64 children's: a run can cross from one child
//! into the next, which is what `head` and `tail` are for. The summaries are
//! stored level by level (`levels[0]` for the leaves, up to the root), so a
//! node's children are found by index, as in a heap, with no pointers.
//!
//! A search for `count` free blocks walks down from the root and skips every
//! subtree whose `big` is smaller (in particular, every full subtree) unless
//! a run may reach into it from the left: it carries along the free run that
//! ends where the subtree begins, and a subtree whose `head` completes that
//! run ends the search at once. Allocating or freeing a run touches its
//! leaves and recomputes the summaries above them, 64 children each.
//!
//! ## Where a search starts
//!
//! As in FreeBSD, allocation is first fit from a cursor that moves to the
//! end of each allocation, and the search starts over from block 0 when
//! nothing fits past the cursor. Page-outs that follow one another thus get
//! blocks that follow one another on the device (long sequential writes,
//! and read-back in clusters), and the blocks just freed behind the cursor
//! are not reused at once. A caller may ask for a range, `count..=max`
//! blocks: the first run of at least `count` is taken, as much of it as
//! `max` allows (FreeBSD's `blist_alloc(bl, &count, maxcount)`).
//!
//! ## Differences from FreeBSD, and why
//!
//! - FreeBSD keeps in each interior node a bitmap of the children that have
//!   free blocks and a *hint*, an upper bound on the largest run that could
//!   be allocated there, lowered when a search fails and raised by frees.
//!   Here the summaries are exact, which costs a recomputation of 64
//!   children per level on each change but makes [`Blist::largest_free_run`]
//!   exact and cheap and lets [`Blist::check`] verify the whole tree.
//! - FreeBSD lays the tree out in one array with the subtrees in order, and
//!   `blist_create` returns every block allocated; here the levels are
//!   separate arrays and [`Blist::new`] returns every block free. Blocks
//!   that must not be used are taken with [`Blist::fill`].
//! - There is no limit on the size of one allocation: a run may span any
//!   number of leaves and interior nodes.
//!
//! Blocks past the end of the device, in the last leaf and in missing
//! subtrees, count as allocated forever, so no search needs to know where
//! the device ends.
//!
//! ## Locking
//!
//! None here: a `Blist` is plain data, and the owner (the kernel's swap
//! space) keeps it behind its lock. No operation allocates memory after
//! [`Blist::new`].

use alloc::vec::Vec;

/// Blocks per leaf: one bit each in a `u64`.
pub const LEAF_BLOCKS: u64 = 64;
/// Children per interior node: as many as a leaf has blocks, so a node at
/// level `h` covers `64^(h + 1)` blocks.
const RADIX: usize = 64;
/// The largest device a blist manages: 2^48 blocks (an exbibyte of 4 KiB
/// pages), so that a node's span is a `u64` at every level.
pub const MAX_BLOCKS: u64 = 1 << 48;

/// Why [`Blist::new`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlistError {
    /// The bitmaps and summaries could not be allocated.
    NoMemory,
    /// More blocks than [`MAX_BLOCKS`].
    TooLarge(u64),
}

/// The free runs of one subtree, in blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Free blocks at its start.
    pub head: u64,
    /// Free blocks at its end.
    pub tail: u64,
    /// The longest run of free blocks in it.
    pub big: u64,
}

/// Something [`Blist::check`] found wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A block past the end of the device is marked free.
    FreePastEnd { leaf: usize },
    /// A stored summary is not what the subtree below holds.
    Summary { level: usize, index: usize, stored: Summary, actual: Summary },
    /// `avail` is not the number of free bits.
    Avail { stored: u64, counted: u64 },
    /// The cursor is past the end of the device.
    Cursor { cursor: u64, blocks: u64 },
}

/// An allocator of runs of blocks `0..blocks`. See the module docs.
pub struct Blist {
    /// Blocks managed.
    blocks: u64,
    /// Free blocks.
    avail: u64,
    /// Where the next search starts; at most `blocks`.
    cursor: u64,
    /// Bit `b` of `leaves[i]` set: block `64 * i + b` is free. Bits past
    /// `blocks` are always clear.
    leaves: Vec<u64>,
    /// `levels[0][i]` summarizes `leaves[i]`; `levels[h][i]` the node over
    /// `levels[h - 1][64 * i .. 64 * i + 64]` (fewer at the end of a level:
    /// the missing children count as allocated). The last level holds one
    /// summary, the root's.
    levels: Vec<Vec<Summary>>,
}

/// What a search knows after passing a subtree.
enum Scan {
    /// A run of enough free blocks starts at this block.
    Found(u64),
    /// Not yet: this many free blocks (at or past the search's start) end
    /// where the subtree ends.
    Carry(u64),
}

/// Blocks covered by a node at `level` (0: a leaf).
fn span(level: usize) -> u64 {
    LEAF_BLOCKS.pow(level as u32 + 1)
}

/// A vector of `len` copies of `value`, or `NoMemory`.
fn try_vec<T: Clone>(len: usize, value: T) -> Result<Vec<T>, BlistError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| BlistError::NoMemory)?;
    v.resize(len, value);
    Ok(v)
}

/// The bits of a leaf that hold blocks `lo..hi` of it (`lo < hi <= 64`).
fn bit_range(lo: u64, hi: u64) -> u64 {
    let ones = if hi - lo == 64 { u64::MAX } else { (1 << (hi - lo)) - 1 };
    ones << lo
}

/// The bits of the last of `nleaves` leaves that hold some of `blocks`.
fn last_leaf_bits(blocks: u64, nleaves: usize) -> u64 {
    let in_last = blocks - (nleaves as u64 - 1) * LEAF_BLOCKS;
    if in_last == 0 { 0 } else { bit_range(0, in_last) }
}

/// The leaves that blocks `start..start + count` lie in, each with the bits
/// of those blocks.
fn leaf_bits(start: u64, count: u64) -> impl Iterator<Item = (usize, u64)> {
    let end = start + count;
    let first = start / LEAF_BLOCKS;
    let last = if count == 0 { first } else { (end - 1) / LEAF_BLOCKS + 1 };
    (first..last).map(move |i| {
        let base = i * LEAF_BLOCKS;
        let lo = start.max(base) - base;
        let hi = end.min(base + LEAF_BLOCKS) - base;
        (i as usize, bit_range(lo, hi))
    })
}

/// The summary of one leaf's bitmap.
fn leaf_summary(bits: u64) -> Summary {
    // `x &= x << 1` shortens every run of ones by one (its lowest bit goes),
    // so the number of rounds until nothing is left is the longest run.
    let mut big = 0;
    let mut x = bits;
    while x != 0 {
        x &= x << 1;
        big += 1;
    }
    Summary { head: bits.trailing_ones() as u64, tail: bits.leading_ones() as u64, big }
}

/// The summary of a node from its children's, each covering `child_span`
/// blocks; children missing from the end of `children` are allocated.
fn node_summary(children: &[Summary], child_span: u64) -> Summary {
    let mut head = 0;
    let mut all_free = true; // every child so far is wholly free
    let mut big = 0;
    let mut run = 0; // free blocks ending where the current child begins
    for c in children {
        if c.head == child_span {
            run += child_span;
            if all_free {
                head += child_span;
            }
        } else {
            if all_free {
                head += c.head;
                all_free = false;
            }
            big = big.max(run + c.head).max(c.big);
            run = c.tail;
        }
    }
    big = big.max(run);
    // A partial node ends in missing (allocated) children.
    let tail = if children.len() == RADIX { run } else { 0 };
    Summary { head, tail, big }
}

impl Blist {
    /// A blist of `blocks` blocks, all free. Fails if the tree cannot be
    /// allocated (it takes about 4 bits per block).
    pub fn new(blocks: u64) -> Result<Blist, BlistError> {
        if blocks > MAX_BLOCKS {
            return Err(BlistError::TooLarge(blocks));
        }
        // At least one leaf, so that an empty device still has a root.
        let nleaves = blocks.div_ceil(LEAF_BLOCKS).max(1) as usize;
        let mut leaves = try_vec(nleaves, u64::MAX)?;
        leaves[nleaves - 1] = last_leaf_bits(blocks, nleaves);

        let mut levels = Vec::new();
        let mut len = nleaves;
        loop {
            levels.try_reserve(1).map_err(|_| BlistError::NoMemory)?;
            levels.push(try_vec(len, Summary::default())?);
            if len == 1 {
                break;
            }
            len = len.div_ceil(RADIX);
        }
        let mut bl = Blist { blocks, avail: blocks, cursor: 0, leaves, levels };
        bl.update(0, nleaves - 1);
        Ok(bl)
    }

    /// Blocks managed.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Free blocks.
    pub fn avail(&self) -> u64 {
        self.avail
    }

    /// The longest run of free blocks: the most one [`Blist::alloc`] can get.
    pub fn largest_free_run(&self) -> u64 {
        self.root().big
    }

    /// Where the next search starts.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Is `block` free? (Blocks past the end are not.)
    pub fn is_free(&self, block: u64) -> bool {
        block < self.blocks && self.leaves[(block / LEAF_BLOCKS) as usize] & (1 << (block % LEAF_BLOCKS)) != 0
    }

    fn root(&self) -> Summary {
        self.levels[self.levels.len() - 1][0]
    }

    /// Allocates a run of at least `count` and at most `max` contiguous
    /// blocks: the first run of `count` free blocks at or after the cursor
    /// (else from block 0), extended up to `max` blocks while they are free.
    /// Returns `(first block, blocks got)`, or None when no `count` free
    /// blocks are contiguous. Moves the cursor to the end of the run.
    ///
    /// Panics unless `1 <= count <= max` (a caller's bug).
    pub fn alloc(&mut self, count: u64, max: u64) -> Option<(u64, u64)> {
        assert!(count >= 1 && count <= max, "blist: alloc of {count} to {max} blocks");
        if count > self.largest_free_run() {
            return None;
        }
        let start = self.find(self.cursor, count).or_else(|| self.find(0, count))?;
        let got = self.free_run_at(start, max);
        for (i, bits) in leaf_bits(start, got) {
            self.leaves[i] &= !bits;
        }
        self.update_range(start, got);
        self.avail -= got;
        self.cursor = if start + got == self.blocks { 0 } else { start + got };
        Some((start, got))
    }

    /// Frees blocks `start..start + count`.
    ///
    /// Panics if a block there is free already or past the end: the caller
    /// would be giving back swap it does not own, a kernel bug.
    pub fn free(&mut self, start: u64, count: u64) {
        self.check_range("free", start, count);
        for (i, bits) in leaf_bits(start, count) {
            let already = self.leaves[i] & bits;
            if already != 0 {
                let block = i as u64 * LEAF_BLOCKS + already.trailing_zeros() as u64;
                panic!("blist: double free: block {block} of {start}..{} is free already", start + count);
            }
        }
        for (i, bits) in leaf_bits(start, count) {
            self.leaves[i] |= bits;
        }
        self.update_range(start, count);
        self.avail += count;
    }

    /// Marks blocks `start..start + count` allocated, whether or not they
    /// were; returns how many were free (FreeBSD's `blist_fill`). For blocks
    /// that must not be used, and for taking a device out of use.
    ///
    /// Panics if the range reaches past the end.
    pub fn fill(&mut self, start: u64, count: u64) -> u64 {
        self.check_range("fill", start, count);
        let mut filled = 0;
        for (i, bits) in leaf_bits(start, count) {
            filled += (self.leaves[i] & bits).count_ones() as u64;
            self.leaves[i] &= !bits;
        }
        self.update_range(start, count);
        self.avail -= filled;
        filled
    }

    fn check_range(&self, what: &str, start: u64, count: u64) {
        match start.checked_add(count) {
            Some(end) if end <= self.blocks => {}
            _ => panic!("blist: {what} of {count} blocks at {start}: past the end ({} blocks)", self.blocks),
        }
    }

    /// The free blocks from `start` on, as many as there are up to `max`.
    fn free_run_at(&self, start: u64, max: u64) -> u64 {
        let mut got = 0;
        let mut block = start;
        while got < max && block < self.blocks {
            let bit = block % LEAF_BLOCKS;
            let ones = (self.leaves[(block / LEAF_BLOCKS) as usize] >> bit).trailing_ones() as u64;
            got += ones;
            block += ones;
            if bit + ones < LEAF_BLOCKS {
                break;
            }
        }
        got.min(max)
    }

    /// The first block at or after `from` that starts `count` free blocks.
    fn find(&self, from: u64, count: u64) -> Option<u64> {
        match self.scan(self.levels.len() - 1, 0, from, count, 0) {
            Scan::Found(start) => Some(start),
            Scan::Carry(_) => None,
        }
    }

    /// Searches node `index` of `level` for the first run of `count` free
    /// blocks at or after `from`, given that `carry` free blocks end where
    /// the node begins.
    fn scan(&self, level: usize, index: usize, from: u64, count: u64, carry: u64) -> Scan {
        let span = span(level);
        let base = index as u64 * span;
        let Some(&s) = self.levels[level].get(index) else {
            return Scan::Carry(0); // past the device's end: allocated
        };
        if base + span <= from {
            return Scan::Carry(0); // wholly before the search's start
        }
        if base >= from {
            // Wholly in the search: the summary decides what to skip.
            if carry + s.head >= count {
                return Scan::Found(base - carry);
            }
            if s.head == span {
                return Scan::Carry(carry + span);
            }
            if s.big < count {
                return Scan::Carry(s.tail);
            }
        }
        if level == 0 {
            return self.scan_leaf(index, from, count, carry);
        }
        let mut carry = carry;
        for child in index * RADIX..(index + 1) * RADIX {
            match self.scan(level - 1, child, from, count, carry) {
                Scan::Found(start) => return Scan::Found(start),
                Scan::Carry(c) => carry = c,
            }
        }
        Scan::Carry(carry)
    }

    /// [`Blist::scan`] inside leaf `index`, run by run.
    fn scan_leaf(&self, index: usize, from: u64, count: u64, carry: u64) -> Scan {
        let base = index as u64 * LEAF_BLOCKS;
        let mut bits = self.leaves[index];
        if from > base {
            bits &= !bit_range(0, from - base); // blocks before `from` do not count
        }
        let mut pos = 0; // the leaf's bits below `pos` have been looked at
        let mut before = carry; // free blocks ending at `pos`
        loop {
            let ones = (bits >> pos).trailing_ones() as u64;
            if before + ones >= count {
                return Scan::Found(base + pos - before);
            }
            if pos + ones == LEAF_BLOCKS {
                return Scan::Carry(before + ones);
            }
            // Past the free run, then past the allocated one after it.
            pos += ones;
            pos += (bits >> pos).trailing_zeros() as u64;
            before = 0;
            if pos >= LEAF_BLOCKS {
                return Scan::Carry(0);
            }
        }
    }

    /// Recomputes the summaries above blocks `start..start + count`.
    fn update_range(&mut self, start: u64, count: u64) {
        if count > 0 {
            self.update((start / LEAF_BLOCKS) as usize, ((start + count - 1) / LEAF_BLOCKS) as usize);
        }
    }

    /// Recomputes the summaries of leaves `first..=last` and of every node
    /// above them.
    fn update(&mut self, first: usize, last: usize) {
        for i in first..=last {
            self.levels[0][i] = leaf_summary(self.leaves[i]);
        }
        let (mut first, mut last) = (first, last);
        for h in 1..self.levels.len() {
            first /= RADIX;
            last /= RADIX;
            let (below, here) = self.levels.split_at_mut(h);
            let children = &below[h - 1];
            for i in first..=last {
                let kids = &children[i * RADIX..children.len().min((i + 1) * RADIX)];
                here[0][i] = node_summary(kids, span(h - 1));
            }
        }
    }

    /// Checks the whole structure: no free block past the end, every
    /// summary right, `avail` right, the cursor in range.
    pub fn check(&self) -> Result<(), Violation> {
        let nleaves = self.leaves.len();
        if self.leaves[nleaves - 1] & !last_leaf_bits(self.blocks, nleaves) != 0 {
            return Err(Violation::FreePastEnd { leaf: nleaves - 1 });
        }
        for (i, &bits) in self.leaves.iter().enumerate() {
            let actual = leaf_summary(bits);
            if self.levels[0][i] != actual {
                return Err(Violation::Summary { level: 0, index: i, stored: self.levels[0][i], actual });
            }
        }
        for h in 1..self.levels.len() {
            let children = &self.levels[h - 1];
            for (i, &stored) in self.levels[h].iter().enumerate() {
                let actual = node_summary(&children[i * RADIX..children.len().min((i + 1) * RADIX)], span(h - 1));
                if stored != actual {
                    return Err(Violation::Summary { level: h, index: i, stored, actual });
                }
            }
        }
        let counted = self.leaves.iter().map(|b| b.count_ones() as u64).sum();
        if counted != self.avail {
            return Err(Violation::Avail { stored: self.avail, counted });
        }
        if self.cursor > self.blocks {
            return Err(Violation::Cursor { cursor: self.cursor, blocks: self.blocks });
        }
        Ok(())
    }
}

impl core::fmt::Debug for Blist {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Blist")
            .field("blocks", &self.blocks)
            .field("avail", &self.avail)
            .field("largest_free_run", &self.largest_free_run())
            .field("cursor", &self.cursor)
            .field("levels", &self.levels.len())
            .finish()
    }
}

#[cfg(test)]
mod tests;
