//! TLB shootdown against real writers: threads on every other CPU keep
//! storing into one page of an address space while this CPU unmaps it,
//! write-protects it, maps a new page over it, or moves it elsewhere
//! (`mremap`). Once the call returns no CPU may write the old frame
//! through the old address: each round takes a freed frame back at once
//! and fills it with a canary that must never change, and a frame still
//! in use (write-protected, or moved) must keep its contents (after the
//! Redox `acid` TLB test).

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ktest::ktest;
use vm::PAGE_SIZE;
use vm::map::{Inherit, Remap};
use vm::phys::AllocFlags;
use vm::pmap::{Pmap, Prot};

use crate::kern::sched;
use crate::mm::vmspace::AddressSpace;
use crate::syscall::uaccess::copy_to_user;

const PAGE: u64 = PAGE_SIZE as u64;
const VA: u64 = 0x5000_0000;
/// Where `mremap` rounds move the page to, and back from.
const MOVED: u64 = VA + 64 * PAGE;
const CANARY: u64 = 0xCA7A_5EED_0DD5_0FF5;

/// One writer's counts: stores that went through, and attempts.
#[derive(Default)]
struct Writer {
    stored: AtomicU64,
    tried: AtomicU64,
}

/// Waits until every writer's counter has passed the value it had in `from`
/// (giving the CPU away meanwhile: on one CPU the writer needs it).
fn wait_past(writers: &[Arc<Writer>], from: &[u64], count: impl Fn(&Writer) -> u64) {
    for (w, &f) in writers.iter().zip(from) {
        while count(w) <= f {
            if crate::arch::percpu::online() > 1 {
                core::hint::spin_loop();
            } else {
                sched::yield_now();
            }
        }
    }
}

/// `mremap` of the page at `from` to `to` (MREMAP_MAYMOVE | MREMAP_FIXED).
fn move_page(from: u64, to: u64) -> Remap {
    Remap {
        old: from,
        old_len: PAGE,
        new_len: PAGE,
        may_move: true,
        fixed: Some(to),
        dont_unmap: false,
        new_addr: to,
        search_from: 0,
        size_limit: u64::MAX,
        wired_limit: u64::MAX,
    }
}

fn map_page(space: &AddressSpace) {
    space.map.lock().map(Some(VA), PAGE, Prot::RW, Prot::ALL, Inherit::Copy, None, false).expect("map the page");
}

/// Takes frame `pa` back from the allocator, if it is the next one this
/// CPU gets (it was just freed here: the order-0 cache gives it first).
fn take_back(pa: u64) -> Option<&'static vm::page::Page> {
    let pm = vm::global();
    let mut others = Vec::new();
    let mut found = None;
    for _ in 0..64 {
        let Some(p) = pm.alloc(AllocFlags::UNMANAGED) else { break };
        if p.phys() == pa {
            found = Some(p);
            break;
        }
        others.push(p);
    }
    for p in others {
        pm.free(p);
    }
    found
}

fn frame_words(pa: u64) -> &'static mut [u64] {
    let pm = vm::global();
    let page = pm.page_of(pa).expect("a frame of the page array");
    // SAFETY: the frame is ours (taken back, or still mapped and only read
    // here), reached through the direct map, 8-byte aligned.
    unsafe { core::slice::from_raw_parts_mut(pm.page_addr(page).unwrap() as *mut u64, PAGE_SIZE / 8) }
}

