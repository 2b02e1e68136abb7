//! The swap space and the swap pager on the host: RAM disks that fail on
//! demand stand for the swap disk, a host model of the page allocator (with
//! real backing memory) for the kernel's, and the VM's pageout passes drive
//! the pager as the pageout daemon does.

mod common;

use std::sync::Arc;

use pager::blist::Blist;
use pager::block::{BlockDevice, BlockError, FailOn, FailPlan, RamDisk};
use pager::swap::{CHUNK, SwapError, SwapPager, SwapSpace};
use vm::failpoint::{Action, FailPoint};
use vm::object::{ObjectKind, Pager, PagerResult, VmEnv, VmObject};
use vm::page::{Page, Queue};
use vm::phys::{AllocFlags, PhysMem};

const PAGE: usize = vm::PAGE_SIZE;

type Space = SwapSpace<vm::sync::Mutex<Blist>>;

/// A machine of its own for each test: 4 MiB of pages with real contents,
/// a node zone whose allocation can be made to fail, a swap space over a
/// RAM disk of `swap_pages` pages.
struct Machine {
    env: VmEnv,
    node_fail: &'static FailPoint,
    disk: Arc<RamDisk>,
    space: Arc<Space>,
}

fn machine(swap_pages: u64) -> Machine {
    let (env, node_fail) = common::host_vm(4, &vm::pmap::NO_MAPPINGS);
    let disk = Arc::new(RamDisk::new(swap_pages * 8));
    let space = Arc::new(Space::new(Box::new(disk.clone())).unwrap());
    Machine { env, node_fail, disk, space }
}

impl Machine {
    /// A swap pager over this machine's swap space.
    fn pager(&self) -> SwapPager<vm::sync::Mutex<Blist>> {
        SwapPager::new(self.space.clone(), self.env.zone)
    }

    /// The pageout daemon's way to a swap pager.
    fn new_pager(&self) -> impl Fn() -> Option<Arc<dyn Pager>> + '_ {
        || Some(Arc::new(self.pager()) as Arc<dyn Pager>)
    }

    /// A page of `obj` at `pindex`, exclusively busy, every word `word`,
    /// valid and dirty.
    fn dirty_page(&self, obj: &VmObject, pindex: u64, word: u64) -> &'static Page {
        let p = obj.lock().alloc_page(pindex, AllocFlags::empty()).unwrap();
        fill(self.env.pm, p, word);
        p.set_all_valid();
        p.set_all_dirty();
        p
    }

    /// Unbusies `p` onto the inactive queue, as a finished fault leaves it.
    fn release(&self, p: &'static Page) {
        self.env.pm.deactivate(p);
        p.xunbusy();
    }

    fn assert_clean(&self) {
        let v = vm::invariants::check(self.env.pm);
        assert!(v.is_empty(), "invariant violations: {v:?}");
    }
}

fn fill(pm: &PhysMem, p: &'static Page, word: u64) {
    pm.with_contents_mut(p, |b| b.chunks_mut(8).for_each(|w| w.copy_from_slice(&word.to_ne_bytes()))).unwrap();
}

/// Whether every word of `p` is `word`.
fn holds(pm: &PhysMem, p: &'static Page, word: u64) -> bool {
    pm.with_contents(p, |b| b.chunks(8).all(|w| w == word.to_ne_bytes())).unwrap()
}

/// Byte `i` of swap block `block` as the tests write it, `salt` telling
/// one write from another.
fn pattern(block: u64, i: usize, salt: u8) -> u8 {
    (block as usize).wrapping_mul(131).wrapping_add(i).wrapping_add(i >> 8) as u8 ^ salt
}

fn pattern_run(block: u64, pages: u64, salt: u8) -> Vec<u8> {
    (0..pages as usize * PAGE).map(|k| pattern(block + (k / PAGE) as u64, k % PAGE, salt)).collect()
}

