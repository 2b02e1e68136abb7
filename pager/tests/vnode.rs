//! The vnode pager on the host: an ext2 image made by mke2fs on a RAM disk
//! that fails on demand, a host model of the page allocator with real
//! backing memory, the software pmap as the MMU, and std threads for the
//! races. What these tests fault in goes through `vm::fault` exactly as a
//! program's access does in the kernel.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::{make_image, pattern};
use pager::block::{BlockDevice, BlockError, FailOn, FailPlan, RamDisk};
use pager::ext2::{FsError, Ino, ROOT_INO};
use pager::vnode::{Disk, Mount, Vnode};
use vm::fault::{FaultError, fault};
use vm::map::{Inherit, MapLock, VmMap};
use vm::object::VmEnv;
use vm::page::Page;
use vm::pmap::Prot;
use vm::pmap::soft::{SoftMachine, SoftPmap};

const P: u64 = vm::PAGE_SIZE as u64;

/// The file the read tests map: `DATA_PAGES` pages of a known pattern.
const DATA: &str = "/data";
const DATA_PAGES: u64 = 2048;

/// Byte `i` of the data file.
fn data_byte(i: u64) -> u8 {
    let i = i as u32;
    i.wrapping_mul(2_654_435_761).rotate_right(13) as u8 ^ (i >> 12) as u8
}

/// The image every test starts from (made once: mke2fs takes a moment):
/// the data file and an empty directory for scratch files.
fn image() -> Vec<u8> {
    static IMAGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let mut model = common::Model::new();
            model.insert(DATA.into(), (0..DATA_PAGES * P).map(data_byte).collect());
            model.insert("/small".into(), pattern(3 * P as usize + 100, 5));
            make_image(&model, 4096, 24)
        })
        .clone()
}

/// A machine of its own for each test: 16 MiB of pages with real contents,
/// the software MMU, and the root filesystem mounted from a RAM disk.
struct Machine {
    env: VmEnv,
    machine: &'static SoftMachine,
    disk: Arc<RamDisk>,
    mount: Arc<Mount>,
    start_free: u64,
}

fn machine() -> Machine {
    machine_with(|disk| Box::new(disk))
}

/// A machine whose root disk is `wrap` of the RAM disk.
fn machine_with(wrap: impl FnOnce(Arc<RamDisk>) -> Disk) -> Machine {
    // The VM's waits as std threads make them: a sleeping-lock waiter
    // yields while the lock is held, and a fault told AGAIN (or short of
    // memory) waits a moment before it retries, as the kernel's vm_wait.
    vm::set_sleep(
        |_, held| {
            if held() {
                std::thread::yield_now()
            }
        },
        |_| {},
    );
    vm::set_vm_wait(|| {
        std::thread::sleep(std::time::Duration::from_micros(50));
        true
    });
    // The lock order checked as in a debug kernel: each std thread keeps
    // its own held locks.
    std::thread_local! {
        static HELD: std::cell::RefCell<vm::witness::Held> = const { std::cell::RefCell::new(vm::witness::Held::new()) };
    }
    vm::witness::set_held(|f| HELD.with(|h| f(&mut h.borrow_mut())));
    let machine: &'static SoftMachine = Box::leak(Box::new(SoftMachine::new()));
    let (env, _) = common::host_vm(16, machine);
    let pm = env.pm;
    let disk = Arc::new(RamDisk::from_bytes(image()));
    let mount = Mount::new(wrap(disk.clone()), env, || 1_700_000_000).unwrap();
    let start_free = pm.free_count();
    Machine { env, machine, disk, mount, start_free }
}

/// An address space: its map and its pmap.
struct Space {
    map: MapLock,
    pmap: Arc<SoftPmap>,
}

impl Machine {
    /// The vnode of `path`.
    fn vnode(&self, path: &str) -> Arc<Vnode> {
        let (ino, size) = {
            let mut fs = self.mount.fs.lock();
            let ino = fs.lookup(path).unwrap();
            (ino, fs.stat(ino).unwrap().size)
        };
        self.mount.vnode(ino, size).unwrap()
    }

