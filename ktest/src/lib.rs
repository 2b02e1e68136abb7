//! The in-kernel test registry.
//!
//! A test is an ordinary function marked `#[ktest]` next to the code it tests, in
//! any of the kernel's crates (`kernel`, `vm`, `pager`). The attribute places a
//! [`Test`] record in the link-time table [`TESTS`]; the kernel's test runner
//! (`kernel/src/devtools/ktest_runner.rs`) walks that table when it is booted in test mode.
//! Nothing registers at run time, so a test that is compiled is a test that runs.
//!
//! ```
//! use ktest::ktest;
//!
//! #[ktest]
//! fn two_plus_two() {
//!     assert_eq!(2 + 2, 4);
//! }
//!
//! #[ktest(should_panic = "double free")]
//! fn double_free_is_caught() { panic!("double free") }
//!
//! #[ktest(expect_fault = 14, timeout = 20)]
//! fn unmapped_read_faults() { /* read an unmapped address */ }
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
    /// Writes the full name, `module::name`, with a trailing test-module
    /// segment (`::tests`, `::ktests`) left out so names read like paths to the code.
    pub fn write_full_name(&self, w: &mut dyn core::fmt::Write) -> core::fmt::Result {
        write!(w, "{}::{}", short_module(self.module), self.name)
    }
}

/// The tests sorted by full name: the order the runner uses, so indices are
/// stable from one boot to the next whatever order the linker chose.
pub fn sorted(out: &mut [&'static Test]) {
    out.sort_unstable_by(|a, b| (short_module(a.module), a.name).cmp(&(short_module(b.module), b.name)));
}

/// `module_path!()` without a trailing `::tests` or `::ktests`.
fn short_module(module: &str) -> &str {
    module.strip_suffix("::tests").or_else(|| module.strip_suffix("::ktests")).unwrap_or(module)
}