/// Runs `rounds` rounds, cycling through the three kinds: 0 unmaps, 1
/// write-protects, 2 maps a new page over the old. Panics if a writer
/// got through. Returns the rounds that checked a frame.
pub fn run_rounds(rounds: u64) -> u64 {
    let cpus = crate::arch::smp::online();
    sched::pin_to(Some(0));
    let space = AddressSpace::new().unwrap();
    map_page(&space);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<Arc<Writer>> = (1..cpus.max(2)).map(|_| Arc::new(Writer::default())).collect();
    let mut ids = Vec::new();
    for (i, w) in writers.iter().enumerate() {
        let (w, stop, space) = (w.clone(), stop.clone(), space.clone());
        let cpu = if cpus > 1 { 1 + i } else { 0 };
        let t = sched::prepare_detached("tlb-writer", move || {
            let _on = space.activate();
            let value = [0x11u8 * (i as u8 + 1); 8];
            while !stop.load(Ordering::Relaxed) {
                if copy_to_user(VA + 8 * (i as u64 % 64), &value).is_ok() {
                    w.stored.fetch_add(1, Ordering::SeqCst);
                }
                w.tried.fetch_add(1, Ordering::SeqCst);
                if cpus == 1 {
                    // Sharing the one CPU with the unmapper.
                    sched::yield_now();
                }
            }
        })
        .unwrap()
        .pinned(cpu);
        ids.push(t.start().ok().unwrap());
    }
    let on = space.activate();
    let mut checked = 0;
    for round in 0..rounds {
        // Fault the page in, and let every writer store through it (so
        // that each CPU caches the translation).
        copy_to_user(VA + 8 * 100, &round.to_le_bytes()).expect("the page is mapped");
        let (pa, _) = space.pmap.extract(VA).expect("mapped after the fault");
        let stored: Vec<u64> = writers.iter().map(|w| w.stored.load(Ordering::SeqCst)).collect();
        wait_past(&writers, &stored, |w| w.stored.load(Ordering::SeqCst));
        let kind = round % 4;
        match kind {
            0 => space.map.lock().unmap(VA, VA + PAGE).unwrap(),
            1 => space.map.lock().protect(VA, VA + PAGE, Prot::READ).unwrap(),
            3 => assert_eq!(space.map.lock().remap(&move_page(VA, MOVED)).map(|r| r.addr), Ok(MOVED)),
            _ => {
                let mut map = space.map.lock();
                map.unmap(VA, VA + PAGE).unwrap();
                map.map(Some(VA), PAGE, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
            }
        }
        // The call has returned: the old frame is free (kinds 0, 2),
        // read-only (1), or mapped elsewhere (3). Fill it (or take its
        // contents) and let every writer try twice more.
        let taken = if kind == 1 || kind == 3 { None } else { take_back(pa) };
        let words = frame_words(pa);
        let expect: Vec<u64> = match taken {
            Some(_) => {
                words.fill(CANARY);
                Vec::new()
            }
            None => words.to_vec(),
        };
        let tried: Vec<u64> = writers.iter().map(|w| w.tried.load(Ordering::SeqCst) + 1).collect();
        wait_past(&writers, &tried, |w| w.tried.load(Ordering::SeqCst));
        match taken {
            Some(p) => {
                if let Some(i) = words.iter().position(|&w| w != CANARY) {
                    panic!("round {round} (kind {kind}): frame {pa:#x} written after it was freed: word {i} is {:#x}", words[i]);
                }
                checked += 1;
                vm::global().free(p);
            }
            None if kind == 1 || kind == 3 => {
                assert!(
                    words.iter().eq(expect.iter()),
                    "round {round} (kind {kind}): the page was written through a stale translation"
                );
                checked += 1;
            }
            None => {}
        }
        match kind {
            0 => map_page(&space),
            1 => space.map.lock().protect(VA, VA + PAGE, Prot::RW).unwrap(),
            3 => assert_eq!(space.map.lock().remap(&move_page(MOVED, VA)).map(|r| r.addr), Ok(VA)),
            _ => {}
        }
    }
    drop(on);
    stop.store(true, Ordering::SeqCst);
    for id in ids {
        sched::join(id);
    }
    sched::pin_to(None);
    // Most rounds take the frame back (another CPU's allocation may get it
    // first now and then).
    checked
}

/// 10⁴ rounds with writers on every other CPU. On one CPU there is no
/// other TLB to shoot down: fewer rounds check the local flush and the
/// frame's reuse with a writer that takes turns with the unmapper.
#[ktest(timeout = 600)]
fn no_cpu_writes_a_frame_once_its_unmapping_returns() {
    let rounds = if crate::arch::percpu::online() > 1 { 10_000 } else { 500 };
    let checked = run_rounds(rounds);
    // Most rounds take the frame back (another CPU's allocation may get it
    // first now and then).
    assert!(checked * 10 >= rounds * 9, "only {checked} of {rounds} rounds checked a frame");
}