    /// Makes `/<name>` afresh with `bytes` in it; returns its inode and
    /// vnode.
    fn scratch_file(&self, name: &str, bytes: &[u8]) -> (Ino, Arc<Vnode>) {
        let ino = {
            let mut fs = self.mount.fs.lock();
            let ino = fs.create(ROOT_INO, name, 0o644).unwrap();
            fs.write(ino, 0, bytes).unwrap();
            ino
        };
        (ino, self.mount.vnode(ino, bytes.len() as u64).unwrap())
    }

    /// A new address space with the whole file of `v` mapped shared with
    /// protection `prot`; the mapping's address.
    fn map_file(&self, v: &Vnode, prot: Prot) -> (Space, u64) {
        self.map_object_at(v, 0, v.size.load(Ordering::Acquire).div_ceil(P) * P, prot)
    }

    /// A new address space with `len` bytes of the object of `v` from page
    /// `pindex` mapped shared.
    fn map_object_at(&self, v: &Vnode, pindex: u64, len: u64, prot: Prot) -> (Space, u64) {
        let pmap = self.machine.new_pmap();
        let map = MapLock::new(VmMap::new(P, 1 << 47, pmap.clone(), self.env));
        v.object.reference();
        let a = map.lock().map(None, len, prot, Prot::ALL, Inherit::Share, Some((v.object.clone(), pindex)), false).unwrap();
        (Space { map, pmap }, a)
    }

    /// An access as a CPU makes it: through the MMU, faulting as needed;
    /// `f` gets the byte's address while the translation holds.
    fn access<R>(&self, s: &Space, va: u64, kind: Prot, f: impl Fn(*mut u8) -> R) -> Result<R, FaultError> {
        // A racing flush may evict the page between the fault and the
        // access: a few rounds are normal, a thousand are not.
        for _ in 0..1000 {
            let at = |page: &'static Page| self.env.pm.page_addr(page).unwrap().wrapping_add((va % P) as usize);
            match s.pmap.access(va, kind, |page| f(at(page))) {
                Ok(r) => return Ok(r),
                Err(_) => {
                    fault(&s.map, va, kind, false)?;
                }
            }
        }
        panic!("fault at {va:#x} succeeded a thousand times but the access still traps");
    }

    fn read_u64(&self, s: &Space, va: u64) -> Result<u64, FaultError> {
        // SAFETY: the address is in a mapped, valid page of the host
        // model, held mapped while the closure runs; aligned by the caller.
        self.access(s, va, Prot::READ, |p| unsafe { (p as *const u64).read_volatile() })
    }

    fn write_u64(&self, s: &Space, va: u64, value: u64) -> Result<(), FaultError> {
        // SAFETY: as in `read_u64`, and the mapping allows writes.
        self.access(s, va, Prot::WRITE, |p| unsafe { (p as *mut u64).write_volatile(value) })
    }

    /// The 8 bytes at `off` of file `ino`, as the filesystem reads them.
    fn on_disk(&self, ino: Ino, off: u64) -> u64 {
        let mut b = [0u8; 8];
        self.mount.fs.lock().read(ino, off, &mut b).unwrap();
        u64::from_le_bytes(b)
    }

    fn assert_clean(&self) {
        let v = vm::invariants::check(self.env.pm);
        assert!(v.is_empty(), "invariant violations: {v:?}");
    }

    /// After the test's spaces and vnodes are gone: every page back, no
    /// trie node left, the invariants hold.
    fn done(self) {
        self.mount.drop_unused();
        assert_eq!(self.mount.vnodes_in_use(), 0, "a vnode is still in use");
        self.assert_clean();
        self.env.zone.drain();
        self.env.pm.drain_cache();
        assert_eq!(self.env.pm.free_count(), self.start_free, "pages leaked");
        assert_eq!(self.env.zone.in_use(), 0, "trie nodes leaked");
        assert_eq!(vm::witness::held_count(), Some(0), "a ranked lock is still held");
    }
}

