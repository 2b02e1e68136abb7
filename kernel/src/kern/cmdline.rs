//! The kernel command line, read from QEMU's fw_cfg device.
//!
//! The bootloader passes no command line, so run-qemu.sh and the test host give
//! one to QEMU instead: `-fw_cfg name=opt/kernel/cmdline,string="mode=test"`.
//! The kernel reads it through fw_cfg's two I/O ports (QEMU docs/specs/fw_cfg).
//! Without QEMU, or without the file, the line is empty and defaults apply.
//!
//! Words are `key=value`, separated by spaces:
//!
//! | key | values | default |
//! | --- | --- | --- |
//! | `mode` | `demo`, `test`, `list`, `bench`, `run` (the program in fw_cfg `opt/run/program`), `vmstate` (a VM state to look at with gdb: `vmstate.rs`) | `demo` |
//! | `run` | comma-separated test indices, for `mode=test` | every test |
//! | `log` | `error`, `warn`, `info`, `debug`, `trace` | `info` |
//! | `profile` | `on`, `off`: with `mode=bench`, sample where the faults spend their time (`profile`) | `off` |
//! | `run.report` | `on`, `off`: with `mode=run`, end with the line that compares free pages and heap use with the start and says whether the page invariants hold (`demo::run_program`) | `off` |
//! | `swap.read_ahead` | `on`, `off`: the swap pager's read-ahead (`mm::swap::READ_AHEAD`) | `on` |
//! | `fail.<name>` | a fail-point action: `off`, `always`, `nth:N`, `P%`, `P%@SEED` (see `vm::failpoint`) | `off` |

use alloc::string::String;
use alloc::vec::Vec;

use spin::Once;

const CMDLINE_FILE: &str = "opt/kernel/cmdline";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Boot, show the demo, exit.
    Demo,
    /// Run the in-kernel tests.
    Test,
    /// Print the in-kernel test list and exit.
    List,
    /// Run the in-kernel benchmarks.
    Bench,
    /// Run the program the host handed in (`./run-qemu.sh run`) under init,
    /// and exit with its status.
    Run,
    /// Set up a known VM state, print the kernel's view of it and stop at
    /// a marker for a debugger (`vmstate.rs`).
    VmState,
}

#[derive(Debug)]
pub struct Cmdline {
    pub raw: String,
    pub mode: Mode,
    /// Test indices to run, in order (`None`: all).
    pub run: Option<Vec<usize>>,
    pub log: log::LevelFilter,
    /// `mode=bench bench=<part>`: one part of the benchmarks.
    pub bench: BenchPart,
}

/// The part of the benchmarks a `mode=bench` boot runs (`bench=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchPart {
    /// The one-CPU benchmarks (`devtools::bench`), the default.
    Main,
    /// `bench=smp`: the page allocator on several CPUs at once
    /// (`devtools::bench_smp`), booted with `-smp 4`.
    Smp,
    /// `bench=tlb`: 10^5 rounds of the TLB shootdown check
    /// (`devtools::bench_smp::run_tlb`), booted with `-smp 2`.
    Tlb,
}

static CMDLINE: Once<Cmdline> = Once::new();

/// The `log=` level of the command line, read before the heap exists so
/// that the first lines already obey it.
pub fn early_log_level() -> log::LevelFilter {
    let mut buf = [0u8; 1024];
    let n = crate::dev::fw_cfg::read_into(CMDLINE_FILE, &mut buf).unwrap_or(0);
    let line = core::str::from_utf8(&buf[..n]).unwrap_or("");
    line.split_whitespace()
        .filter_map(|w| w.strip_prefix("log="))
        .filter_map(|v| v.trim_end_matches('\0').parse().ok())
        .next_back()
        .unwrap_or(log::LevelFilter::Info)
}

