//! What serves development rather than programs: the in-kernel test
//! runner, the benchmarks, the sampling profiler, the page-state dump
//! (`mode=vmstate`) and the demo that init runs by default.

pub mod bench;
pub mod demo;
pub mod ktest_runner;
pub mod profile;
pub mod vmstate;
