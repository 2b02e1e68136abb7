//! Host tests of the blist: cases chosen by hand, then random operation
//! sequences against a model that is one `bool` per block.

use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;

use super::*;

fn checked(bl: &Blist) {
    assert_eq!(bl.check(), Ok(()), "{bl:?}");
}

/// The free blocks, one `bool` each.
fn free_map(bl: &Blist) -> Vec<bool> {
    (0..bl.blocks()).map(|b| bl.is_free(b)).collect()
}

#[test]
fn a_new_blist_is_all_free_whatever_its_size() {
    // Four levels are a quarter of a million blocks: too many for Miri,
    // which stops at three.
    let top = if cfg!(miri) { 64 * 64 * 2 + 3 } else { 64 * 64 * 64 + 3 };
    for n in [0, 1, 63, 64, 65, 127, 4095, 4096, 4097, top] {
        let bl = Blist::new(n).unwrap();
        assert_eq!(bl.avail(), n);
        assert_eq!(bl.largest_free_run(), n, "{n} blocks");
        assert!(!bl.is_free(n), "the block past the end is never free");
        checked(&bl);
    }
}

#[test]
fn too_large_or_too_much_memory_is_an_error() {
    assert_eq!(Blist::new(MAX_BLOCKS + 1).unwrap_err(), BlistError::TooLarge(MAX_BLOCKS + 1));
    // 2^48 blocks want 2^45 bytes of leaves: more than any test host has.
    // Miri backs an allocation with real memory at once and is killed for
    // it, rather than refusing it.
    if !cfg!(miri) {
        assert_eq!(Blist::new(MAX_BLOCKS).unwrap_err(), BlistError::NoMemory);
    }
}

#[test]
fn an_empty_device_allocates_nothing() {
    let mut bl = Blist::new(0).unwrap();
    assert_eq!(bl.alloc(1, 1), None);
    bl.free(0, 0);
    assert_eq!(bl.fill(0, 0), 0);
    checked(&bl);
}

#[test]
fn sequential_allocations_get_sequential_blocks() {
    let mut bl = Blist::new(1000).unwrap();
    assert_eq!(bl.alloc(8, 8), Some((0, 8)));
    assert_eq!(bl.alloc(8, 8), Some((8, 8)));
    // Freeing behind the cursor does not pull the next allocation back.
    bl.free(0, 8);
    assert_eq!(bl.alloc(4, 4), Some((16, 4)));
    assert_eq!(bl.cursor(), 20);
    checked(&bl);
}

#[test]
fn the_search_wraps_to_the_start() {
    let mut bl = Blist::new(200).unwrap();
    assert_eq!(bl.alloc(150, 150), Some((0, 150)));
    bl.free(10, 30);
    // 50 free past the cursor: 60 do not fit there, but 30 at block 10 do
    // not either, so the request fails; 30 wraps to block 10.
    assert_eq!(bl.alloc(60, 60), None);
    assert_eq!(bl.alloc(30, 30), Some((150, 30)));
    assert_eq!(bl.alloc(25, 25), Some((10, 25)));
    assert_eq!(bl.cursor(), 35);
    checked(&bl);
}

#[test]
fn the_cursor_wraps_at_the_end() {
    let mut bl = Blist::new(100).unwrap();
    assert_eq!(bl.alloc(100, 100), Some((0, 100)));
    assert_eq!(bl.cursor(), 0);
    bl.free(50, 1);
    assert_eq!(bl.alloc(1, 1), Some((50, 1)));
}

#[test]
fn a_range_request_takes_as_much_as_is_free() {
    let mut bl = Blist::new(1000).unwrap();
    assert_eq!(bl.alloc(1, 100), Some((0, 100)));
    bl.fill(130, 1);
    // 30 free blocks at 100, then an allocated one: take all 30.
    assert_eq!(bl.alloc(10, 64), Some((100, 30)));
    // At least 40: the 30-block hole is gone, the next fit is at 131.
    assert_eq!(bl.alloc(40, 45), Some((131, 45)));
    checked(&bl);
}

