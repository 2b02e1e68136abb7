//! ext2 under failure: I/O errors injected with RamDisk's FailPlan, images
//! that are not ext2 or use features beyond this driver, and corrupted
//! metadata. Every case must end in an error, never a panic, and an I/O
//! error in the middle of a change must leave what e2fsck can repair.

mod common;

use common::*;
use pager::block::{BlockDevice, BlockError, FailPlan, RamDisk};
use pager::ext2::{Ext2, FsError, ROOT_INO};

fn put32(image: &mut [u8], off: usize, v: u32) {
    image[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn get32(image: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(image[off..off + 4].try_into().unwrap())
}

/// Superblock field offsets (the superblock starts at byte 1024).
const SB: usize = 1024;

#[test]
fn mount_refuses_what_it_cannot_read() {
    let good = make_image(&standard_tree(), 1024, 8);
    let mount_err = |image: Vec<u8>| Ext2::mount(RamDisk::from_bytes(image)).err();

    assert_eq!(mount_err(vec![0; 1 << 20]), Some(FsError::Corrupt("bad superblock magic")));
    assert!(matches!(mount_err(vec![0; 1000]), Some(FsError::Io(BlockError::OutOfRange { .. }))));

    let mut extents = good.clone();
    put32(&mut extents, SB + 96, get32(&good, SB + 96) | 0x40);
    assert_eq!(mount_err(extents), Some(FsError::Unsupported("extents are not supported (ext4)")));

    let mut recover = good.clone();
    put32(&mut recover, SB + 96, get32(&good, SB + 96) | 0x4);
    assert_eq!(mount_err(recover), Some(FsError::Unsupported("the journal needs recovery")));

    let mut big_blocks = good.clone();
    put32(&mut big_blocks, SB + 24, 4);
    assert_eq!(mount_err(big_blocks), Some(FsError::Unsupported("block size above 4 KiB")));

    let mut rev2 = good.clone();
    put32(&mut rev2, SB + 76, 2);
    assert_eq!(mount_err(rev2), Some(FsError::Unsupported("superblock revision above 1")));

    let short = good[..good.len() / 2].to_vec();
    assert_eq!(mount_err(short), Some(FsError::Corrupt("filesystem larger than the device")));

    let mut bad_group = good.clone();
    put32(&mut bad_group, 2048 + 8, 0xFFFF_FFF0); // group 0's inode table
    assert_eq!(mount_err(bad_group), Some(FsError::Corrupt("group descriptor points outside the filesystem")));

    // An unknown read-only-compatible feature: readable, not writable.
    let mut ro = good.clone();
    put32(&mut ro, SB + 100, get32(&good, SB + 100) | 0x400);
    let mut fs = Ext2::mount(RamDisk::from_bytes(ro)).unwrap();
    assert!(fs.read_only());
    assert_eq!(read_all(&mut fs, "/b4097"), standard_tree()["/b4097"]);
    let one = fs.lookup("/one").unwrap();
    assert_eq!(fs.write(one, 0, b"x"), Err(FsError::ReadOnly));
    assert_eq!(fs.create(ROOT_INO, "n", 0o644), Err(FsError::ReadOnly));
}

/// Runs every operation once; returns how many failed.
fn every_operation(fs: &mut Ext2<RamDisk>) -> usize {
    let mut buf = vec![0u8; 10_000];
    let results = [
        fs.lookup("/sub/deeper/leaf").map(drop),
        fs.stat(ROOT_INO).map(drop),
        fs.read(12, 0, &mut buf).map(drop),
        fs.readdir(ROOT_INO, 0).map(drop),
        fs.bmap_run(12, 0, 8).map(drop),
        fs.write(13, 100, &buf).map(drop),
        fs.truncate(14, 1).map(drop),
        fs.create(ROOT_INO, "new", 0o644).map(drop),
        fs.unlink(ROOT_INO, "one").map(drop),
    ];
    results.iter().filter(|r| r.is_err()).count()
}

/// With a dead device, every operation after mount fails and says so.
#[test]
fn dead_device_fails_every_operation() {
    let mut fs = mount(make_image(&standard_tree(), 1024, 8));
    fs.device().set_fail(FailPlan::Always);
    assert_eq!(every_operation(&mut fs), 9);
    // Nothing changed, so sync has nothing to write and succeeds.
    assert_eq!(fs.sync(), Ok(()));

    // A change that reached the cache before the device died: sync reports
    // the failure, and again on retry, until the device works.
    let mut fs = mount(make_image(&standard_tree(), 1024, 8));
    let one = fs.lookup("/one").unwrap();
    fs.truncate(one, 0).unwrap();
    fs.device().set_fail(FailPlan::Always);
    assert_eq!(fs.sync(), Err(FsError::Io(BlockError::Io)));
    assert_eq!(fs.sync(), Err(FsError::Io(BlockError::Io)));
    fs.device().set_fail(FailPlan::Never);
    assert_clean(&unmount(fs));
}

/// Fails the n-th device request for every n of a sequence of changes: each
/// run reports an error or completes, and afterwards e2fsck -fy repairs
/// whatever was left half done so that e2fsck -fn finds the result clean.
fn io_error_at_every_step(block_size: u32) {
    let image = make_image(&standard_tree(), block_size, 8);
    let script = |fs: &mut Ext2<RamDisk>| -> Result<(), FsError> {
        let ino = fs.create(ROOT_INO, "grown", 0o644)?;
        fs.write(ino, 0, &pattern(300 * 1024, 1))?;
        let b4097 = fs.lookup("/b4097")?;
        fs.write(b4097, 10, b"patch")?;
        let double = fs.lookup("/double")?;
        fs.truncate(double, 3000)?;
        fs.unlink(ROOT_INO, "indirect")?;
        fs.sync()
    };
    // How many requests the script makes when nothing fails.
    let mut fs = mount(image.clone());
    let start = fs.device().requests();
    script(&mut fs).unwrap();
    let total = fs.device().requests() - start;
    assert_clean(&unmount(fs));

    for n in 0..total {
        let mut fs = mount(image.clone());
        fs.device().set_fail(FailPlan::Nth(n));
        let result = script(&mut fs);
        assert!(matches!(result, Err(FsError::Io(BlockError::Io))), "request {n} of {total}: {result:?}");
        // The device works again: whatever is cached goes out, then fsck.
        fs.device().set_fail(FailPlan::Never);
        let _ = fs.sync();
        let image = fs.into_device().into_bytes();
        let ((fixed, text), repaired) = fsck_with(&image, "-fy");
        // e2fsck -fy exits 1 when it fixed something: that is allowed.
        assert!(fixed || text.contains("FILE SYSTEM WAS MODIFIED"), "request {n}: e2fsck -fy failed:\n{text}");
        let (clean, text) = fsck(&repaired);
        assert!(clean, "request {n}: not clean after repair:\n{text}");
    }
}

#[test]
fn io_error_at_every_step_1k() {
    io_error_at_every_step(1024);
}

#[test]
fn io_error_at_every_step_4k() {
    io_error_at_every_step(4096);
}

/// Bytes flipped at random in the metadata (inode tables, directories,
/// indirect blocks) give errors or wrong data, never a panic.
#[test]
fn corrupted_metadata_never_panics() {
    let mut tree = standard_tree();
    tree.remove("/double");
    let image = make_image(&tree, 1024, 2);
    let used = 400 * 1024; // where mke2fs put the metadata and the small files
    let mut seed = 12345u64;
    let mut rand = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) as usize
    };
    let mut mounted = 0;
    for _ in 0..300 {
        let mut bad = image.clone();
        for _ in 0..20 {
            // Leave the superblock and group descriptors alone: mount checks
            // those; this is about what the operations read later.
            let at = 3 * 1024 + rand() % (used - 3 * 1024);
            bad[at] = rand() as u8;
        }
        let Ok(mut fs) = Ext2::mount(RamDisk::from_bytes(bad)) else { continue };
        mounted += 1;
        every_operation(&mut fs);
        for path in tree.keys() {
            if let Ok(ino) = fs.lookup(path) {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = fs.read(ino, 0, &mut buf);
                let _ = fs.write(ino, 5000, &buf);
                let _ = fs.truncate(ino, 100);
            }
        }
        let _ = fs.sync();
    }
    assert!(mounted > 250, "only {mounted} corrupted images mounted");
}

/// The device's own range checks come back as errors too.
#[test]
fn requests_past_the_device_are_errors() {
    let d = RamDisk::from_bytes(make_image(&standard_tree(), 1024, 8));
    let cap = d.capacity();
    let mut buf = vec![0u8; 512];
    assert!(d.read(cap, &mut buf).is_err());
}
