//! ext2 writing: every change is checked three ways after sync: e2fsck -fn
//! must find nothing to fix, and debugfs and ext4-view must read what the
//! test's model says each file holds.

mod common;

use common::*;
use pager::block::RamDisk;
use pager::ext2::{Ext2, FsError, ROOT_INO};

/// Writes `data` at `off` through the filesystem and in the model.
fn write(fs: &mut Ext2<RamDisk>, model: &mut Model, path: &str, off: usize, data: &[u8]) {
    let ino = fs.lookup(path).unwrap();
    assert_eq!(fs.write(ino, off as u64, data), Ok(data.len()), "write {path} at {off}");
    let file = model.get_mut(path).unwrap();
    if file.len() < off + data.len() {
        file.resize(off + data.len(), 0);
    }
    file[off..off + data.len()].copy_from_slice(data);
}

fn truncate(fs: &mut Ext2<RamDisk>, model: &mut Model, path: &str, size: usize) {
    let ino = fs.lookup(path).unwrap();
    fs.truncate(ino, size as u64).unwrap();
    model.get_mut(path).unwrap().resize(size, 0);
}

/// Every file of the model reads back through the filesystem itself.
fn assert_reads(fs: &mut Ext2<RamDisk>, model: &Model) {
    for (path, data) in model {
        assert!(read_all(fs, path) == *data, "{path} differs");
    }
}

fn changes_survive(block_size: u32) {
    let mut model = standard_tree();
    let mut fs = mount(make_image(&model, block_size, 16));
    let free_before = fs.free_counts();

    write(&mut fs, &mut model, "/b4096", 100, &pattern(50, 7)); // inside a block
    write(&mut fs, &mut model, "/b4097", 4097, &pattern(300_000, 8)); // grows into indirect blocks
    write(&mut fs, &mut model, "/one", 0, &pattern(1_300_000, 9)); // whole blocks, double indirect with 1 KiB
    write(&mut fs, &mut model, "/empty", 3 * 4096 + 5, b"after a hole");
    write(&mut fs, &mut model, "/sub/inner.txt", 2999, &pattern(2, 10)); // across the old end
    truncate(&mut fs, &mut model, "/double", 5000); // frees the double indirect tree
    truncate(&mut fs, &mut model, "/indirect", 0);
    truncate(&mut fs, &mut model, "/b4095", 10_000); // grows: a hole after the old data
    write(&mut fs, &mut model, "/b4095", 9000, b"x");

    let new = fs.create(ROOT_INO, "new-file", 0o644).unwrap();
    assert_eq!(fs.write(new, 0, &pattern(70_000, 11)), Ok(70_000));
    model.insert("/new-file".into(), pattern(70_000, 11));
    let sub = fs.lookup("/sub/deeper").unwrap();
    fs.create(sub, "made-empty", 0o600).unwrap();
    model.insert("/sub/deeper/made-empty".into(), Vec::new());

    let sub = fs.lookup("/sub").unwrap();
    fs.unlink(sub, "inner.txt").unwrap();
    model.remove("/sub/inner.txt");
    fs.unlink(ROOT_INO, "b4096").unwrap();
    model.remove("/b4096");

    assert_reads(&mut fs, &model);
    assert_ne!(fs.free_counts(), free_before);
    let image = unmount(fs);
    assert_clean(&image);
    assert_host_sees(&image, &model);

    // And a second mount reads it all again.
    let mut fs = mount(image);
    assert_reads(&mut fs, &model);
    assert_eq!(fs.stat(new).unwrap().mode, 0o100644);
}

#[test]
fn changes_survive_1k() {
    changes_survive(1024);
}

#[test]
fn changes_survive_4k() {
    changes_survive(4096);
}

/// Creating, filling and deleting a file gives every block and inode back.
#[test]
fn unlink_frees_everything() {
    for bs in [1024, 4096] {
        let model = standard_tree();
        let mut fs = mount(make_image(&model, bs, 16));
        let before = fs.free_counts();
        let ino = fs.create(ROOT_INO, "big", 0o644).unwrap();
        fs.write(ino, 0, &pattern(3 << 20, 1)).unwrap();
        assert!(fs.free_counts().0 < before.0 - (3 << 20) / bs);
        fs.unlink(ROOT_INO, "big").unwrap();
        assert_eq!(fs.free_counts(), before);
        assert_eq!(fs.lookup("/big"), Err(FsError::NotFound));
        // Deleting a file mke2fs wrote, too.
        fs.unlink(ROOT_INO, "double").unwrap();
        let after = fs.free_counts();
        assert_eq!(after.1, before.1 + 1);
        let image = unmount(fs);
        assert_clean(&image);
        let mut model = model;
        model.remove("/double");
        assert_host_sees(&image, &model);
    }
}

