//! The VM with several CPUs faulting at once, each side on its own CPU
//! (the suite runs at `-smp 4`; on fewer CPUs the threads share them):
//! one file object, one anonymous object, and disjoint objects, with the
//! data checked; and seed 004's race, a flush holding the file's lock
//! against faults on the pages it waits for, on two CPUs.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use ktest::ktest;
use vm::PAGE_SIZE;
use vm::map::Inherit;
use vm::object::{ObjectKind, PagerResult, VmObject};
use vm::pmap::Prot;

use crate::kern::sched::{self, ThreadId};
use crate::mm::vmspace::AddressSpace;
use crate::syscall::uaccess::{copy_from_user, copy_to_user};

const PAGE: u64 = PAGE_SIZE as u64;
/// Threads of the tests: one per CPU of a four-CPU boot.
const THREADS: usize = 4;

/// Starts `THREADS` threads in the current address space, thread `i`
/// pinned to CPU `i` (modulo the CPUs online), each running `f(i)`, and
/// waits for them all.
fn on_every_cpu(f: impl Fn(usize) + Send + Sync + 'static) {
    let f = Arc::new(f);
    let cpus = crate::arch::percpu::online();
    let ids: Vec<ThreadId> = (0..THREADS)
        .map(|i| {
            let f = f.clone();
            sched::spawn("smp-fault", move || {
                sched::pin_to(Some(i % cpus));
                f(i);
            })
            .expect("memory for a test thread")
        })
        .collect();
    for id in ids {
        sched::join(id);
    }
}

/// The byte page `pindex` of the test file holds.
fn file_byte(pindex: u64) -> u8 {
    (pindex as u8) ^ 0x5A
}

/// A file that takes its time to read a page (so that the other faults on
/// it find it busy and sleep), and counts reads per page.
struct SlowFile {
    reads: Vec<AtomicU32>,
}

impl vm::object::Pager for SlowFile {
    fn has_page(&self, pindex: u64) -> Option<(u64, u64)> {
        ((pindex as usize) < self.reads.len()).then_some((0, 0))
    }

    fn get_page(&self, _: &VmObject, page: &'static vm::page::Page) -> PagerResult {
        self.reads[page.pindex() as usize].fetch_add(1, Ordering::SeqCst);
        // A device's latency: long enough for the others to arrive.
        let t0 = crate::kern::time::rdtsc();
        while crate::kern::time::tsc_to_us(crate::kern::time::rdtsc() - t0) < 200 {
            core::hint::spin_loop();
        }
        let pm = vm::global();
        // SAFETY: the page is exclusively busy for this read, and the
        // direct map covers it.
        unsafe { core::ptr::write_bytes(pm.page_addr(page).unwrap(), file_byte(page.pindex()), PAGE_SIZE) };
        page.set_all_valid();
        PagerResult::Ok
    }
}

