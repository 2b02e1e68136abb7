//! Host benchmark of the radix trie against `std::collections::BTreeMap`, in
//! the same run: lookup, insert+remove and lookup-ge, on dense keys (0..N)
//! and sparse keys (random u64), for N = 1k, 64k and 1M, at node widths 16
//! (the one the kernel uses) and 64; and trie memory per resident page.
//! Prints `bench: <name> <value> <unit>` lines; `_vs_btree` lines are
//! throughput ratios (above 1: the trie is faster).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::ptr::NonNull;
use std::time::Instant;

use vm::failpoint::FailPoint;
use vm::radix::{Leaf, Radix};
use vm::zone::{NodeZone, PageSource};

#[derive(Debug)]
#[repr(align(8))]
struct Item {
    key: u64,
}

#[derive(Clone, Copy, Debug)]
struct ItemRef(&'static Item);

// SAFETY: items are leaked (never move or die), 8-aligned; keys are constant.
unsafe impl Leaf for ItemRef {
    fn to_raw(self) -> usize {
        self.0 as *const Item as usize
    }
    unsafe fn from_raw(raw: usize) -> Self {
        // SAFETY: raw came from to_raw.
        ItemRef(unsafe { &*(raw as *const Item) })
    }
    fn key(self) -> u64 {
        self.0.key
    }
}

struct HostPages;

impl PageSource for HostPages {
    fn alloc_page(&self) -> Option<NonNull<u8>> {
        // SAFETY: non-zero size.
        NonNull::new(unsafe { std::alloc::alloc(std::alloc::Layout::from_size_align(4096, 4096).unwrap()) })
    }
    unsafe fn free_page(&self, page: NonNull<u8>) {
        // SAFETY: allocated above with this layout.
        unsafe { std::alloc::dealloc(page.as_ptr(), std::alloc::Layout::from_size_align(4096, 4096).unwrap()) }
    }
}

static PAGES: HostPages = HostPages;
static NEVER: FailPoint = FailPoint::new("bench");

fn lcg(x: &mut u64) -> u64 {
    *x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *x
}

/// ns per operation of `a` and of `b` (each does `n` operations): the best
/// of 5 runs each, the two interleaved so that a noisy moment on the machine
/// hits both sides alike.
fn time2(n: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    let mut best = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        let t = Instant::now();
        a();
        best.0 = best.0.min(t.elapsed().as_nanos() as f64 / n as f64);
        let t = Instant::now();
        b();
        best.1 = best.1.min(t.elapsed().as_nanos() as f64 / n as f64);
    }
    best
}

fn bench<const W: usize>(label: &str, keys: &[u64], items: &[ItemRef]) {
    let n = keys.len();
    let zone: &'static NodeZone = Box::leak(Box::new(NodeZone::new(Radix::<ItemRef, W>::NODE_SIZE, &PAGES, &NEVER)));
    let mut trie: Radix<ItemRef, W> = Radix::new(zone);
    let mut btree: BTreeMap<u64, ItemRef> = BTreeMap::new();
    for &it in items {
        trie.insert(it).unwrap();
        btree.insert(it.key(), it);
    }
    // Probe keys in a shuffled order, so neither side gets a cache-friendly walk.
    let mut probe: Vec<u64> = keys.to_vec();
    let mut x = 7;
    for i in (1..probe.len()).rev() {
        probe.swap(i, (lcg(&mut x) % (i as u64 + 1)) as usize);
    }

    // Each lookup reads the page it finds (the caller always does), on both sides.
    let (t, b) = time2(
        n,
        || {
            probe.iter().for_each(|&k| {
                black_box(trie.lookup(k).map(|v| v.key()));
            })
        },
        || {
            probe.iter().for_each(|&k| {
                black_box(btree.get(&k).map(|v| v.key()));
            })
        },
    );
    println!("bench: radix{W}.{label}.lookup {t:.1} ns/op");
    println!("bench: btree.{label}.lookup {b:.1} ns/op");
    println!("bench: radix{W}.{label}.lookup_vs_btree {:.2} ratio", b / t);

    let (t, b) = time2(
        n,
        || {
            probe.iter().for_each(|&k| {
                black_box(trie.lookup_ge(k.wrapping_add(1)).map(|v| v.key()));
            })
        },
        || {
            probe.iter().for_each(|&k| {
                black_box(btree.range(k.wrapping_add(1)..).next().map(|(_, v)| v.key()));
            })
        },
    );
    println!("bench: radix{W}.{label}.lookup_ge {t:.1} ns/op");
    println!("bench: radix{W}.{label}.lookup_ge_vs_btree {:.2} ratio", b / t);

    // Remove and re-insert each key (one pair per key).
    let (t, b) = time2(
        n,
        || {
            for &it in items {
                black_box(trie.remove(it.key()));
                trie.insert(it).unwrap();
            }
        },
        || {
            for &it in items {
                black_box(btree.remove(&it.key()));
                btree.insert(it.key(), it);
            }
        },
    );
    println!("bench: radix{W}.{label}.remove_insert {t:.1} ns/pair");
    println!("bench: radix{W}.{label}.remove_insert_vs_btree {:.2} ratio", b / t);

    let per_page = (zone.slabs() * 4096) as f64 / n as f64;
    println!("bench: radix{W}.{label}.memory {per_page:.1} bytes/page");
}

fn main() {
    for (n, name) in [(1_000usize, "1k"), (65_536, "64k"), (1_000_000, "1m")] {
        let dense: Vec<u64> = (0..n as u64).collect();
        let mut x = 12345;
        let mut sparse: Vec<u64> = (0..n).map(|_| lcg(&mut x)).collect();
        sparse.sort_unstable();
        sparse.dedup();
        for (kind, keys) in [("dense", &dense), ("sparse", &sparse)] {
            let items: Vec<ItemRef> = keys.iter().map(|&key| ItemRef(Box::leak(Box::new(Item { key })))).collect();
            let label = format!("{kind}_{name}");
            bench::<16>(&label, keys, &items);
            bench::<64>(&label, keys, &items);
        }
    }
}
