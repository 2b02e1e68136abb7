//! In-kernel tests of the swap space, on the swap disk the host harness
//! attaches to every test boot (a fresh sparse image, serial `swap`). Each
//! test gives back every block it takes, so the swap space is whole again
//! for the next one.

use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use ktest::ktest;
use pager::block::BlockError;
use vm::failpoint::{Action, BLK_READ, BLK_WRITE};

use super::{SwapError, SwapSpace, swap};
use crate::kern::memory::PAGE_SIZE;

const PAGE: usize = PAGE_SIZE as usize;

fn space() -> &'static SwapSpace {
    swap().unwrap_or_else(|| panic!("no swap space: the test harness attaches a disk with serial \"swap\" (is SWAP_SIZE 0?)"))
}

/// Byte `i` of swap block `block` as the tests write it, `salt` telling
/// one write from another.
fn pattern(block: u64, i: usize, salt: u8) -> u8 {
    (block as usize).wrapping_mul(131).wrapping_add(i).wrapping_add(i >> 8) as u8 ^ salt
}

fn fill(block: u64, pages: u64, salt: u8) -> Vec<u8> {
    (0..pages as usize * PAGE).map(|k| pattern(block + (k / PAGE) as u64, k % PAGE, salt)).collect()
}

/// The swap disk is found, whole, and all of it is free between tests.
#[ktest]
fn the_swap_disk_is_found() {
    let sp = space();
    assert_eq!(sp.pages(), sp.disk.capacity / super::SECTORS_PER_PAGE);
    assert!(sp.pages() >= 1024, "a swap disk of {} pages", sp.pages());
    assert_eq!(sp.avail(), sp.pages(), "blocks left allocated by an earlier test");
    assert_eq!(sp.largest_free_run(), sp.pages());
}

/// Runs of several sizes (one page, across blist leaves, larger than a
/// leaf) are written, each in one request, then all read back: each run
/// holds what was written to it and nothing of its neighbours. Freed, the
/// swap space is as it was.
#[ktest]
fn runs_are_written_and_read_back() {
    let sp = space();
    let before = sp.avail();
    let writes = sp.disk.stats.writes.load(Ordering::Relaxed);
    let mut runs = Vec::new();
    for (k, &n) in [1u64, 7, 64, 100, 3].iter().enumerate() {
        let (block, got) = sp.alloc(n, n).expect("the swap space is full");
        assert_eq!(got, n);
        if let Some(&(prev, prev_n, _)) = runs.last() {
            assert_eq!(block, prev + prev_n, "consecutive allocations are consecutive on the disk");
        }
        sp.write_pages(block, &fill(block, n, k as u8)).unwrap();
        runs.push((block, n, k as u8));
    }
    let requests = sp.disk.stats.writes.load(Ordering::Relaxed) - writes;
    assert_eq!(requests, runs.len() as u64, "one write request per run");
    assert_eq!(sp.avail(), before - 175);
    for &(block, n, salt) in &runs {
        let mut back = vec![0u8; n as usize * PAGE];
        sp.read_pages(block, &mut back).unwrap();
        assert!(back == fill(block, n, salt), "run of {n} at block {block} reads back wrong");
    }
    for (block, n, _) in runs {
        sp.free(block, n);
    }
    assert_eq!(sp.avail(), before);
}

/// The last page of the device is usable; a transfer past it or of part
/// of a page is refused before it reaches the disk.
#[ktest]
fn transfers_are_checked() {
    let sp = space();
    let last = sp.pages() - 1;
    let data = fill(last, 1, 0x5A);
    sp.write_pages(last, &data).unwrap();
    let mut back = vec![0u8; PAGE];
    sp.read_pages(last, &mut back).unwrap();
    assert!(back == data);
    let mut two = vec![0u8; 2 * PAGE];
    assert_eq!(sp.read_pages(last, &mut two), Err(SwapError::OutOfRange { block: last, count: 2, pages: sp.pages() }));
    assert!(matches!(sp.write_pages(u64::MAX, &data), Err(SwapError::OutOfRange { .. })));
    assert_eq!(sp.write_pages(0, &data[..512]), Err(SwapError::BadLength(512)));
}

/// A write the disk fails (the `blk.write` fail point) comes back as an
/// error, and the blocks can be written again and freed; the same for a
/// read.
#[ktest]
fn disk_errors_come_back_as_errors() {
    let sp = space();
    let before = sp.avail();
    let (block, n) = sp.alloc(4, 4).unwrap();
    let data = fill(block, n, 0xC3);
    BLK_WRITE.set(Action::Nth(1));
    let failed = sp.write_pages(block, &data);
    BLK_WRITE.set(Action::Off);
    assert_eq!(failed, Err(SwapError::Io(BlockError::Io)));
    sp.write_pages(block, &data).unwrap();
    let mut back = vec![0u8; data.len()];
    BLK_READ.set(Action::Nth(1));
    let failed = sp.read_pages(block, &mut back);
    BLK_READ.set(Action::Off);
    assert_eq!(failed, Err(SwapError::Io(BlockError::Io)));
    sp.read_pages(block, &mut back).unwrap();
    assert!(back == data);
    sp.free(block, n);
    assert_eq!(sp.avail(), before);
}
