//! Host benchmark of the page allocator against `buddy_system_allocator`
//! (the frame allocator many Rust kernels use), same workloads, same run.
//! Prints `bench: <name> <value> <unit>` lines; the `_vs_bsa` lines are the
//! ratios that matter (above 1: this allocator is faster).
//!
//! Run with `cargo bench -p vm` (or `./run-qemu.sh bench`).

use std::hint::black_box;
use std::mem::MaybeUninit;
use std::time::Instant;

use buddy_system_allocator::FrameAllocator;
use vm::page::Page;
use vm::phys::{AllocFlags, PhysMem, PhysRange};

const MEMORY: u64 = 256 << 20; // 64 Ki pages
const BASE: u64 = 1 << 30;
const ROUNDS: usize = 5;

fn phys() -> PhysMem {
    let seg = [PhysRange { start: BASE, end: BASE + MEMORY }];
    let n = PhysMem::records_needed(&seg);
    let storage: &'static mut [MaybeUninit<Page>] = Box::leak(Box::new_uninit_slice(n));
    // Records only: the benchmark never touches page contents.
    let pm = PhysMem::new(&seg, storage, None).unwrap();
    pm.add_free_range(seg[0]);
    pm
}

fn bsa() -> FrameAllocator<32> {
    let mut f = FrameAllocator::<32>::new();
    f.add_frame((BASE >> 12) as usize, ((BASE + MEMORY) >> 12) as usize);
    f
}

/// Median of `ROUNDS` timings of `f`, in ns per iteration.
fn measure(iters: u64, mut f: impl FnMut(u64)) -> f64 {
    let mut v: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            f(iters);
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[ROUNDS / 2]
}

/// A tiny deterministic generator, identical for both allocators.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn main() {
    let pm = phys();
    let mut fa = bsa();

    // Order-0 allocate+free pairs.
    let ours = measure(2_000_000, |n| {
        for _ in 0..n {
            let p = pm.alloc(AllocFlags::NOBUSY).unwrap();
            pm.free(black_box(p));
        }
    });
    let theirs = measure(2_000_000, |n| {
        for _ in 0..n {
            let f = fa.alloc(1).unwrap();
            fa.dealloc(black_box(f), 1);
        }
    });
    println!("bench: phys.order0_pair {ours:.1} ns/pair");
    println!("bench: bsa.order0_pair {theirs:.1} ns/pair");
    println!("bench: phys.order0_pair_vs_bsa {:.2} ratio", theirs / ours);

    // Order-9 (2 MiB) allocate+free pairs. Ours updates all 512 records
    // (the FREE flag that catches double frees); the other does not.
    let ours = measure(100_000, |n| {
        for _ in 0..n {
            let p = pm.alloc_order(9, AllocFlags::UNMANAGED).unwrap();
            pm.free_contig(black_box(p), 512);
        }
    });
    let theirs = measure(100_000, |n| {
        for _ in 0..n {
            let f = fa.alloc(512).unwrap();
            fa.dealloc(black_box(f), 512);
        }
    });
    println!("bench: phys.order9_pair {ours:.1} ns/pair");
    println!("bench: bsa.order9_pair {theirs:.1} ns/pair");
    println!("bench: phys.order9_pair_vs_bsa {:.2} ratio", theirs / ours);

    // Mixed: up to 4096 live blocks of 1..16 pages, random alloc/free.
    let ours = measure(1_000_000, |n| {
        let mut rng = Lcg(42);
        let mut live: Vec<(&'static Page, usize)> = Vec::with_capacity(4096);
        for _ in 0..n {
            if live.len() < 4096 && (live.is_empty() || rng.next() % 3 != 0) {
                let order = (rng.next() % 5) as u8;
                if let Some(p) = pm.alloc_order(order, AllocFlags::UNMANAGED) {
                    live.push((p, 1 << order));
                }
            } else {
                let i = rng.next() as usize % live.len();
                let (p, pages) = live.swap_remove(i);
                if pages == 1 { pm.free(p) } else { pm.free_contig(p, pages) }
            }
        }
        for (p, pages) in live {
            if pages == 1 { pm.free(p) } else { pm.free_contig(p, pages) }
        }
    });
    let theirs = measure(1_000_000, |n| {
        let mut rng = Lcg(42);
        let mut live: Vec<(usize, usize)> = Vec::with_capacity(4096);
        for _ in 0..n {
            if live.len() < 4096 && (live.is_empty() || rng.next() % 3 != 0) {
                let pages = 1 << (rng.next() % 5);
                if let Some(f) = fa.alloc(pages) {
                    live.push((f, pages));
                }
            } else {
                let i = rng.next() as usize % live.len();
                let (f, pages) = live.swap_remove(i);
                fa.dealloc(f, pages);
            }
        }
        for (f, pages) in live {
            fa.dealloc(f, pages);
        }
    });
    println!("bench: phys.mixed_op {ours:.1} ns/op");
    println!("bench: bsa.mixed_op {theirs:.1} ns/op");
    println!("bench: phys.mixed_op_vs_bsa {:.2} ratio", theirs / ours);

    println!("bench: phys.page_record {} bytes/page", std::mem::size_of::<Page>());
}