/// Reads the command-line file from fw_cfg, if QEMU provides one.
fn read_fw_cfg() -> Option<String> {
    let bytes = crate::dev::fw_cfg::read_file(CMDLINE_FILE, 64 * 1024).ok()?;
    let mut s = bytes.as_slice();
    while let [rest @ .., 0] = s {
        s = rest;
    }
    Some(String::from_utf8_lossy(s).into_owned())
}

/// Parses a command line. Unknown words are reported and ignored.
pub fn parse(raw: &str) -> Cmdline {
    let mut c = Cmdline { raw: raw.into(), mode: Mode::Demo, run: None, log: log::LevelFilter::Info, bench: BenchPart::Main };
    for word in raw.split_whitespace() {
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        match key {
            "mode" => match value {
                "demo" => c.mode = Mode::Demo,
                "test" => c.mode = Mode::Test,
                "list" => c.mode = Mode::List,
                "bench" => c.mode = Mode::Bench,
                "run" => c.mode = Mode::Run,
                "vmstate" => c.mode = Mode::VmState,
                _ => log::warn!("cmdline: unknown mode {value:?}, using demo"),
            },
            "run" => {
                let indices: Option<Vec<usize>> = value.split(',').filter(|s| !s.is_empty()).map(|s| s.parse().ok()).collect();
                match indices {
                    Some(v) => c.run = Some(v),
                    None => log::warn!("cmdline: bad test list {value:?}, running all"),
                }
            }
            "log" => match value.parse() {
                Ok(level) => c.log = level,
                Err(_) => log::warn!("cmdline: unknown log level {value:?}"),
            },
            "profile" => match value {
                "on" | "off" => crate::devtools::profile::WANTED.store(value == "on", core::sync::atomic::Ordering::Relaxed),
                _ => log::warn!("cmdline: profile={value:?}: on or off"),
            },
            "bench" => match value {
                "smp" => c.bench = BenchPart::Smp,
                "tlb" => c.bench = BenchPart::Tlb,
                _ => log::warn!("cmdline: bench={value:?}: smp or tlb"),
            },
            "run.report" => match value {
                "on" | "off" => crate::devtools::demo::RUN_REPORT.store(value == "on", core::sync::atomic::Ordering::Relaxed),
                _ => log::warn!("cmdline: run.report={value:?}: on or off"),
            },
            "swap.read_ahead" => match value {
                "on" | "off" => crate::mm::swap::READ_AHEAD.store(value == "on", core::sync::atomic::Ordering::Relaxed),
                _ => log::warn!("cmdline: swap.read_ahead={value:?}: on or off"),
            },
            _ if key.starts_with("fail.") => {
                let name = &key["fail.".len()..];
                match vm::failpoint::set_by_name(name, value) {
                    Ok(()) => log::info!("cmdline: fail point {name} set to {value}"),
                    Err(e) => log::warn!("cmdline: fail point {name}={value}: {e:?}"),
                }
            }
            _ => log::warn!("cmdline: unknown option {word:?}"),
        }
    }
    c
}

/// Reads and parses the command line once; later calls return the same one.
pub fn init() -> &'static Cmdline {
    CMDLINE.call_once(|| parse(&read_fw_cfg().unwrap_or_default()))
}

#[ktest::ktest]
fn parses_every_option() {
    let c = parse("mode=test run=3,1,2 log=debug");
    assert_eq!(c.mode, Mode::Test);
    assert_eq!(c.run.as_deref(), Some(&[3usize, 1, 2][..]));
    assert_eq!(c.log, log::LevelFilter::Debug);
    let d = parse("");
    assert_eq!(d.mode, Mode::Demo);
    assert!(d.run.is_none());
    let bad = parse("mode=nonsense run=1,x");
    assert_eq!(bad.mode, Mode::Demo);
    assert!(bad.run.is_none());
    // Fail points are set from the command line.
    let fp = &vm::failpoint::PAGER_IO;
    parse("fail.pager.io=nth:2");
    assert!(!fp.should_fail() && fp.should_fail() && !fp.should_fail());
    parse("fail.pager.io=off fail.no.such=always");
}
