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

/// The two allocators behind one interface, so each workload is written once.
trait Frames {
    type Block: Copy;
    fn alloc(&mut self, order: u8) -> Option<Self::Block>;
    fn free(&mut self, block: Self::Block, order: u8);
}

impl Frames for &PhysMem {
    type Block = &'static Page;
    fn alloc(&mut self, order: u8) -> Option<&'static Page> {
        if order == 0 { PhysMem::alloc(self, AllocFlags::NOBUSY) } else { self.alloc_order(order, AllocFlags::UNMANAGED) }
    }
    fn free(&mut self, p: &'static Page, order: u8) {
        // Ours updates every record of the block (the FREE flag that catches
        // double frees); the other allocator keeps no per-page state.
        if order == 0 { PhysMem::free(self, p) } else { self.free_contig(p, 1 << order) }
    }
}

impl Frames for FrameAllocator<32> {
    type Block = usize;
    fn alloc(&mut self, order: u8) -> Option<usize> {
        FrameAllocator::alloc(self, 1 << order)
    }
    fn free(&mut self, f: usize, order: u8) {
        self.dealloc(f, 1 << order)
    }
}

/// Allocate+free pairs of one order, ns per pair.
fn pairs<F: Frames>(a: &mut F, order: u8, iters: u64) -> f64 {
    measure(iters, |n| {
        for _ in 0..n {
            let b = a.alloc(order).unwrap();
            a.free(black_box(b), order);
        }
    })
}

/// Up to 4096 live blocks of 1..16 pages, allocated and freed at random; ns per op.
fn mixed<F: Frames>(a: &mut F, iters: u64) -> f64 {
    measure(iters, |n| {
        let mut rng = Lcg(42);
        let mut live: Vec<(F::Block, u8)> = Vec::with_capacity(4096);
        for _ in 0..n {
            if live.len() < 4096 && (live.is_empty() || !rng.next().is_multiple_of(3)) {
                let order = (rng.next() % 5) as u8;
                if let Some(b) = a.alloc(order) {
                    live.push((b, order));
                }
            } else {
                let (b, order) = live.swap_remove(rng.next() as usize % live.len());
                a.free(b, order);
            }
        }
        for (b, order) in live {
            a.free(b, order);
        }
    })
}

fn report(name: &str, unit: &str, ours: f64, theirs: f64) {
    println!("bench: phys.{name} {ours:.1} {unit}");
    println!("bench: bsa.{name} {theirs:.1} {unit}");
    println!("bench: phys.{name}_vs_bsa {:.2} ratio", theirs / ours);
}

fn main() {
    let pm = phys();
    let mut ours = &pm;
    let mut theirs = bsa();

    report("order0_pair", "ns/pair", pairs(&mut ours, 0, 2_000_000), pairs(&mut theirs, 0, 2_000_000));
    report("order9_pair", "ns/pair", pairs(&mut ours, 9, 100_000), pairs(&mut theirs, 9, 100_000));
    report("mixed_op", "ns/op", mixed(&mut ours, 1_000_000), mixed(&mut theirs, 1_000_000));
    println!("bench: phys.page_record {} bytes/page", std::mem::size_of::<Page>());
}
