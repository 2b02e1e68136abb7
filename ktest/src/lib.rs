//! The in-kernel test registry.
//!
//! A test is an ordinary function marked `#[ktest]` next to the code it tests, in
//! any of the kernel's crates (`kernel`, `vm`, `pager`). The attribute places a
//! [`Test`] record in the link-time table [`TESTS`]; the kernel's test runner
//! (`kernel/src/ktest_runner.rs`) walks that table when it is booted in test mode.
//! Nothing registers at run time, so a test that is compiled is a test that runs.
//!
//! ```ignore
//! use ktest::ktest;
//!
//! #[ktest]
//! fn two_plus_two() {
//!     assert_eq!(2 + 2, 4);
//! }
//!
//! #[ktest(should_panic = "double free")]
//! fn double_free_is_caught() { /* ... */ }
//!
//! #[ktest(expect_fault = 14, timeout = 20)]
//! fn unmapped_read_faults() { /* ... */ }
//! ```
//!
//! Tests are compiled only for the kernel target (`target_os = "none"`): on the
//! host the attribute removes the function, and host unit tests use `#[test]`.

#![no_std]

pub use ktest_macros::ktest;

#[doc(hidden)]
pub use linkme;

/// What a test must do to pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Return normally.
    Return,
    /// Panic with a message that contains this text.
    Panic(&'static str),
    /// Take this CPU exception (vector number, e.g. 14 for a page fault). The
    /// test may narrow it further with the kernel's `expect_fault_address`.
    Fault(u8),
}

/// One in-kernel test, as the `#[ktest]` attribute records it.
#[derive(Debug)]
pub struct Test {
    /// `module_path!()` of the function, e.g. `vm::phys::tests`.
    pub module: &'static str,
    /// The function's name.
    pub name: &'static str,
    pub file: &'static str,
    pub line: u32,
    pub expect: Expect,
    /// Host-side limit on the test's run time, in seconds. A test that runs
    /// longer is reported as hung and the kernel is restarted after it.
    pub timeout_secs: u32,
    pub func: fn(),
}

/// Default per-test time limit. Generous: the kernel runs under software
/// emulation, and a loaded machine can slow it several times over.
pub const DEFAULT_TIMEOUT_SECS: u32 = 30;

/// Every test linked into the kernel, in link order.
#[linkme::distributed_slice]
pub static TESTS: [Test];

impl Test {
    /// Writes the full name, `module::name`, with the crate's test-module
    /// segment (`::tests`) left out so names read like paths to the code.
    pub fn write_full_name(&self, w: &mut dyn core::fmt::Write) -> core::fmt::Result {
        let module = self.module.strip_suffix("::tests").unwrap_or(self.module);
        write!(w, "{}::{}", module, self.name)
    }
}

/// The tests sorted by full name: the order the runner uses, so indices are
/// stable from one boot to the next whatever order the linker chose.
pub fn sorted(out: &mut [&'static Test]) {
    out.sort_unstable_by(|a, b| {
        let ma = a.module.strip_suffix("::tests").unwrap_or(a.module);
        let mb = b.module.strip_suffix("::tests").unwrap_or(b.module);
        (ma, a.name).cmp(&(mb, b.name))
    });
}
