//! ext2 reading: images from mke2fs -d, read back and compared with the
//! files they were made from, in 1 KiB and 4 KiB blocks.

mod common;

use common::*;
use pager::ext2::{FsError, ROOT_INO};

fn reads_every_file(block_size: u32) {
    let model = standard_tree();
    let mut fs = mount(make_image(&model, block_size, 16));
    assert_eq!(fs.block_size(), block_size as usize);
    for (path, data) in &model {
        assert!(read_all(&mut fs, path) == *data, "{path} differs");
        // Odd-sized reads at odd offsets take the partial-block paths.
        let ino = fs.lookup(path).unwrap();
        let mut off = 0;
        let mut buf = vec![0u8; 1000];
        while off < data.len() {
            let n = fs.read(ino, off as u64, &mut buf).unwrap();
            assert_eq!(&buf[..n], &data[off..off + n], "{path} at {off}");
            off += n + 333;
        }
        assert_eq!(fs.read(ino, data.len() as u64 + 5, &mut buf), Ok(0), "read past the end");
        let st = fs.stat(ino).unwrap();
        assert_eq!(st.size, data.len() as u64);
        assert_eq!(st.mode & 0o170000, 0o100000);
        assert_eq!(st.nlink, 1);
        assert!(st.blocks * 512 >= data.len() as u64);
        assert_eq!(st.blksize, block_size);
    }
}

#[test]
fn reads_every_file_1k() {
    reads_every_file(1024);
}

#[test]
fn reads_every_file_4k() {
    reads_every_file(4096);
}

#[test]
fn paths_resolve_with_dot_and_dotdot() {
    let mut fs = mount(make_image(&standard_tree(), 4096, 16));
    let sub = fs.lookup("/sub").unwrap();
    let one = fs.lookup("/one").unwrap();
    assert_eq!(fs.lookup("/"), Ok(ROOT_INO));
    assert_eq!(fs.lookup("/.."), Ok(ROOT_INO));
    assert_eq!(fs.lookup("/sub/./deeper/../.."), Ok(ROOT_INO));
    assert_eq!(fs.lookup("//sub//"), Ok(sub));
    assert_eq!(fs.lookup("/sub/../one"), Ok(one));
    assert_eq!(fs.lookup_at(sub, "deeper/leaf"), fs.lookup("/sub/deeper/leaf"));
    assert_eq!(fs.lookup_at(sub, "/one"), Ok(one));
    assert_eq!(fs.lookup("/nope"), Err(FsError::NotFound));
    assert_eq!(fs.lookup("/one/x"), Err(FsError::NotDir));
    assert_eq!(fs.lookup("/one/"), Err(FsError::NotDir));
    assert_eq!(fs.lookup(""), Err(FsError::NotFound));
    assert_eq!(fs.lookup(format!("/{}", "a".repeat(256))), Err(FsError::NameTooLong));
    assert!(fs.stat(sub).unwrap().mode & 0o170000 == 0o040000);
    let mut buf = [0u8; 8];
    assert_eq!(fs.read(sub, 0, &mut buf), Err(FsError::IsDir));
}

#[test]
fn readdir_lists_entries_and_resumes() {
    let mut model = standard_tree();
    for i in 0..150 {
        model.insert(format!("/many/file-with-a-longish-name-{i:03}"), pattern(i, 100 + i as u64));
    }
    let mut fs = mount(make_image(&model, 1024, 16));
    let dir = fs.lookup("/many").unwrap();
    let mut names = Vec::new();
    let mut pos = 0;
    loop {
        let entries = fs.readdir(dir, pos).unwrap();
        let Some(first) = entries.first() else { break };
        // Take one entry at a time, as a small getdents64 buffer would.
        names.push((first.name.clone(), first.ino, first.file_type));
        pos = first.next;
    }
    let mut got: Vec<String> = names.iter().map(|(n, _, _)| String::from_utf8(n.clone()).unwrap()).collect();
    got.sort();
    let mut want: Vec<String> = (0..150).map(|i| format!("file-with-a-longish-name-{i:03}")).collect();
    want.push(".".into());
    want.push("..".into());
    want.sort();
    assert_eq!(got, want);
    for (name, ino, ft) in &names {
        assert_eq!(fs.lookup_in(dir, name), Ok(*ino));
        assert_eq!(*ft, if name == b"." || name == b".." { 4 } else { 8 }, "d_type");
    }
    let one = fs.lookup("/one").unwrap();
    assert_eq!(fs.readdir(one, 0), Err(FsError::NotDir));
}

#[test]
fn hashed_directories_read_linearly() {
    let mut model = Model::new();
    for i in 0..400 {
        model.insert(format!("/big/entry-number-{i:04}"), pattern(i % 50, i as u64));
    }
    let image = make_image(&model, 1024, 8);
    // e2fsck -D builds htree indexes for directories of more than a block.
    let ((_, text), image) = fsck_with(&image, "-fyD");
    let stat = String::from_utf8_lossy(&debugfs(&image, "stat /big")).to_string();
    assert!(stat.contains("Flags: 0x1000"), "/big should be indexed after e2fsck -D:\n{stat}\n{text}");
    let mut fs = mount(image);
    for (path, data) in &model {
        assert!(read_all(&mut fs, path) == *data, "{path}");
    }
}