/// Runs of several sizes (one page, across blist leaves, larger than a
/// leaf) are written, each in one request, then all read back: each run
/// holds what was written to it and nothing of its neighbours. Freed, the
/// swap space is as it was.
#[test]
fn runs_are_written_and_read_back() {
    let m = machine(1024);
    let sp = &m.space;
    assert_eq!((sp.pages(), sp.avail(), sp.largest_free_run()), (1024, 1024, 1024));
    let requests = m.disk.requests();
    let mut runs = Vec::new();
    for (k, &n) in [1u64, 7, 64, 100, 3].iter().enumerate() {
        let (block, got) = sp.alloc(n, n).expect("the swap space is full");
        assert_eq!(got, n);
        if let Some(&(prev, prev_n, _)) = runs.last() {
            assert_eq!(block, prev + prev_n, "consecutive allocations are consecutive on the disk");
        }
        sp.write_pages(block, &pattern_run(block, n, k as u8)).unwrap();
        runs.push((block, n, k as u8));
    }
    assert_eq!(m.disk.requests() - requests, runs.len() as u64, "one write request per run");
    assert_eq!(sp.avail(), 1024 - 175);
    for &(block, n, salt) in &runs {
        let mut back = vec![0u8; n as usize * PAGE];
        sp.read_pages(block, &mut back).unwrap();
        assert!(back == pattern_run(block, n, salt), "run of {n} at block {block} reads back wrong");
    }
    for (block, n, _) in runs {
        sp.free(block, n);
    }
    assert_eq!(sp.avail(), 1024);
}

/// The last page of the device is usable; a transfer past it or of part
/// of a page is refused before it reaches the disk.
#[test]
fn transfers_are_checked() {
    let m = machine(64);
    let sp = &m.space;
    let last = sp.pages() - 1;
    let data = pattern_run(last, 1, 0x5A);
    sp.write_pages(last, &data).unwrap();
    let mut back = vec![0u8; PAGE];
    sp.read_pages(last, &mut back).unwrap();
    assert!(back == data);
    let requests = m.disk.requests();
    let mut two = vec![0u8; 2 * PAGE];
    assert_eq!(sp.read_pages(last, &mut two), Err(SwapError::OutOfRange { block: last, count: 2, pages: sp.pages() }));
    assert!(matches!(sp.write_pages(u64::MAX, &data), Err(SwapError::OutOfRange { .. })));
    assert_eq!(sp.write_pages(0, &data[..512]), Err(SwapError::BadLength(512)));
    assert_eq!(m.disk.requests(), requests, "a refused transfer reached the disk");
}

/// A write the disk fails comes back as an error, and the blocks can be
/// written again and freed; the same for a read.
#[test]
fn disk_errors_come_back_as_errors() {
    let m = machine(64);
    let sp = &m.space;
    let (block, n) = sp.alloc(4, 4).unwrap();
    let data = pattern_run(block, n, 0xC3);
    m.disk.set_fail(FailPlan::Nth(0));
    assert_eq!(sp.write_pages(block, &data), Err(SwapError::Io(BlockError::Io)));
    sp.write_pages(block, &data).unwrap();
    let mut back = vec![0u8; data.len()];
    m.disk.set_fail(FailPlan::Nth(0));
    assert_eq!(sp.read_pages(block, &mut back), Err(SwapError::Io(BlockError::Io)));
    sp.read_pages(block, &mut back).unwrap();
    assert!(back == data);
    sp.free(block, n);
    assert_eq!(sp.avail(), 64);
}