#[test]
fn runs_cross_leaf_and_node_boundaries() {
    let n = 64 * 64 * 3 + 17; // three level-1 nodes and a bit: three levels
    let mut bl = Blist::new(n).unwrap();
    bl.fill(0, 60);
    assert_eq!(bl.alloc(10, 10), Some((60, 10)), "across leaves 0 and 1");
    bl.fill(70, 4096 - 70 - 5);
    // 5 free at the end of node 0, then all of node 1: a run across nodes.
    assert_eq!(bl.alloc(5 + 4096, 5 + 4096), Some((4096 - 5, 4096 + 5)));
    assert_eq!(bl.alloc(4096 + 17, 4096 + 17), Some((8192, 4096 + 17)), "up to the last block");
    assert_eq!(bl.avail(), 0);
    assert_eq!(bl.largest_free_run(), 0);
    checked(&bl);
    bl.free(100, 5000);
    assert_eq!(bl.largest_free_run(), 5000);
    assert_eq!(bl.alloc(5000, 6000), Some((100, 5000)));
    checked(&bl);
}

#[test]
fn a_full_device_refuses_and_recovers() {
    let mut bl = Blist::new(300).unwrap();
    let mut got = Vec::new();
    while let Some(run) = bl.alloc(1, 7) {
        got.push(run);
    }
    assert_eq!(bl.avail(), 0);
    assert_eq!(got.iter().map(|r| r.1).sum::<u64>(), 300);
    for (start, n) in got {
        bl.free(start, n);
    }
    assert_eq!(bl.avail(), 300);
    assert_eq!(bl.largest_free_run(), 300);
    checked(&bl);
}

#[test]
fn fill_counts_what_it_takes() {
    let mut bl = Blist::new(130).unwrap();
    assert_eq!(bl.alloc(10, 10), Some((0, 10)));
    assert_eq!(bl.fill(5, 100), 95);
    assert_eq!(bl.fill(5, 100), 0);
    assert_eq!(bl.avail(), 25);
    checked(&bl);
}

#[test]
#[should_panic(expected = "blist: double free: block 70 of 65..75 is free already")]
fn double_free_panics() {
    let mut bl = Blist::new(200).unwrap();
    bl.alloc(70, 70).unwrap();
    bl.free(65, 10);
}

#[test]
#[should_panic(expected = "blist: free of 2 blocks at 199: past the end (200 blocks)")]
fn free_past_the_end_panics() {
    let mut bl = Blist::new(200).unwrap();
    bl.free(199, 2);
}

#[test]
#[should_panic(expected = "blist: fill of 1 blocks at 18446744073709551615: past the end")]
fn fill_past_the_end_panics() {
    let mut bl = Blist::new(200).unwrap();
    bl.fill(u64::MAX, 1);
}

#[test]
#[should_panic(expected = "blist: alloc of 0 to 4 blocks")]
fn alloc_of_nothing_panics() {
    Blist::new(200).unwrap().alloc(0, 4);
}

#[test]
fn check_finds_a_wrong_summary() {
    let mut bl = Blist::new(5000).unwrap();
    bl.leaves[3] = 0; // behind the summaries' back
    assert!(matches!(bl.check(), Err(Violation::Summary { level: 0, index: 3, .. })));
}

/// A device fragmented into 1-block holes: a request for 2 fails on the
/// root's summary alone, and the one larger hole made at the very end is
/// found.
#[test]
fn a_fragmented_device() {
    let n = 64 * 64 * 64;
    let mut bl = Blist::new(n).unwrap();
    for b in (0..n).step_by(2) {
        bl.fill(b, 1);
    }
    assert_eq!(bl.largest_free_run(), 1);
    assert_eq!(bl.alloc(2, 2), None);
    // Blocks n-5, n-3 and n-1 were free; now n-5..n are.
    bl.free(n - 4, 1);
    bl.free(n - 2, 1);
    assert_eq!(bl.largest_free_run(), 5);
    assert_eq!(bl.alloc(3, 3), Some((n - 5, 3)));
    assert_eq!(bl.largest_free_run(), 2);
    checked(&bl);
}

// ---- random sequences against a model ---------------------------------------

/// The model: one `bool` per block and a cursor, searched block by block.
struct Model {
    free: Vec<bool>,
    cursor: usize,
}

impl Model {
    fn find(&self, from: usize, count: usize) -> Option<usize> {
        let mut run = 0;
        for b in from..self.free.len() {
            run = if self.free[b] { run + 1 } else { 0 };
            if run == count {
                return Some(b + 1 - count);
            }
        }
        None
    }

    fn alloc(&mut self, count: usize, max: usize) -> Option<(u64, u64)> {
        let start = self.find(self.cursor, count).or_else(|| self.find(0, count))?;
        let got = self.free[start..].iter().take(max).take_while(|f| **f).count();
        self.free[start..start + got].fill(false);
        self.cursor = if start + got == self.free.len() { 0 } else { start + got };
        Some((start as u64, got as u64))
    }