/// Four CPUs read the same 64 pages of one file object, each from another
/// page on (so that every page is wanted by several at once): each page is
/// read in once, by the first fault; the others sleep on the busy page and
/// find it valid. Every byte read is the file's.
#[ktest(timeout = 120)]
fn four_cpus_fault_one_file_object() {
    const PAGES: u64 = 64;
    let space = AddressSpace::new().unwrap();
    let pager = Arc::new(SlowFile { reads: (0..PAGES).map(|_| AtomicU32::new(0)).collect() });
    let file = VmObject::new(ObjectKind::Vnode, PAGES, vm::kernel_env());
    file.lock().set_pager(pager.clone());
    let a = space.map.lock().map(None, PAGES * PAGE, Prot::READ, Prot::READ, Inherit::Share, Some((file, 0)), false).unwrap();
    let _on = space.activate();
    let wrong = Arc::new(AtomicU64::new(0));
    let w = wrong.clone();
    on_every_cpu(move |i| {
        for k in 0..PAGES {
            let p = (k + i as u64 * PAGES / THREADS as u64) % PAGES;
            let mut b = [0u8; 8];
            copy_from_user(&mut b, a + p * PAGE + 8 * i as u64).expect("the file is mapped");
            if b != [file_byte(p); 8] {
                w.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    assert_eq!(wrong.load(Ordering::SeqCst), 0, "reads that did not see the file's data");
    for (p, r) in pager.reads.iter().enumerate() {
        assert_eq!(r.load(Ordering::SeqCst), 1, "page {p} was read in {} times", r.load(Ordering::SeqCst));
    }
}

/// Four CPUs write their own word of every page of one shared anonymous
/// object, all starting at the same page: the zero-fill faults of a page
/// race, one wins, and no CPU's word is lost to another's page.
#[ktest(timeout = 120)]
fn four_cpus_fault_one_anonymous_object() {
    const PAGES: u64 = 256;
    let space = AddressSpace::new().unwrap();
    let a = space.map.lock().map(None, PAGES * PAGE, Prot::RW, Prot::ALL, Inherit::Share, None, false).unwrap();
    let _on = space.activate();
    on_every_cpu(move |i| {
        for p in 0..PAGES {
            let v = (p << 8) | i as u64;
            copy_to_user(a + p * PAGE + 8 * i as u64, &v.to_le_bytes()).expect("the range is mapped");
        }
    });
    for p in 0..PAGES {
        let mut b = [0u8; 8 * THREADS];
        copy_from_user(&mut b, a + p * PAGE).unwrap();
        for i in 0..THREADS {
            let v = u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().unwrap());
            assert_eq!(v, (p << 8) | i as u64, "page {p}: thread {i}'s word");
        }
    }
    let object = space.map.lock().lookup(a, Prot::READ).unwrap().object;
    assert_eq!(object.lock().resident() as u64, PAGES, "one page per index");
}

/// Four CPUs each map, fill, check and unmap their own anonymous range,
/// round after round: the allocator's per-CPU caches, the page queues and
/// the shootdowns of four address-space changes at once.
#[ktest(timeout = 120)]
fn four_cpus_fault_disjoint_objects() {
    const PAGES: u64 = 128;
    const ROUNDS: u64 = 8;
    let space = Arc::new(AddressSpace::new().unwrap());
    let _on = space.activate();
    let s = space.clone();
    on_every_cpu(move |i| {
        for round in 0..ROUNDS {
            let a = s.map.lock().map(None, PAGES * PAGE, Prot::RW, Prot::ALL, Inherit::Copy, None, false).expect("address space");
            for p in 0..PAGES {
                let v = (round << 40) | (p << 8) | i as u64;
                copy_to_user(a + p * PAGE + 64, &v.to_le_bytes()).expect("the range is mapped");
            }
            for p in 0..PAGES {
                let mut b = [0u8; 8];
                copy_from_user(&mut b, a + p * PAGE + 64).unwrap();
                assert_eq!(u64::from_le_bytes(b), (round << 40) | (p << 8) | i as u64, "thread {i} round {round} page {p}");
            }
            s.map.lock().unmap(a, a + PAGES * PAGE).unwrap();
        }
    });
}

/// Seed 004 on two CPUs: a flush and eviction of a file holds the file's
/// lock and waits for its busy pages, while a writer on another CPU faults
/// those pages back in (each fault busies its page, then only tries the
/// file's lock, rule 8). 1,000 rounds; neither side may wait for the
/// other for good, and the file ends with the last value written to each
/// page.
#[ktest(timeout = 300)]
fn flush_against_faults_on_two_cpus() {
    const PAGES: u64 = 8;
    const ROUNDS: u64 = 1000;
    let m = crate::fs::root().expect("no root filesystem");
    let (dir, name) = (b"/tmp", b"smp-seed-004");
    let ino = {
        let mut fs = m.fs.lock();
        let dir = fs.lookup(dir).unwrap();
        let _ = fs.unlink(dir, name);
        let ino = fs.create(dir, name, 0o644).unwrap();
        fs.write(ino, 0, &alloc::vec![0u8; (PAGES * PAGE) as usize]).unwrap();
        ino
    };
    let v = m.vnode(ino, PAGES * PAGE).unwrap();
    let space = AddressSpace::new().unwrap();
    v.object.reference();
    let a = space
        .map
        .lock()
        .map(None, PAGES * PAGE, Prot::RW, Prot::ALL, Inherit::Share, Some((v.object.clone(), 0)), false)
        .unwrap();
    let _on = space.activate();
    let again = m.stats.again.load(Ordering::Relaxed);
    let done = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (done, written) = (done.clone(), written.clone());
        sched::spawn("smp-004-writer", move || {
            sched::pin_to(Some(1 % crate::arch::percpu::online()));
            let mut round = 1u64;
            while !done.load(Ordering::SeqCst) {
                for p in 0..PAGES {
                    copy_to_user(a + p * PAGE, &round.to_le_bytes()).expect("the file is mapped");
                }
                // SeqCst: the flusher reads it after its last flush.
                written.store(round, Ordering::SeqCst);
                round += 1;
                if crate::arch::percpu::online() == 1 {
                    sched::yield_now();
                }
            }
        })
        .expect("memory for the writer")
    };
    sched::pin_to(Some(0));
    let mut evicted = 0;
    for _ in 0..ROUNDS {
        evicted += v.flush_and_evict(0, PAGES * PAGE).expect("the flush");
        if crate::arch::percpu::online() == 1 {
            sched::yield_now();
        }
    }
    done.store(true, Ordering::SeqCst);
    sched::join(writer);
    sched::pin_to(None);
    let last = written.load(Ordering::SeqCst);
    v.flush(0, PAGES * PAGE).unwrap();
    for p in 0..PAGES {
        let mut b = [0u8; 8];
        m.fs.lock().read(ino, p * PAGE, &mut b).unwrap();
        assert_eq!(u64::from_le_bytes(b), last, "page {p} on disk after the last round");
    }
    log::info!(
        "seed 004 on two CPUs: {ROUNDS} flushes evicted {evicted} pages; {last} rounds written; {} faults answered AGAIN",
        m.stats.again.load(Ordering::Relaxed) - again
    );
    drop(_on);
    drop(space);
    drop(v);
    m.drop_unused();
    let mut fs = m.fs.lock();
    let dir = fs.lookup(dir).unwrap();
    fs.unlink(dir, name).unwrap();
}