/// A file mapped shared reads the file's bytes, page by page, and the
/// mapping's pages are the vnode's object's.
#[test]
fn a_mapped_file_reads_its_bytes() {
    let m = machine();
    let v = m.vnode(DATA);
    let (s, a) = m.map_file(&v, Prot::READ);
    for i in (0..DATA_PAGES).step_by(97) {
        let off = i * P + 8 * (i % 500);
        let want = u64::from_le_bytes(std::array::from_fn(|k| data_byte(off + k as u64)));
        assert_eq!(m.read_u64(&s, a + off).unwrap(), want, "page {i}");
    }
    assert!(v.object.lock().resident() > 0);
    drop(s);
    drop(v);
    m.done();
}

/// Read-ahead: a cold sequential read of the data file through a mapping
/// takes at least 8 times fewer block requests than one page per fault,
/// and reads the same bytes. The window grows as FreeBSD's does: the
/// requests of a sequential read are about the file's pages over the
/// largest window.
#[test]
fn read_ahead_cuts_block_requests() {
    let m = machine();
    let read_all = |ahead: bool| {
        m.mount.set_read_ahead(ahead);
        let v = m.vnode(DATA);
        assert_eq!(v.object.lock().resident(), 0, "the file's pages are not cached yet");
        let (s, a) = m.map_file(&v, Prot::READ);
        let (before, disk_before) = (m.mount.stats.reads.load(Ordering::Relaxed), m.disk.requests());
        let mut sum = 0u64;
        for i in 0..DATA_PAGES {
            sum = sum.wrapping_add(m.read_u64(&s, a + i * P).unwrap());
        }
        let requests = m.mount.stats.reads.load(Ordering::Relaxed) - before;
        // The disk also serves the filesystem's own reads (indirect blocks).
        let disk = m.disk.requests() - disk_before;
        assert!((requests..requests + 8).contains(&disk), "{requests} pager requests, {disk} disk requests");
        drop(s);
        drop(v);
        m.mount.drop_unused();
        (requests, sum)
    };
    let (clustered, sum) = read_all(true);
    let (single, sum2) = read_all(false);
    assert_eq!(sum, sum2, "the same bytes either way");
    assert_eq!(single, DATA_PAGES, "one request per page without read-ahead");
    assert!(single >= 8 * clustered, "read-ahead: {clustered} requests against {single}");
    assert!(clustered >= DATA_PAGES / (pager::vnode::AHEAD_MAX + 1), "{clustered} requests: more than a window at a time");
    m.mount.set_read_ahead(true);
    m.done();
}

/// Rule 6: when the disk fails every read, a fault gets an I/O error, and
/// the page and every read-ahead page allocated for it are freed: none is
/// left resident, invalid or busy. When the disk works again the same
/// faults succeed, read-ahead with them.
#[test]
fn read_errors_free_every_read_ahead_page() {
    let m = machine();
    let v = m.vnode(DATA);
    let (s, a) = m.map_file(&v, Prot::READ);
    m.disk.set_fail_on(FailOn::Reads);
    m.disk.set_fail(FailPlan::Always);
    for i in [0u64, 1, 100, DATA_PAGES - 1] {
        assert_eq!(fault(&s.map, a + i * P, Prot::READ, false), Err(FaultError::Io), "page {i}");
        assert_eq!(v.object.lock().resident(), 0, "a page of a failed read stayed in the object");
        m.assert_clean();
    }
    m.disk.set_fail(FailPlan::Never);
    assert!(fault(&s.map, a + 100 * P, Prot::READ, false).is_ok());
    assert!(v.object.lock().resident() > 1, "read-ahead came with it");
    m.assert_clean();
    drop(s);
    drop(v);
    m.done();
}

