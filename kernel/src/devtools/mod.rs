//! What serves development rather than programs: the in-kernel test
//! runner, the benchmarks, the sampling profiler, the page-state dump
//! (`mode=vmstate`), the demo that init runs by default, and the TLB
//! shootdown check that both the tests and the benchmarks run.

pub mod bench;
pub mod bench_smp;
pub mod demo;
pub mod ktest_runner;
pub mod profile;
pub mod tlb_acid;
pub mod vmstate;
