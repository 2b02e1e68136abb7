//! In-kernel tests of the swap space, on the swap disk the host harness
//! attaches to every test boot (a fresh sparse image, serial `swap`): the
//! disk is found, and runs go to it over virtio in one request each. The
//! rest of the swap space and the swap pager are tested on the host, over
//! RAM disks (`pager/tests/swap*.rs`). Each test gives back every block it
//! takes, so the swap space is whole again for the next one.

use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use ktest::ktest;
use pager::swap::SECTORS_PER_PAGE;

use super::{SWAP_SERIAL, Space, swap};
use crate::dev::virtio_blk::{self, Disk};
use crate::kern::memory::PAGE_SIZE;

const PAGE: usize = PAGE_SIZE as usize;

fn space() -> &'static Space {
    swap().unwrap_or_else(|| panic!("no swap space: the test harness attaches a disk with serial \"swap\" (is SWAP_SIZE 0?)"))
}

/// The virtio disk under the swap space (its request counters).
fn disk() -> Disk {
    virtio_blk::by_serial(SWAP_SERIAL).expect("no swap disk")
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
    assert_eq!(sp.pages(), sp.disk().capacity() / SECTORS_PER_PAGE);
    assert_eq!(sp.disk().capacity(), disk().capacity, "the swap space is not on the swap disk");
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
    // No page-out on another CPU between the allocations, or among the
    // disk's writes counted.
    let _hold = crate::mm::pageout::hold_laundry();
    let sp = space();
    let before = sp.avail();
    let writes = disk().stats.writes.load(Ordering::Relaxed);
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
    let requests = disk().stats.writes.load(Ordering::Relaxed) - writes;
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