/// With reads failing 5 % of the time, 1,000 rounds of map, fault, read
/// and unmap: every failure is an I/O error, the rest read the file's
/// bytes, and no page is leaked.
#[test]
fn a_thousand_rounds_with_failing_reads() {
    let m = machine();
    let v = m.vnode(DATA);
    m.disk.set_fail_on(FailOn::Reads);
    m.disk.set_fail(FailPlan::Probability { ppm: 50_000, seed: 7 });
    let (mut ok, mut failed) = (0u32, 0u32);
    for round in 0..1000u64 {
        let (s, a) = m.map_file(&v, Prot::READ);
        let page = (round * 37) % DATA_PAGES;
        match fault(&s.map, a + page * P, Prot::READ, false) {
            Ok(_) => {
                let off = page * P + 5;
                let got = m.access(&s, a + off, Prot::READ, |p| {
                    // SAFETY: a byte of a mapped, valid page, held mapped.
                    unsafe { p.read_volatile() }
                });
                assert_eq!(got, Ok(data_byte(off)), "round {round}: the file's byte");
                ok += 1;
            }
            Err(FaultError::Io) => failed += 1,
            Err(e) => panic!("round {round}: {e:?}"),
        }
        drop(s);
        // Cold again for the next round.
        v.invalidate(0, u64::MAX);
        assert_eq!(v.object.lock().resident(), 0);
    }
    m.disk.set_fail(FailPlan::Never);
    assert_eq!(ok + failed, 1000);
    assert!(failed > 10 && ok > 800, "{failed} failures, {ok} reads");
    drop(v);
    m.done();
}

/// A page index whose byte offset does not fit in 64 bits (2^52 and up:
/// mmap refuses such ranges, but an object may be mapped at any index) is
/// past the end of the file: the fault is Bad (SIGBUS), not an overflow in
/// the pager. So is a page past the end of a short file.
#[test]
fn a_page_past_the_end_is_bad() {
    let m = machine();
    let v = m.vnode("/small");
    let (s, a) = m.map_object_at(&v, (1u64 << 52) - 1, 2 * P, Prot::READ);
    assert_eq!(fault(&s.map, a, Prot::READ, false), Err(FaultError::Bad), "index 2^52 - 1");
    assert_eq!(fault(&s.map, a + P, Prot::READ, false), Err(FaultError::Bad), "index 2^52");
    drop(s);
    // The file has 3 pages and 100 bytes: page 3 is its last, page 4 is past it.
    let (s, a) = m.map_object_at(&v, 0, 5 * P, Prot::READ);
    assert!(fault(&s.map, a + 3 * P, Prot::READ, false).is_ok());
    assert_eq!(m.read_u64(&s, a + 3 * P + 200), Ok(0), "zero past the end within the last page");
    assert_eq!(fault(&s.map, a + 4 * P, Prot::READ, false), Err(FaultError::Bad), "a page past the end");
    drop(s);
    drop(v);
    m.assert_clean();
    m.done();
}

