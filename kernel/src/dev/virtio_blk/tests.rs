//! In-kernel tests of the virtio-blk driver, on the test disk the host
//! harness attaches to every test boot (`tests/src/lib.rs`): serial
//! [`TEST_DISK`], 16 MiB, byte `i` of sector `n` given by [`pattern`]. QEMU
//! runs it with `snapshot=on`, so writes never reach the file; tests that
//! write put the pattern back, since later tests in the same boot read it.

use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use ktest::ktest;
use pager::block::{BlockDevice, BlockError, SECTOR_SIZE};
use vm::failpoint::{Action, BLK_READ, BLK_WRITE};
use vm::phys::AllocFlags;

use super::{Disk, FORCE_BOUNCE, by_serial};
use crate::arch::direct_map::phys_to_virt;
use crate::kern::memory::PAGE_SIZE;
use crate::kern::{sched, time};

/// Serial number of the pattern disk of test boots.
const TEST_DISK: &str = "ktest-pattern";
/// Its size in sectors (16 MiB).
const TEST_SECTORS: u64 = 32768;

/// Byte `i` of sector `n` of the test disk: the sector number (little
/// endian) in the first 8 bytes, then a sequence that differs per sector.
/// `tests::disk_pattern` on the host writes the same.
fn pattern(n: u64, i: usize) -> u8 {
    if i < 8 { (n >> (8 * i)) as u8 } else { (n as usize).wrapping_mul(31).wrapping_add(i) as u8 }
}

/// The first byte of `buf` (sectors from `first`) that is not the pattern.
fn mismatch(first: u64, buf: &[u8]) -> Option<(u64, usize, u8)> {
    buf.chunks(SECTOR_SIZE).enumerate().find_map(|(k, s)| {
        let n = first + k as u64;
        s.iter().enumerate().find(|&(i, &b)| b != pattern(n, i)).map(|(i, &b)| (n, i, b))
    })
}

fn test_disk() -> Disk {
    by_serial(TEST_DISK).unwrap_or_else(|| {
        panic!(
            "no disk with serial {TEST_DISK:?} (the test harness attaches one); disks: {:?}",
            super::disks().iter().map(|d| d.serial.clone()).collect::<Vec<_>>()
        )
    })
}

/// A physically contiguous, page-aligned buffer from the page allocator,
/// freed on drop.
struct DmaBuf {
    first: &'static vm::page::Page,
    pages: usize,
}

impl DmaBuf {
    fn new(pages: usize) -> DmaBuf {
        let first = vm::global()
            .alloc_contig(pages, PAGE_SIZE, 0, 0, u64::MAX, AllocFlags::UNMANAGED)
            .expect("no contiguous pages for the test buffer");
        DmaBuf { first, pages }
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the run is ours until drop, and the direct map covers it.
        unsafe { core::slice::from_raw_parts_mut(phys_to_virt(self.first.phys()) as *mut u8, self.pages * PAGE_SIZE as usize) }
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        vm::global().free_contig(self.first, self.pages);
    }
}

/// The test disk is found, with its size, writable, with an interrupt.
#[ktest]
fn the_test_disk_is_found() {
    let d = test_disk();
    assert_eq!(d.capacity(), TEST_SECTORS);
    assert!(!d.readonly);
    assert!(d.irq().is_some(), "the test disk has no interrupt: requests are polled");
}

/// Single sectors anywhere, and many sectors at once, read as the pattern.
#[ktest]
fn reads_match_the_pattern() {
    let d = test_disk();
    let mut one = vec![0u8; SECTOR_SIZE];
    for n in [0, 1, 12345, TEST_SECTORS - 1] {
        d.read(n, &mut one).unwrap();
        assert_eq!(mismatch(n, &one), None, "sector {n}");
    }
    // 64 KiB into the heap.
    let mut many = vec![0u8; 128 * SECTOR_SIZE];
    d.read(1000, &mut many).unwrap();
    assert_eq!(mismatch(1000, &many), None);
    // An odd count into page-aligned memory, ending at the last sector.
    let mut buf = DmaBuf::new(64);
    let b = &mut buf.bytes()[..201 * SECTOR_SIZE];
    d.read(TEST_SECTORS - 201, b).unwrap();
    assert_eq!(mismatch(TEST_SECTORS - 201, b), None);
}