/// A write far out in a 1 KiB filesystem needs the triple indirect block;
/// the hole before it reads as zeros and costs nothing.
#[test]
fn triple_indirect_and_holes() {
    let model = standard_tree();
    let mut fs = mount(make_image(&model, 1024, 16));
    let before = fs.free_counts();
    let ino = fs.create(ROOT_INO, "sparse", 0o644).unwrap();
    let far = (12 + 256 + 65536 + 300) * 1024 + 17;
    fs.write(ino, far, b"far away").unwrap();
    fs.write(ino, 20 * 1024, b"near").unwrap();
    let st = fs.stat(ino).unwrap();
    assert_eq!(st.size, far + 8);
    // Data: 2 blocks; indirect: the single (for block 20), triple + 2 below it.
    assert_eq!(st.blocks, 2 * (2 + 4));
    let mut buf = vec![1u8; 4096];
    assert_eq!(fs.read(ino, far - 4000, &mut buf), Ok(4008));
    assert!(buf[..4000].iter().all(|&b| b == 0));
    assert_eq!(&buf[4000..4008], b"far away");
    assert_eq!(fs.bmap(ino, 5), Ok(None));
    assert!(fs.bmap(ino, far / 1024).unwrap().is_some());
    let image = unmount(fs);
    assert_clean(&image);
    let mut want = vec![0u8; far as usize + 8];
    want[20 * 1024..20 * 1024 + 4].copy_from_slice(b"near");
    want[far as usize..].copy_from_slice(b"far away");
    assert!(debugfs(&image, "cat /sparse") == want);
    let mut fs = mount(image);
    fs.truncate(ino, 0).unwrap();
    assert_eq!(fs.free_counts().0, before.0, "truncate frees the indirect blocks");
    assert_clean(&unmount(fs));
}

/// Truncating zeroes the tail of the last block, so growing again reads zeros.
#[test]
fn truncate_then_grow_reads_zeros() {
    let mut model = standard_tree();
    let mut fs = mount(make_image(&model, 4096, 16));
    truncate(&mut fs, &mut model, "/b4097", 10);
    truncate(&mut fs, &mut model, "/b4097", 4000);
    write(&mut fs, &mut model, "/b4097", 6000, b"end");
    assert_reads(&mut fs, &model);
    let image = unmount(fs);
    assert_clean(&image);
    assert_host_sees(&image, &model);
}

/// Blocks written in one go come out contiguous, and bmap_run says so.
#[test]
fn bmap_run_finds_contiguous_blocks() {
    let mut fs = mount(make_image(&standard_tree(), 4096, 16));
    let ino = fs.create(ROOT_INO, "seq", 0o644).unwrap();
    let data = pattern(64 * 4096, 3);
    fs.write(ino, 0, &data).unwrap();
    // Blocks 0..12 are direct; the single indirect block is allocated
    // between data blocks 11 and 12, so the run breaks there.
    let (b0, run) = fs.bmap_run(ino, 0, 64).unwrap().unwrap();
    assert_eq!(run, 12);
    let (b12, run) = fs.bmap_run(ino, 12, 64).unwrap().unwrap();
    assert_eq!((b12, run), (b0 + 13, 52));
    assert_eq!(fs.bmap_run(ino, 12, 5).unwrap(), Some((b12, 5)));
    assert_eq!(fs.bmap_run(ino, 64, 8).unwrap(), None);
    // The disk blocks hold the file's data.
    let mut buf = vec![0u8; 52 * 4096];
    fs.device();
    let sector = u64::from(b12) * 8;
    pager::block::BlockDevice::read(fs.device(), sector, &mut buf).unwrap();
    assert!(buf == data[12 * 4096..]);
}

#[test]
fn modified_hashed_directory_stays_consistent() {
    let mut model = Model::new();
    for i in 0..400 {
        model.insert(format!("/big/entry-number-{i:04}"), pattern(i % 50, i as u64));
    }
    let ((_, _), image) = fsck_with(&make_image(&model, 1024, 8), "-fyD");
    let mut fs = mount(image);
    let big = fs.lookup("/big").unwrap();
    for i in (0..400).step_by(3) {
        fs.unlink(big, format!("entry-number-{i:04}")).unwrap();
        model.remove(&format!("/big/entry-number-{i:04}"));
    }
    for i in 0..100 {
        let name = format!("added-later-with-a-long-name-{i}");
        let ino = fs.create(big, &name, 0o644).unwrap();
        fs.write(ino, 0, name.as_bytes()).unwrap();
        model.insert(format!("/big/{name}"), name.into_bytes());
    }
    assert_reads(&mut fs, &model);
    let image = unmount(fs);
    assert_clean(&image);
    assert_host_sees(&image, &model);
}