/// Pages written through a shared mapping reach the disk even when writes
/// fail: with every block write failing, a flush reports the error and
/// the pages stay dirty and resident (nothing on disk changes, nothing is
/// lost); with writes failing at random, retried flushes get every round's
/// data to disk; unmapped, evicted and mapped again, the data is read back
/// from the disk. Runs of dirty pages go in one write each.
#[test]
fn write_errors_keep_pages_dirty_until_written() {
    const PAGES: u64 = 8;
    let m = machine();
    let (ino, v) = m.scratch_file("write-errors", &[0u8; (PAGES * P) as usize]);
    let (s, a) = m.map_file(&v, Prot::RW);
    let write_round = |r: u64| {
        for i in 0..PAGES {
            m.write_u64(&s, a + i * P + 8, r * 100 + i).unwrap();
        }
    };

    // Every write fails: the error comes back, the pages stay dirty.
    write_round(1);
    m.disk.set_fail_on(FailOn::Writes);
    m.disk.set_fail(FailPlan::Always);
    assert!(v.flush(0, u64::MAX).is_err(), "a flush with every write failing succeeded");
    assert!(v.flush_and_evict(0, u64::MAX).is_err());
    m.disk.set_fail(FailPlan::Never);
    assert_eq!(v.object.lock().resident() as u64, PAGES, "dirty pages left the object");
    for i in 0..PAGES {
        let p = v.object.lock().lookup(i).unwrap();
        assert!(p.dirty() != 0, "page {i}: clean after a failed write");
        assert_eq!(m.on_disk(ino, i * P + 8), 0, "page {i}: reached the disk through a failed write");
    }
    let writes = m.mount.stats.writes.load(Ordering::Relaxed);
    v.flush(0, u64::MAX).unwrap();
    assert_eq!(m.mount.stats.writes.load(Ordering::Relaxed) - writes, 1, "eight dirty pages in a row: one write");
    for i in 0..PAGES {
        assert_eq!(m.on_disk(ino, i * P + 8), 100 + i, "page {i}: not written once the disk worked");
    }

    // Writes fail at random: each round is flushed until it succeeds.
    let mut failures = 0;
    for r in 2..=41 {
        write_round(r);
        m.disk.set_fail(FailPlan::Probability { ppm: 300_000, seed: 11 + r });
        let mut tries = 0;
        while v.flush(0, u64::MAX).is_err() {
            failures += 1;
            tries += 1;
            assert!(tries < 100, "round {r}: a hundred failed flushes");
        }
        m.disk.set_fail(FailPlan::Never);
        for i in 0..PAGES {
            assert_eq!(m.on_disk(ino, i * P + 8), r * 100 + i, "round {r} page {i}");
        }
    }
    assert!(failures > 0, "no write failed at 30 %");

    // Unmapped and evicted, then mapped again: the data is the disk's.
    drop(s);
    v.flush_and_evict(0, u64::MAX).unwrap();
    assert_eq!(v.object.lock().resident(), 0, "clean, unmapped pages stayed");
    let (s, a) = m.map_file(&v, Prot::READ);
    for i in 0..PAGES {
        assert_eq!(m.read_u64(&s, a + i * P + 8), Ok(4100 + i));
    }
    drop(s);
    drop(v);
    m.done();
}