/// Requests that do not fit are refused before they reach the device.
#[ktest]
fn bad_requests_are_refused() {
    let d = test_disk();
    let mut b = vec![0u8; 2 * SECTOR_SIZE];
    assert!(matches!(d.read(TEST_SECTORS - 1, &mut b), Err(BlockError::OutOfRange { .. })));
    assert_eq!(d.read(0, &mut b[..100]), Err(BlockError::BadLength(100)));
    assert!(d.read(0, &mut b[..0]).is_ok(), "an empty request does nothing");
}

/// Written sectors read back, through a heap buffer at an odd address; the
/// pattern is put back afterwards.
#[ktest]
fn writes_read_back() {
    let d = test_disk();
    const AT: u64 = 30000;
    const N: usize = 72;
    let mut storage = vec![0u8; N * SECTOR_SIZE + 1];
    let data = &mut storage[1..]; // not even 2-byte aligned
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8 ^ 0x5A;
    }
    d.write(AT, data).unwrap();
    let mut back = vec![0u8; N * SECTOR_SIZE];
    d.read(AT, &mut back).unwrap();
    assert!(back == *data, "read back differs from what was written");
    // Restore.
    let orig: Vec<u8> = (0..N * SECTOR_SIZE).map(|k| pattern(AT + (k / SECTOR_SIZE) as u64, k % SECTOR_SIZE)).collect();
    d.write(AT, &orig).unwrap();
    d.read(AT, &mut back).unwrap();
    assert_eq!(mismatch(AT, &back), None);
}

/// Buffers the device cannot be handed directly go through bounce buffers,
/// several per request when they are large.
#[ktest]
fn bounce_buffers_carry_requests() {
    let d = test_disk();
    let before = d.stats.bounced.load(Ordering::Relaxed);
    FORCE_BOUNCE.store(true, Ordering::Relaxed);
    let mut b = vec![0u8; 300 * SECTOR_SIZE];
    let r = d.read(2000, &mut b);
    let w = d.write(2000, &b);
    FORCE_BOUNCE.store(false, Ordering::Relaxed);
    r.unwrap();
    w.unwrap();
    assert_eq!(mismatch(2000, &b), None);
    // 300 sectors in 128-sector pieces: three each way.
    assert_eq!(d.stats.bounced.load(Ordering::Relaxed) - before, 6);
}

/// Requests complete in the interrupt handler, not by polling.
#[ktest]
fn completions_come_by_interrupt() {
    let d = test_disk();
    let irq = d.stats.irq_completions.load(Ordering::Relaxed);
    let polled = d.stats.polled_completions.load(Ordering::Relaxed);
    let interrupts = d.stats.interrupts.load(Ordering::Relaxed);
    let mut b = vec![0u8; 8 * SECTOR_SIZE];
    const N: u64 = 20;
    for k in 0..N {
        d.read(k * 100, &mut b).unwrap();
        assert_eq!(mismatch(k * 100, &b), None);
    }
    let irq = d.stats.irq_completions.load(Ordering::Relaxed) - irq;
    let polled = d.stats.polled_completions.load(Ordering::Relaxed) - polled;
    let interrupts = d.stats.interrupts.load(Ordering::Relaxed) - interrupts;
    assert!(irq == N && polled == 0, "{irq} requests completed by interrupt, {polled} by polling");
    assert!((1..=N).contains(&interrupts), "{interrupts} interrupts for {N} requests");
}

/// The fail points fail one request with an I/O error, and the next one
/// works again.
#[ktest]
fn fail_points_fail_requests() {
    let d = test_disk();
    let mut b = vec![0u8; 4 * SECTOR_SIZE];
    BLK_READ.set(Action::Nth(1));
    assert_eq!(d.read(40, &mut b), Err(BlockError::Io));
    d.read(40, &mut b).unwrap();
    assert_eq!(mismatch(40, &b), None);
    BLK_WRITE.set(Action::Nth(1));
    assert_eq!(d.write(40, &b), Err(BlockError::Io));
    d.write(40, &b).unwrap();
    BLK_READ.set(Action::Always);
    let always = (0..3).all(|_| d.read(40, &mut b) == Err(BlockError::Io));
    BLK_READ.set(Action::Off);
    assert!(always);
    d.read(40, &mut b).unwrap();
    assert_eq!(mismatch(40, &b), None);
}