/// Sparse page-outs (one page in every run of 32, as a program touching
/// one page in 32 of a large region makes) cost one `SwBlk` and a share
/// of a trie node per page; a page whose metadata cannot be allocated
/// (the trie's node allocation failing) is not written (put_pages stops
/// before it: it stays dirty), and is written later when memory is
/// back; every page reads back as written; `forget` frees every swap
/// block and every `SwBlk` without allocating.
#[test]
fn sparse_page_outs_with_metadata_that_cannot_be_had() {
    const N: u64 = 64;
    let m = machine(1024);
    let (sw, pm) = (&m.space, m.env.pm);
    let pager = m.pager();
    let obj = VmObject::new(ObjectKind::Anonymous, N * CHUNK, m.env);
    let pages: Vec<&'static Page> = (0..N).map(|i| m.dirty_page(&obj, i * CHUNK + i % (CHUNK - 1), 0x5EED_0000 + i)).collect();
    // The first run's SwBlk sits in the trie's root: no node needed.
    // The second needs one, and none can be had.
    m.node_fail.set(Action::Always);
    assert_eq!(pager.put_pages(&obj, &pages[0..1]), 1);
    let no_meta = sw.stats.no_meta.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(pager.put_pages(&obj, &pages[1..2]), 0, "a page was written with no slot to record it");
    assert_eq!(sw.stats.no_meta.load(std::sync::atomic::Ordering::Relaxed), no_meta + 1);
    assert_eq!(sw.avail(), 1024 - 1, "a block was taken for the page put off");
    m.node_fail.set(Action::Off);
    for p in &pages[1..] {
        assert_eq!(pager.put_pages(&obj, &[p]), 1);
    }
    assert_eq!(sw.avail(), 1024 - N);
    let (swblks, bytes) = pager.metadata();
    assert_eq!(swblks as u64, N, "one SwBlk per run");
    assert!(bytes as u64 <= N * 200, "{bytes} bytes of metadata for {N} pages");
    assert_eq!(sw.stats.swblks.load(std::sync::atomic::Ordering::Relaxed), N);
    for (i, p) in pages.iter().enumerate() {
        assert!(pager.has_page(p.pindex()).is_some(), "page {i} has no block");
        assert!(pager.has_page(p.pindex() + 1).is_none());
        assert!(pager.block_of(p.pindex()).is_some_and(|b| b < 1024), "page {i}'s block");
        assert_eq!(pager.block_of(p.pindex() + 1), None);
    }
    // The reports' walk: the held pages in masks of 64 from the first,
    // each exactly once, and nothing outside the range asked.
    assert_eq!(pager.held_from(0, N * CHUNK), Some((0, 1 | 1 << (CHUNK + 1))));
    assert_eq!(pager.held_from(1, CHUNK + 1), None, "the end is not included");
    let mut held = Vec::new();
    let mut from = 0;
    while let Some((base, mask)) = pager.held_from(from, N * CHUNK) {
        held.extend((0..64).filter(|n| mask & 1 << n != 0).map(|n| base + n));
        from = base + 64;
    }
    assert_eq!(held, pages.iter().map(|p| p.pindex()).collect::<Vec<_>>());
    // Read back into pages of another object at the same indices.
    let other = VmObject::new(ObjectKind::Anonymous, N * CHUNK, m.env);
    for (i, p) in pages.iter().enumerate() {
        let q = other.lock().alloc_page(p.pindex(), AllocFlags::empty()).unwrap();
        assert_eq!(pager.get_pages(&other, &[q], 0), PagerResult::Ok);
        assert!(holds(pm, q, 0x5EED_0000 + i as u64), "page {i} read back wrong");
        m.release(q);
    }
    pager.forget(0, u64::MAX);
    assert_eq!(sw.avail(), 1024, "swap blocks left allocated");
    assert_eq!(pager.metadata().0, 0);
    assert_eq!(sw.stats.swblks.load(std::sync::atomic::Ordering::Relaxed), 0);
    for p in pages {
        m.release(p);
    }
    obj.deallocate();
    other.deallocate();
    m.assert_clean();
}

/// `n` dirty pages of a fresh anonymous object at indices 0..n, each
/// holding its index, in the laundry as the inactive scan leaves them.
fn laundry(m: &Machine, n: u64) -> (Arc<VmObject>, Vec<&'static Page>) {
    let obj = VmObject::new(ObjectKind::Anonymous, n, m.env);
    let pages: Vec<_> = (0..n)
        .map(|i| {
            let p = m.dirty_page(&obj, i, 0xD1_0000 + i);
            m.env.pm.launder(p);
            p.xunbusy();
            p
        })
        .collect();
    (obj, pages)
}

/// Swap writes that fail keep the pages dirty and resident, with no swap
/// block taken; the next pass, with the disk working again, writes them
/// (the object became a swap object at its first page-out) and frees
/// them; each clean page left has its slot (rule 14).
#[test]
fn swap_write_errors_keep_pages_dirty() {
    let m = machine(256);
    let pm = m.env.pm;
    let (obj, pages) = laundry(&m, 40);
    m.disk.set_fail_on(FailOn::Writes);
    m.disk.set_fail(FailPlan::Always);
    let st = vm::pageout::scan_laundry(pm, m.env.mappings, 100, &m.new_pager());
    assert_eq!((st.written, st.write_failed), (0, 40), "{st:?}");
    assert_eq!(obj.kind(), ObjectKind::Swap, "the first page-out makes the object a swap object");
    for p in &pages {
        assert!(p.dirty() != 0 && p.object() == Some(obj.handle()), "page {}: data lost", p.pindex());
        assert_eq!(p.queue(), Queue::Active);
    }
    assert_eq!(m.space.avail(), 256, "blocks of a failed write were kept");
    assert!(vm::invariants::check_object(&obj).is_empty());
    m.assert_clean();
    m.disk.set_fail(FailPlan::Never);
    for p in &pages {
        p.xbusy();
        pm.launder(p);
        p.xunbusy();
    }
    let st = vm::pageout::scan_laundry(pm, m.env.mappings, 100, &m.new_pager());
    assert_eq!((st.written, st.write_failed), (40, 0), "{st:?}");
    assert_eq!(m.space.avail(), 256 - 40);
    assert!(vm::invariants::check_object(&obj).is_empty(), "rule 14");
    m.assert_clean();
    obj.deallocate();
    assert_eq!(m.space.avail(), 256, "the object's blocks outlived it");
}