/// Rule 8: the flush path (holding the filesystem lock, it writes dirty
/// pages back and then drops the clean ones, waiting for busy pages) and
/// the fault path (busy pages held, only *trying* the lock) run at once on
/// two threads for 100 rounds without deadlock, and every round's data
/// arrives. Each round's writes fault the evicted pages back in through
/// the pager, so faults meet the held lock: some page-ins must have
/// answered AGAIN and been retried.
#[test]
fn flush_and_faults_race_without_deadlock() {
    const PAGES: u64 = 8;
    const ROUNDS: u64 = 100;
    // A disk whose writes take time, as a real one's do: the flusher holds
    // the filesystem lock across them, and that is when faults come.
    let m = machine_with(|disk| Box::new(SlowWrites(disk)));
    let (ino, v) = m.scratch_file("race", &[0u8; (PAGES * P) as usize]);
    // One page per page-in, so that each page of a round faults on its own
    // (read-ahead would bring them all in with the first).
    m.mount.set_read_ahead(false);
    let done = AtomicBool::new(false);
    let rounds = AtomicU64::new(0);
    let flushes = AtomicU64::new(0);
    let mut evicted = 0usize;
    let finished = Arc::new(AtomicBool::new(false));
    watchdog("flush_and_faults_race_without_deadlock", 60, finished.clone());
    std::thread::scope(|scope| {
        // The faulting thread: writes the round number through a shared
        // mapping, page by page, and reads it back.
        let faulter = scope.spawn(|| {
            let (s, a) = m.map_file(&v, Prot::RW);
            for r in 1..=ROUNDS {
                for i in 0..PAGES {
                    let va = a + i * P;
                    assert_eq!(m.read_u64(&s, va).unwrap(), r - 1, "round {r} page {i}: the last round's data");
                    m.write_u64(&s, va, r).unwrap();
                    assert_eq!(m.read_u64(&s, va).unwrap(), r);
                    std::thread::yield_now();
                }
                rounds.store(r, Ordering::Relaxed);
                // Each round meets at least one whole flush and eviction,
                // however the two threads are scheduled.
                let seen = flushes.load(Ordering::Acquire);
                while flushes.load(Ordering::Acquire) < seen + 2 {
                    std::thread::yield_now();
                }
            }
            done.store(true, Ordering::Release);
        });
        // The flushing thread (this one): writes the pages back and evicts
        // them while the faults go on.
        while !done.load(Ordering::Acquire) && !faulter.is_finished() {
            evicted += v.flush_and_evict(0, u64::MAX).unwrap();
            // Release: the faulter's Acquire sees the flush done.
            flushes.fetch_add(1, Ordering::Release);
            std::thread::yield_now();
        }
        faulter.join().unwrap();
    });
    finished.store(true, Ordering::Relaxed);
    assert_eq!(rounds.load(Ordering::Relaxed), ROUNDS);
    v.flush(0, u64::MAX).unwrap();
    for i in 0..PAGES {
        assert_eq!(m.on_disk(ino, i * P), ROUNDS, "page {i} on disk has the last round");
    }
    let again = m.mount.stats.again.load(Ordering::Relaxed);
    let flushes = flushes.load(Ordering::Relaxed);
    println!("flush and faults: {flushes} flushes evicted {evicted} pages; {again} page-ins answered AGAIN");
    assert!(evicted > 0, "the flusher never evicted a page");
    assert!(again > 0, "no fault met the held lock: the race was not exercised");
    drop(v);
    m.done();
}

/// Ends the test process if `finished` is not set within `secs` seconds:
/// a deadlock between threads would otherwise hang the run.
fn watchdog(test: &'static str, secs: u64, finished: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        for _ in 0..secs * 10 {
            if finished.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("{test}: not done after {secs} s: deadlock");
        std::process::exit(101);
    });
}

/// A disk whose writes take a while (20 us) before they are done.
struct SlowWrites(Arc<RamDisk>);

impl BlockDevice for SlowWrites {
    fn capacity(&self) -> u64 {
        self.0.capacity()
    }
    fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.0.read(sector, buf)
    }
    fn write(&self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        std::thread::sleep(std::time::Duration::from_micros(20));
        self.0.write(sector, buf)
    }
}

/// A file unlinked while it is in use keeps its inode (and its data, read
/// through the mapping) until its vnode goes; then the inode is freed.
#[test]
fn an_unlinked_file_in_use_keeps_its_inode_until_its_vnode_goes() {
    let m = machine();
    let (ino, v) = m.scratch_file("doomed", &pattern(2 * P as usize, 9));
    let free_inodes = || m.mount.fs.lock().free_counts().1;
    let (s, a) = m.map_file(&v, Prot::READ);
    let before = free_inodes();
    m.mount.unlink(ROOT_INO, b"doomed").unwrap();
    assert_eq!(m.mount.fs.lock().lookup("/doomed"), Err(FsError::NotFound), "the name is gone");
    assert_eq!(free_inodes(), before, "the inode was freed while in use");
    let want = u64::from_le_bytes(pattern(2 * P as usize, 9)[P as usize..P as usize + 8].try_into().unwrap());
    assert_eq!(m.read_u64(&s, a + P), Ok(want), "the data is still there");
    drop(s);
    drop(v);
    m.mount.drop_unused();
    assert_eq!(free_inodes(), before + 1, "the inode was not freed when its vnode went");
    let _ = ino;
    m.done();
}