#[test]
fn create_and_unlink_errors() {
    let mut fs = mount(make_image(&standard_tree(), 1024, 16));
    let one = fs.lookup("/one").unwrap();
    let sub = fs.lookup("/sub").unwrap();
    assert_eq!(fs.create(ROOT_INO, "one", 0o644), Err(FsError::Exists));
    assert_eq!(fs.create(ROOT_INO, "a".repeat(256), 0o644), Err(FsError::NameTooLong));
    assert_eq!(fs.create(ROOT_INO, "a/b", 0o644), Err(FsError::InvalidName));
    assert_eq!(fs.create(ROOT_INO, "..", 0o644), Err(FsError::InvalidName));
    assert_eq!(fs.create(one, "x", 0o644), Err(FsError::NotDir));
    assert_eq!(fs.create(ROOT_INO, "dev", 0o020644), Err(FsError::InvalidArgument));
    assert_eq!(fs.unlink(ROOT_INO, "sub"), Err(FsError::IsDir));
    assert_eq!(fs.unlink(ROOT_INO, "nope"), Err(FsError::NotFound));
    assert_eq!(fs.write(sub, 0, b"x"), Err(FsError::IsDir));
    assert_eq!(fs.truncate(sub, 0), Err(FsError::IsDir));
    assert_eq!(fs.write(one, u64::MAX - 1, b"xx"), Err(FsError::FileTooBig));
    assert_eq!(fs.truncate(one, fs.max_file_size() + 1), Err(FsError::FileTooBig));
    // A name of exactly 255 bytes is fine.
    let long = "b".repeat(255);
    let ino = fs.create(ROOT_INO, &long, 0o644).unwrap();
    assert_eq!(fs.lookup(format!("/{long}")), Ok(ino));
    assert_clean(&unmount(fs));
}

/// Filling the filesystem ends in NoSpace, not a panic, and leaves it clean.
#[test]
fn no_space_is_reported() {
    let mut fs = mount(make_image(&standard_tree(), 1024, 8));
    let ino = fs.create(ROOT_INO, "filler", 0o644).unwrap();
    let chunk = pattern(256 * 1024, 5);
    let mut off = 0u64;
    let err = loop {
        match fs.write(ino, off, &chunk) {
            Ok(n) => off += n as u64,
            Err(e) => break e,
        }
    };
    assert_eq!(err, FsError::NoSpace);
    assert_eq!(fs.free_counts().0, 0);
    let size = fs.stat(ino).unwrap().size;
    assert!(size >= off, "the size covers what was written");
    let mut files = 0;
    let err = loop {
        match fs.create(ROOT_INO, format!("f{files}"), 0o644) {
            Ok(_) => files += 1,
            Err(e) => break e,
        }
        if files > 100_000 {
            panic!("never ran out");
        }
    };
    // The root directory needs a new block for more names at some point.
    assert!(err == FsError::NoSpace, "{err:?}");
    let image = unmount(fs);
    assert_clean(&image);

    // Space for a few blocks only: a big aligned write allocates them, writes
    // them, and then reports NoSpace with the size covering them.
    let mut fs = mount(image);
    fs.unlink(ROOT_INO, "b4097").unwrap();
    let free = fs.free_counts().0 as u64;
    let size = fs.stat(ino).unwrap().size.next_multiple_of(1024);
    assert_eq!(fs.write(ino, size, &chunk), Err(FsError::NoSpace));
    assert_eq!(fs.free_counts().0, 0);
    let grown = fs.stat(ino).unwrap().size - size;
    assert!(grown > 0 && grown <= free * 1024, "grew by {grown} with {free} blocks free");
    let mut back = vec![0u8; grown as usize];
    fs.read(ino, size, &mut back).unwrap();
    assert!(back == chunk[..grown as usize]);
    let image = unmount(fs);
    assert_clean(&image);
    let mut fs = mount(image);
    fs.unlink(ROOT_INO, "filler").unwrap();
    assert_clean(&unmount(fs));
}

/// A file past 2 GiB (sparse) keeps its high size bits, and turns the
/// large_file feature on if the image did not have it.
#[test]
fn files_past_2_gib_set_large_file() {
    let mut image = make_image(&standard_tree(), 4096, 16);
    let ro_compat = 1024 + 100;
    image[ro_compat] &= !0x02; // clear large_file
    let mut fs = mount(image);
    let ino = fs.create(ROOT_INO, "huge", 0o644).unwrap();
    let far = 3u64 << 30;
    fs.write(ino, far, b"tail").unwrap();
    assert_eq!(fs.stat(ino).unwrap().size, far + 4);
    let image = unmount(fs);
    assert_eq!(image[ro_compat] & 0x02, 0x02, "large_file is set");
    assert_clean(&image);
    let stat = String::from_utf8_lossy(&debugfs(&image, "stat /huge")).to_string();
    assert!(stat.contains(&format!("Size: {}", far + 4)), "{stat}");
    let mut fs = mount(image);
    let mut buf = [0u8; 8];
    assert_eq!(fs.read(ino, far - 4, &mut buf), Ok(8));
    assert_eq!(&buf, b"\0\0\0\0tail");
}
