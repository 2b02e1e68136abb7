//! Shared by the ext2 tests: images made by the host's mke2fs from a folder
//! of files, checked afterwards by e2fsck, debugfs and the ext4-view crate.
//!
//! e2fsprogs (mke2fs, e2fsck, debugfs) must be installed; the tests fail with
//! a message saying so if it is not.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use pager::block::RamDisk;
use pager::ext2::Ext2;

/// Path inside the image -> contents, for every regular file.
pub type Model = BTreeMap<String, Vec<u8>>;

/// A fresh empty folder under the system temp folder, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("pager-ext2-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic bytes: a different stream for each seed.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

/// Runs an e2fsprogs tool, failing the test clearly if it is missing.
pub fn tool(name: &str, args: &[&str]) -> Output {
    Command::new(name).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {name} ({e}): e2fsprogs (mke2fs, e2fsck, debugfs) must be installed (apt-get install e2fsprogs)")
    })
}

/// The standard tree: sizes around block boundaries, files that need single
/// and double indirect blocks with either block size, subdirectories.
pub fn standard_tree() -> Model {
    let mut m = Model::new();
    for (i, (name, len)) in [
        ("empty", 0),
        ("one", 1),
        ("b4095", 4095),
        ("b4096", 4096),
        ("b4097", 4097),
        ("indirect", 200 * 1024),
        ("double", 5 * 1024 * 1024 + 123),
        ("sub/inner.txt", 3000),
        ("sub/deeper/leaf", 70_000),
    ]
    .into_iter()
    .enumerate()
    {
        m.insert(format!("/{name}"), pattern(len, i as u64 + 1));
    }
    m
}