/// Pages paged out and read back in one request (read-ahead over
/// contiguous blocks) are clean and keep their blocks (rule 14), and
/// hold what was written; a page-in whose read fails leaves the faulting
/// page invalid (the caller frees it, rule 6) and reads nothing else of
/// that run; forgetting a clean page's slot is what the rule 14 check
/// reports.
#[test]
fn swap_read_errors_and_rule_14() {
    let m = machine(256);
    let pm = m.env.pm;
    let (obj, _) = laundry(&m, 8);
    assert_eq!(vm::pageout::scan_laundry(pm, m.env.mappings, 100, &m.new_pager()).written, 8);
    assert_eq!(obj.lock().resident(), 0, "written pages were freed");
    let pager = obj.lock().pager().unwrap();
    assert_eq!(pager.has_page(3), Some((3, 4)), "read-behind and read-ahead over contiguous blocks");
    let reads = m.disk.requests();
    let page_in = |fail: FailPlan| {
        let pages: Vec<_> = (0..8).map(|i| obj.lock().alloc_page(i, AllocFlags::empty()).unwrap()).collect();
        m.disk.set_fail(fail);
        let r = pager.get_pages(&obj, &pages, 3);
        m.disk.set_fail(FailPlan::Never);
        (r, pages)
    };
    // The read fails: nothing is valid, and the caller frees every page.
    let (r, pages) = page_in(FailPlan::Always);
    assert_eq!(r, PagerResult::Error);
    for p in pages {
        assert!(p.valid() == 0, "page {} valid after a failed read", p.pindex());
        obj.lock().free_invalid(p);
    }
    assert_eq!(obj.lock().resident(), 0);
    m.assert_clean();
    // It works: the run comes in one request.
    let before = m.disk.requests();
    let (r, pages) = page_in(FailPlan::Never);
    assert_eq!(r, PagerResult::Ok);
    assert_eq!(m.disk.requests() - before, 1, "eight contiguous blocks in one read");
    assert!(m.disk.requests() > reads);
    for (i, p) in pages.iter().enumerate() {
        assert!(p.all_valid() && p.dirty() == 0);
        assert!(holds(pm, p, 0xD1_0000 + i as u64), "page {i} read back wrong");
        m.release(p);
    }
    assert!(vm::invariants::check_object(&obj).is_empty(), "clean pages read in keep their slots (rule 14)");
    pager.forget(2, 3);
    let v = vm::invariants::check_object(&obj);
    assert!(
        matches!(v.as_slice(), [vm::invariants::Violation::CleanWithoutSlot { pindex: 2, .. }]),
        "a clean page without a slot went unnoticed: {v:?}"
    );
    m.assert_clean();
    obj.deallocate();
    assert_eq!(m.space.avail(), 256);
}

/// The RAM disk is a block device behind a shared reference: two threads
/// page out to one swap space at once, and every page reads back.
#[test]
fn two_threads_share_a_swap_space() {
    let m = machine(512);
    let disk: &dyn BlockDevice = &*m.disk;
    assert_eq!(disk.capacity(), 512 * 8);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let m = &m;
            s.spawn(move || {
                let pager = m.pager();
                let obj = VmObject::new(ObjectKind::Anonymous, 64, m.env);
                let pages: Vec<_> = (0..64).map(|i| m.dirty_page(&obj, i, t << 32 | i)).collect();
                for run in pages.chunks(8) {
                    assert_eq!(pager.put_pages(&obj, run), run.len());
                }
                for (i, p) in pages.iter().enumerate() {
                    fill(m.env.pm, p, 0);
                    p.invalidate();
                    assert_eq!(pager.get_pages(&obj, &[p], 0), PagerResult::Ok);
                    assert!(holds(m.env.pm, p, t << 32 | i as u64), "thread {t} page {i} read back wrong");
                    m.release(p);
                }
                drop(pager);
                obj.deallocate();
            });
        }
    });
    assert_eq!(m.space.avail(), 512);
    m.assert_clean();
}