    fn largest(&self) -> u64 {
        let (mut run, mut big) = (0, 0);
        for &f in &self.free {
            run = if f { run + 1 } else { 0 };
            big = big.max(run);
        }
        big
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// At least `count`, at most `count + extra`.
    Alloc { count: u64, extra: u64 },
    /// Part of a held run: which run, and where in it (fractions of 2^16).
    Free { run: usize, from: u16, to: u16 },
    /// `count` blocks at a fraction of the device.
    Fill { at: u16, count: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let count = prop_oneof![6 => 1u64..=64, 3 => 65u64..=300, 1 => 301u64..=5000];
    prop_oneof![
        5 => (count, prop_oneof![3 => Just(0u64), 1 => 1u64..=200]).prop_map(|(count, extra)| Op::Alloc { count, extra }),
        4 => (any::<usize>(), any::<u16>(), any::<u16>()).prop_map(|(run, from, to)| Op::Free { run, from, to }),
        1 => (any::<u16>(), 1u64..=150).prop_map(|(at, count)| Op::Fill { at, count }),
    ]
}

/// Device sizes: small, odd, around leaf and node boundaries, three levels.
fn device() -> impl Strategy<Value = u64> {
    // Under Miri, whose every check of the whole device costs a second,
    // the two smaller sizes only.
    if cfg!(miri) {
        prop_oneof![1u64..=200, 4000u64..=4200].boxed()
    } else {
        prop_oneof![1u64..=200, 4000u64..=4200, Just(64 * 64 * 2 + 1), 9000u64..=13000].boxed()
    }
}

fn run(blocks: u64, ops: Vec<Op>) {
    let mut bl = Blist::new(blocks).unwrap();
    let mut model = Model { free: vec![true; blocks as usize], cursor: 0 };
    // Runs we hold, as (start, count): what may be freed.
    let mut held: Vec<(u64, u64)> = Vec::new();
    for op in ops {
        match op {
            Op::Alloc { count, extra } => {
                let got = bl.alloc(count, count + extra);
                assert_eq!(got, model.alloc(count as usize, (count + extra) as usize), "alloc({count}, +{extra})");
                if let Some((start, n)) = got {
                    assert!(n >= count && n <= count + extra);
                    held.push((start, n));
                }
            }
            Op::Free { run, from, to } => {
                if held.is_empty() {
                    continue;
                }
                let (start, n) = held.swap_remove(run % held.len());
                let (a, b) = ((from.min(to) as u64 * n) >> 16, ((from.max(to) as u64 * n) >> 16) + 1);
                let b = b.min(n);
                bl.free(start + a, b - a);
                model.free[(start + a) as usize..(start + b) as usize].fill(true);
                // What was not freed is still held.
                held.extend([(start, a), (start + b, n - b)].into_iter().filter(|r| r.1 > 0));
            }
            Op::Fill { at, count } => {
                let start = (at as u64 * blocks) >> 16;
                let count = count.min(blocks - start);
                let before = model.free.clone();
                let filled = bl.fill(start, count);
                let range = start as usize..(start + count) as usize;
                assert_eq!(filled, before[range.clone()].iter().filter(|f| **f).count() as u64);
                model.free[range].fill(false);
                // The blocks the fill took are held from now on, run by run.
                let mut b = start;
                while b < start + count {
                    if before[b as usize] {
                        let n = (b..start + count).take_while(|&x| before[x as usize]).count() as u64;
                        held.push((b, n));
                        b += n;
                    } else {
                        b += 1;
                    }
                }
            }
        }
        assert_eq!(bl.avail(), model.free.iter().filter(|f| **f).count() as u64);
        assert_eq!(bl.largest_free_run(), model.largest());
        assert_eq!(bl.cursor(), model.cursor as u64);
        checked(&bl);
    }
    assert_eq!(free_map(&bl), model.free);
    // Everything held goes back: the device is whole again.
    for (start, n) in held {
        bl.free(start, n);
    }
    assert_eq!(bl.avail(), blocks);
    assert_eq!(bl.largest_free_run(), blocks);
    checked(&bl);
}

proptest! {
    #![proptest_config({
        // A few cases under Miri (which also keeps failures from files).
        let mut c = ProptestConfig { cases: if cfg!(miri) { 2 } else { 300 }, ..ProptestConfig::default() };
        if cfg!(miri) {
            c.failure_persistence = None;
        }
        c
    })]

    #[test]
    fn random_operations_match_the_model(blocks in device(), ops in proptest::collection::vec(op(), 1..if cfg!(miri) { 10 } else { 150 })) {
        run(blocks, ops);
    }
}
