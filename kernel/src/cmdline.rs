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
//! | `mode` | `demo`, `test`, `list`, `bench` | `demo` |
//! | `run` | comma-separated test indices, for `mode=test` | every test |
//! | `log` | `error`, `warn`, `info`, `debug`, `trace` | `info` |
//! | `fail.<name>` | a fail-point action: `off`, `always`, `nth:N`, `P%`, `P%@SEED` (see `vm::failpoint`) | `off` |

use alloc::string::String;
use alloc::vec::Vec;

use spin::Once;
use x86_64::instructions::port::Port;

const FW_CFG_SELECTOR: u16 = 0x510;
const FW_CFG_DATA: u16 = 0x511;
const FW_CFG_SIGNATURE: u16 = 0x0000;
const FW_CFG_FILE_DIR: u16 = 0x0019;
const CMDLINE_FILE: &[u8] = b"opt/kernel/cmdline";

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
}

#[derive(Debug)]
pub struct Cmdline {
    pub raw: String,
    pub mode: Mode,
    /// Test indices to run, in order (`None`: all).
    pub run: Option<Vec<usize>>,
    pub log: log::LevelFilter,
}

static CMDLINE: Once<Cmdline> = Once::new();

fn select(key: u16) {
    // SAFETY: 0x510 is fw_cfg's selector port on QEMU's PC machines; on other
    // machines the write goes nowhere, and the signature check below fails.
    unsafe { Port::<u16>::new(FW_CFG_SELECTOR).write(key) };
}

fn read(buf: &mut [u8]) {
    let mut data = Port::<u8>::new(FW_CFG_DATA);
    for b in buf {
        // SAFETY: reading fw_cfg's data port only advances its read offset.
        *b = unsafe { data.read() };
    }
}

/// Reads the command-line file from fw_cfg, if QEMU provides one.
fn read_fw_cfg() -> Option<String> {
    let mut sig = [0u8; 4];
    select(FW_CFG_SIGNATURE);
    read(&mut sig);
    if &sig != b"QEMU" {
        return None;
    }
    select(FW_CFG_FILE_DIR);
    let mut count = [0u8; 4];
    read(&mut count);
    for _ in 0..u32::from_be_bytes(count) {
        // struct FWCfgFile { be32 size; be16 select; u16 reserved; char name[56]; }
        let mut entry = [0u8; 64];
        read(&mut entry);
        let name = &entry[8..];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        if name == CMDLINE_FILE {
            let size = u32::from_be_bytes(entry[0..4].try_into().ok()?) as usize;
            let key = u16::from_be_bytes(entry[4..6].try_into().ok()?);
            let mut bytes = alloc::vec![0u8; size.min(64 * 1024)];
            select(key);
            read(&mut bytes);
            while bytes.last() == Some(&0) {
                bytes.pop();
            }
            return Some(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    None
}

/// Parses a command line. Unknown words are reported and ignored.
pub fn parse(raw: &str) -> Cmdline {
    let mut c = Cmdline { raw: raw.into(), mode: Mode::Demo, run: None, log: log::LevelFilter::Info };
    for word in raw.split_whitespace() {
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        match key {
            "mode" => match value {
                "demo" => c.mode = Mode::Demo,
                "test" => c.mode = Mode::Test,
                "list" => c.mode = Mode::List,
                "bench" => c.mode = Mode::Bench,
                _ => log::warn!("cmdline: unknown mode {value:?}, using demo"),
            },
            "run" => {
                let indices: Option<Vec<usize>> =
                    value.split(',').filter(|s| !s.is_empty()).map(|s| s.parse().ok()).collect();
                match indices {
                    Some(v) => c.run = Some(v),
                    None => log::warn!("cmdline: bad test list {value:?}, running all"),
                }
            }
            "log" => match value.parse() {
                Ok(level) => c.log = level,
                Err(_) => log::warn!("cmdline: unknown log level {value:?}"),
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