/// Two requests are in flight at once: started back to back, before any
/// completion is drained (interrupts off), both hold a slot until waited
/// for, and each gets its own data.
#[ktest]
fn two_requests_in_flight_at_once() {
    let d = test_disk();
    let (mut a, mut b) = (DmaBuf::new(1), DmaBuf::new(1));
    let (pa, pb) = (a.bytes().as_mut_ptr(), b.bytes().as_mut_ptr());
    let (i, j) = x86_64::instructions::interrupts::without_interrupts(|| {
        let i = d.start(false, 100, pa, 8 * SECTOR_SIZE).unwrap();
        let j = d.start(false, 900, pb, 8 * SECTOR_SIZE).unwrap();
        (i, j)
    });
    assert_ne!(i, j);
    assert!(d.stats.peak_in_flight.load(Ordering::Relaxed) >= 2, "the second request did not go in flight beside the first");
    d.wait(i).unwrap();
    d.wait(j).unwrap();
    assert_eq!(mismatch(100, &a.bytes()[..8 * SECTOR_SIZE]), None);
    assert_eq!(mismatch(900, &b.bytes()[..8 * SECTOR_SIZE]), None);
}

/// Two threads read at once, each sleeping while its requests are in
/// flight, and each gets its own data. (Whether their requests overlap in
/// the device is the emulator's timing: `two_requests_in_flight_at_once`
/// shows that they can.)
#[ktest]
fn concurrent_requests_from_two_threads() {
    let workers: Vec<sched::ThreadId> = (0..2u64)
        .map(|w| {
            sched::spawn("blk-reader", move || {
                let d = test_disk();
                let mut b = vec![0u8; 64 * SECTOR_SIZE];
                for k in 0..30u64 {
                    let n = (w * 9000 + k * 271) % (TEST_SECTORS - 64);
                    let len = (1 + (k as usize * 13 + w as usize * 7) % 64) * SECTOR_SIZE;
                    d.read(n, &mut b[..len]).unwrap();
                    assert_eq!(mismatch(n, &b[..len]), None, "thread {w}, request {k}");
                }
            })
            .expect("cannot start a thread")
        })
        .collect();
    for id in workers {
        sched::join(id);
    }
}

/// Reads the whole disk in 256 KiB requests and reports the rate; one 2 MiB
/// request (split at MAX_TRANSFER) as well.
#[ktest(timeout = 90)]
fn whole_disk_read_rate() {
    let d = test_disk();
    let mut buf = DmaBuf::new(512);
    let b = buf.bytes();
    let t0 = time::rdtsc();
    const CHUNK: u64 = 512; // sectors: 256 KiB
    let mut n = 0;
    while n < TEST_SECTORS {
        d.read(n, &mut b[..CHUNK as usize * SECTOR_SIZE]).unwrap();
        // Spot-check each sector's header and one byte.
        for k in 0..CHUNK {
            let s = &b[k as usize * SECTOR_SIZE..][..SECTOR_SIZE];
            assert_eq!(u64::from_le_bytes(s[..8].try_into().unwrap()), n + k);
            assert_eq!(s[300], pattern(n + k, 300));
        }
        n += CHUNK;
    }
    let us = time::tsc_to_us(time::rdtsc() - t0).max(1);
    log::info!(
        "virtio-blk: read {} MiB in {} ms, {} KiB/s, in {} KiB requests",
        (TEST_SECTORS * SECTOR_SIZE as u64) >> 20,
        us / 1000,
        TEST_SECTORS * SECTOR_SIZE as u64 * 1_000_000 / us / 1024,
        CHUNK * SECTOR_SIZE as u64 / 1024
    );
    d.read(4096, b).unwrap();
    assert_eq!(mismatch(4096, b), None);
}