/// Writes the model's files under `root`.
pub fn populate(root: &Path, model: &Model) {
    for (path, data) in model {
        let p = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
}

/// An image of `size_mib` MiB with `block_size`-byte blocks holding the
/// model's files, as mke2fs -t ext2 -d makes it.
pub fn make_image(model: &Model, block_size: u32, size_mib: u32) -> Vec<u8> {
    let tmp = TempDir::new("mkfs");
    let root = tmp.0.join("root");
    std::fs::create_dir_all(&root).unwrap();
    populate(&root, model);
    let img = tmp.0.join("fs.img");
    let out = tool(
        "mke2fs",
        &[
            "-q",
            "-t",
            "ext2",
            "-b",
            &block_size.to_string(),
            "-d",
            root.to_str().unwrap(),
            "-F",
            img.to_str().unwrap(),
            &format!("{size_mib}M"),
        ],
    );
    assert!(out.status.success(), "mke2fs failed: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(img).unwrap()
}

fn now() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as u32
}

pub fn mount(image: Vec<u8>) -> Ext2<RamDisk> {
    let mut fs = Ext2::mount(RamDisk::from_bytes(image)).expect("mount");
    fs.set_clock(now);
    fs
}

/// Syncs and returns the image bytes.
pub fn unmount(mut fs: Ext2<RamDisk>) -> Vec<u8> {
    fs.sync().expect("sync");
    fs.into_device().into_bytes()
}

/// e2fsck -fn on the image: (clean, output).
pub fn fsck(image: &[u8]) -> (bool, String) {
    fsck_with(image, "-fn").0
}

/// Runs e2fsck with `flags` on a copy of `image`; returns (success, output)
/// and the image as e2fsck left it.
pub fn fsck_with(image: &[u8], flags: &str) -> ((bool, String), Vec<u8>) {
    let tmp = TempDir::new("fsck");
    let img = tmp.0.join("fs.img");
    std::fs::write(&img, image).unwrap();
    let out = tool("e2fsck", &[flags, img.to_str().unwrap()]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ((out.status.success(), text), std::fs::read(&img).unwrap())
}

/// Asserts that e2fsck -fn finds nothing to fix.
pub fn assert_clean(image: &[u8]) {
    let (ok, text) = fsck(image);
    assert!(ok, "e2fsck -fn found problems:\n{text}");
}

/// Output of a debugfs request on the image.
pub fn debugfs(image: &[u8], request: &str) -> Vec<u8> {
    let tmp = TempDir::new("debugfs");
    let img = tmp.0.join("fs.img");
    std::fs::write(&img, image).unwrap();
    let out = tool("debugfs", &["-R", request, img.to_str().unwrap()]);
    assert!(out.status.success(), "debugfs failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Checks every file of the model with debugfs and with ext4-view, and that
/// ext4-view finds no regular file the model does not have.
pub fn assert_host_sees(image: &[u8], model: &Model) {
    // debugfs rdump copies the whole tree out in one run.
    let out = TempDir::new("rdump");
    debugfs(image, &format!("rdump / {}", out.0.display()));
    for (path, data) in model {
        let host = std::fs::read(out.0.join(path.trim_start_matches('/')))
            .unwrap_or_else(|e| panic!("debugfs rdump has no {path}: {e}"));
        assert!(host == *data, "debugfs: {path} differs");
    }
    let view = ext4_view::Ext4::load(Box::new(image.to_vec())).expect("ext4-view loads the image");
    for (path, data) in model {
        let got = view.read(path.as_str()).unwrap_or_else(|e| panic!("ext4-view reads {path}: {e}"));
        assert!(got == *data, "ext4-view: {path} differs ({} bytes, want {})", got.len(), data.len());
    }
    let mut found = Vec::new();
    list_files(&view, "/", &mut found);
    let want: Vec<String> = model.keys().cloned().collect();
    found.sort();
    assert_eq!(found, want, "ext4-view's list of regular files");
}

fn list_files(view: &ext4_view::Ext4, dir: &str, out: &mut Vec<String>) {
    for entry in view.read_dir(dir).expect("read_dir") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name().as_str().unwrap().to_string();
        if name == "." || name == ".." || name == "lost+found" {
            continue;
        }
        let path = format!("{}/{name}", dir.trim_end_matches('/'));
        let ft = entry.file_type().unwrap();
        if ft.is_dir() {
            list_files(view, &path, out);
        } else if ft.is_regular_file() {
            out.push(path);
        }
    }
}

/// Reads a whole file through the filesystem.
pub fn read_all(fs: &mut Ext2<RamDisk>, path: &str) -> Vec<u8> {
    let ino = fs.lookup(path).unwrap_or_else(|e| panic!("lookup {path}: {e:?}"));
    let size = fs.stat(ino).unwrap().size as usize;
    let mut buf = vec![0u8; size];
    assert_eq!(fs.read(ino, 0, &mut buf).unwrap(), size, "short read of {path}");
    buf
}

/// Pages for the trie nodes of a host VM, from the host's allocator.
pub struct HostPages;

impl vm::zone::PageSource for HostPages {
    fn alloc_page(&self) -> Option<std::ptr::NonNull<u8>> {
        // SAFETY: the layout has a non-zero size.
        std::ptr::NonNull::new(unsafe { std::alloc::alloc(page_layout()) })
    }

    unsafe fn free_page(&self, page: std::ptr::NonNull<u8>) {
        // SAFETY: allocated by `alloc_page` with this layout (the caller's contract).
        unsafe { std::alloc::dealloc(page.as_ptr(), page_layout()) }
    }
}

fn page_layout() -> std::alloc::Layout {
    std::alloc::Layout::from_size_align(vm::PAGE_SIZE, vm::PAGE_SIZE).unwrap()
}

pub static HOST_PAGES: HostPages = HostPages;

/// A host VM of its own for a test: a page allocator over `mib` MiB (from
/// 1 MiB) with real backing memory, a node zone whose allocation fails at
/// the returned fail point, and `mappings` as the machine's view of
/// mappings. Leaked: it lives as long as the test process.
pub fn host_vm(
    mib: u64,
    mappings: &'static dyn vm::pmap::PageMappings,
) -> (vm::object::VmEnv, &'static vm::failpoint::FailPoint) {
    use vm::failpoint::FailPoint;
    use vm::phys::{PhysMem, PhysRange};
    let range = PhysRange { start: 1 << 20, end: (1 + mib) << 20 };
    let storage = Box::leak(Box::new_uninit_slice(PhysMem::records_needed(&[range])));
    let memory: &'static mut [u8] = Box::leak(vec![0u8; range.end as usize].into_boxed_slice());
    let pm = PhysMem::new(&[range], storage, Some(memory.as_mut_ptr() as usize)).unwrap();
    pm.add_free_range(range);
    let pm: &'static PhysMem = Box::leak(Box::new(pm));
    let node_fail: &'static FailPoint = Box::leak(Box::new(FailPoint::new("radix.node_alloc")));
    let page_fail: &'static FailPoint = Box::leak(Box::new(FailPoint::new("page.alloc")));
    let node_size = vm::radix::Radix::<&'static vm::page::Page>::NODE_SIZE;
    let zone = Box::leak(Box::new(vm::zone::NodeZone::new(node_size, &HOST_PAGES, node_fail)));
    (vm::object::VmEnv { pm, zone, page_alloc: page_fail, mappings }, node_fail)
}
