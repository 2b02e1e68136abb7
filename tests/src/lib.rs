//! Host side of the in-kernel tests: finds the images, boots QEMU, reads the
//! kernel's serial console and turns the `ktest:` protocol lines (see
//! `kernel/src/devtools/ktest_runner.rs`) into results.
//!
//! QEMU is restarted whenever a test ends the run (a panic, an exception, a
//! hang past its timeout), with the tests not yet reported, so every test gets
//! a result by name.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
pub use boot::{Images, KERNEL_BASE};

pub mod gdbvm;
pub mod userprog;

/// QEMU's exit status when the kernel reports success (`qemu::ExitCode::Success`).
pub const EXIT_SUCCESS: i32 = 33;

/// How long a boot may take to reach the test runner or the demo.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// Guest memory for every run; later work on paging relies on it being small.
pub const GUEST_MEMORY: &str = "128M";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    Bios,
    Uefi,
}

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The kernel images to test: `$KERNEL_ELF` if set (run-qemu.sh sets it),
/// else the debug build. Fails with a hint if they have not been built.
pub fn images() -> Result<Images> {
    let elf = match std::env::var_os("KERNEL_ELF") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join("target/x86_64-unknown-none/debug/kernel"),
    };
    let images = Images::for_kernel(&elf);
    for p in [&images.kernel, &images.bios, &images.uefi, &images.fs] {
        if !p.exists() {
            bail!("{} is missing: run `./run-qemu.sh test`, which builds the kernel and its images", p.display());
        }
    }
    Ok(images)
}

/// The OVMF firmware for UEFI boots (`$OVMF` overrides).
pub fn ovmf() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("OVMF") {
        return Ok(PathBuf::from(p));
    }
    ["/usr/share/ovmf/OVMF.fd", "/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/qemu/OVMF.fd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("OVMF firmware not found: install the Debian package `ovmf` (run-qemu.sh does)")
}

/// How to start QEMU.
#[derive(Clone, Debug)]
pub struct BootOptions {
    pub firmware: Firmware,
    pub cmdline: String,
    /// Wait for gdb on this TCP port before running (`-S -gdb`).
    pub gdb_port: Option<u16>,
    /// Guest memory (QEMU's `-m`).
    pub memory: &'static str,
    /// Have QEMU allocate all guest memory up front (`-mem-prealloc`).
    pub prealloc: bool,
    /// The CPU model (`-cpu`); QEMU's default when None.
    pub cpu: Option<&'static str>,
    /// Processors (QEMU's `-smp`).
    pub smp: u32,
    /// Disk images attached as virtio-blk devices, in this order.
    pub disks: Vec<Disk>,
    /// A swap disk of this many bytes, made fresh for the run (see
    /// [`SwapImage`]) and attached after `disks`; None for no swap disk.
    pub swap: Option<u64>,
}

/// The processors a test boot gets unless it asks otherwise: `KTEST_SMP`
/// if set, else 1.
pub fn default_smp() -> u32 {
    std::env::var("KTEST_SMP").ok().and_then(|v| v.parse().ok()).filter(|&n| n >= 1).unwrap_or(1)
}

impl BootOptions {
    pub fn new(firmware: Firmware, cmdline: impl Into<String>) -> Self {
        BootOptions {
            firmware,
            cmdline: cmdline.into(),
            gdb_port: None,
            memory: GUEST_MEMORY,
            prealloc: false,
            cpu: None,
            smp: default_smp(),
            disks: Vec::new(),
            swap: None,
        }
    }
}

/// A raw disk image attached as a virtio-blk PCI device (modern only, as
/// the kernel's driver speaks virtio 1.0).
#[derive(Clone, Debug)]
pub struct Disk {
    pub path: PathBuf,
    /// The serial number the guest reads (`virtio_blk::by_serial`).
    pub serial: String,
    /// Writes go to a temporary overlay and never reach the file.
    pub snapshot: bool,
}

/// The root filesystem image (`kernel-fs.img`), as run-qemu.sh attaches it:
/// serial `rootfs`, writes kept in a snapshot.
pub fn rootfs_disk(images: &Images) -> Disk {
    Disk { path: images.fs.clone(), serial: "rootfs".into(), snapshot: true }
}

/// Serial number of the swap disk (the kernel's `swap::SWAP_SERIAL`).
pub const SWAP_SERIAL: &str = "swap";
/// Size of the swap disk when `SWAP_SIZE` does not say (as run-qemu.sh).
pub const DEFAULT_SWAP_SIZE: u64 = 512 << 20;

/// The swap disk's size in bytes for test boots: `$SWAP_SIZE` if set (as
/// run-qemu.sh takes it: bytes, or a number with K, M or G), else
/// [`DEFAULT_SWAP_SIZE`]. None for `SWAP_SIZE=0`: no swap disk.
pub fn swap_size() -> Result<Option<u64>> {
    let bytes = match std::env::var("SWAP_SIZE") {
        Ok(s) => parse_size(&s).with_context(|| format!("SWAP_SIZE={s:?}: expected bytes, or a number with K, M or G"))?,
        Err(_) => DEFAULT_SWAP_SIZE,
    };
    Ok((bytes > 0).then_some(bytes))
}

/// `123`, `64K`, `256M`, `2G` (binary multiples), as `truncate -s` reads them.
pub fn parse_size(s: &str) -> Option<u64> {
    let (digits, shift) = match s.as_bytes().last()? {
        b'K' => (&s[..s.len() - 1], 10),
        b'M' => (&s[..s.len() - 1], 20),
        b'G' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// A swap image for one QEMU: a sparse file of zeroes in the temporary
/// directory, removed when dropped. Each QEMU gets its own, since a raw
/// image written without a snapshot can be open in one QEMU only, and
/// every run starts with swap that holds nothing of an earlier one.
pub struct SwapImage {
    pub path: PathBuf,
}

impl SwapImage {
    pub fn create(bytes: u64) -> Result<SwapImage> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("bsdvm-swap-{}-{n}.img", std::process::id()));
        let file = std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        // Setting the length writes nothing: the file stays sparse.
        file.set_len(bytes).with_context(|| format!("cannot size {} to {bytes} bytes", path.display()))?;
        Ok(SwapImage { path })
    }

    fn disk(&self) -> Disk {
        Disk { path: self.path.clone(), serial: SWAP_SERIAL.into(), snapshot: false }
    }
}

impl Drop for SwapImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serial number of the pattern disk attached to every in-kernel test boot.
pub const TEST_DISK_SERIAL: &str = "ktest-pattern";
/// Its size in 512-byte sectors (16 MiB).
pub const TEST_DISK_SECTORS: u64 = 32768;

/// Byte `i` of sector `n` of the test disk: the sector number (little
/// endian) in the first 8 bytes, then a sequence that differs per sector.
/// The kernel's virtio-blk tests check for the same.
pub fn disk_pattern(n: u64, i: usize) -> u8 {
    if i < 8 { (n >> (8 * i)) as u8 } else { (n as usize).wrapping_mul(31).wrapping_add(i) as u8 }
}

/// The pattern disk, made once under `target/test-disks/` (build output,
/// not the repository) and attached with `snapshot=on`, so tests that write
/// never change it and several QEMUs can share it.
pub fn test_disk() -> Result<Disk> {
    let dir = workspace_root().join("target/test-disks");
    let path = dir.join("pattern-16m.img");
    let bytes = TEST_DISK_SECTORS * 512;
    if std::fs::metadata(&path).map(|m| m.len()).ok() != Some(bytes) {
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut data = Vec::with_capacity(bytes as usize);
        for n in 0..TEST_DISK_SECTORS {
            data.extend((0..512).map(|i| disk_pattern(n, i)));
        }
        // Written aside and renamed, so a concurrent run never sees half a disk.
        let tmp = dir.join(format!("pattern-16m.img.{}", std::process::id()));
        std::fs::write(&tmp, &data).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot create {}", path.display()))?;
    }
    Ok(Disk { path, serial: TEST_DISK_SERIAL.into(), snapshot: true })
}

/// The QEMU command line for `images` (run-qemu.sh builds the same one).
pub fn qemu_command(images: &Images, opts: &BootOptions) -> Result<Command> {
    let image = match opts.firmware {
        Firmware::Bios => &images.bios,
        Firmware::Uefi => &images.uefi,
    };
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.arg("-drive")
        // snapshot=on: the image is only read, so several QEMUs can boot it at once.
        .arg(format!("format=raw,snapshot=on,file={}", image.display()))
        .args(["-serial", "stdio", "-display", "none", "-monitor", "none", "-no-reboot"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .args(["-m", opts.memory])
        .arg("-fw_cfg")
        // QEMU option values escape a comma by doubling it.
        .arg(format!("name=opt/kernel/cmdline,string={}", opts.cmdline.replace(',', ",,")));
    if opts.firmware == Firmware::Uefi {
        cmd.arg("-bios").arg(ovmf()?);
    }
    if opts.prealloc {
        cmd.arg("-mem-prealloc");
    }
    if let Some(cpu) = opts.cpu {
        cmd.arg("-cpu").arg(cpu);
    }
    if opts.smp != 1 {
        cmd.arg("-smp").arg(opts.smp.to_string());
    }
    for (i, d) in opts.disks.iter().enumerate() {
        let snapshot = if d.snapshot { ",snapshot=on" } else { "" };
        let path = d.path.display().to_string().replace(',', ",,");
        cmd.arg("-drive").arg(format!("file={path},if=none,format=raw,id=disk{i}{snapshot}"));
        cmd.arg("-device").arg(format!("virtio-blk-pci,drive=disk{i},disable-legacy=on,serial={}", d.serial.replace(',', ",,")));
    }
    if let Some(port) = opts.gdb_port {
        cmd.arg("-S").arg("-gdb").arg(format!("tcp:127.0.0.1:{port}"));
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    Ok(cmd)
}

/// What reading the console produced.
#[derive(Debug)]
pub enum Event {
    Line(String),
    Exited(ExitStatus),
    TimedOut,
}

fn forward_lines(from: impl std::io::Read, prefix: &str, to: std::sync::mpsc::Sender<String>) {
    for line in BufReader::new(from).split(b'\n') {
        let Ok(line) = line else { break };
        let line = format!("{prefix}{}", String::from_utf8_lossy(&line).trim_end_matches('\r'));
        if to.send(line).is_err() {
            break;
        }
    }
}

/// A running QEMU whose serial console is read line by line.
pub struct Qemu {
    child: Child,
    lines: Receiver<String>,
    pub started: Instant,
    /// Everything the console printed so far.
    pub transcript: String,
    /// The swap image, removed once QEMU is gone (fields drop after
    /// `Drop::drop` has killed it).
    _swap: Option<SwapImage>,
}

impl Qemu {
    pub fn spawn(images: &Images, opts: &BootOptions) -> Result<Qemu> {
        let swap = opts.swap.map(SwapImage::create).transpose()?;
        let mut opts = opts.clone();
        opts.disks.extend(swap.as_ref().map(SwapImage::disk));
        let mut cmd = qemu_command(images, &opts)?;
        let started = Instant::now();
        let mut child = cmd.spawn().context("cannot start qemu-system-x86_64 (install the Debian package qemu-system-x86)")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let (tx, rx) = channel();
        // QEMU's own complaints (stderr) go into the same stream, marked.
        let tx2 = tx.clone();
        thread::spawn(move || forward_lines(stderr, "qemu: ", tx2));
        thread::spawn(move || forward_lines(stdout, "", tx));
        Ok(Qemu { child, lines: rx, started, transcript: String::new(), _swap: swap })
    }

    /// The next console line, QEMU's exit, or a timeout at `deadline`.
    pub fn next(&mut self, deadline: Instant) -> Event {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(wait) {
            Ok(line) => {
                self.transcript.push_str(&line);
                self.transcript.push('\n');
                Event::Line(line)
            }
            Err(RecvTimeoutError::Timeout) => Event::TimedOut,
            Err(RecvTimeoutError::Disconnected) => match self.child.wait() {
                Ok(status) => Event::Exited(status),
                Err(_) => Event::TimedOut,
            },
        }
    }

    /// Waits for a line for which `f` returns `Some`, up to `timeout`.
    pub fn wait_for<T>(&mut self, timeout: Duration, mut f: impl FnMut(&str) -> Option<T>) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next(deadline) {
                Event::Line(l) => {
                    if let Some(v) = f(&l) {
                        return Ok(v);
                    }
                }
                Event::Exited(s) => bail!("QEMU exited ({s}) first; console:\n{}", self.transcript),
                Event::TimedOut => bail!("timed out after {timeout:?}; console:\n{}", self.transcript),
            }
        }
    }

    /// Waits for QEMU to exit by itself, up to `timeout`; returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next(deadline) {
                Event::Line(_) => {}
                Event::Exited(s) => return Ok(s.code().unwrap_or(-1)),
                Event::TimedOut => bail!("QEMU still running after {timeout:?}; console:\n{}", self.transcript),
            }
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One in-kernel test as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestInfo {
    pub index: usize,
    pub name: String,
    pub timeout: Duration,
}

/// The result of one in-kernel test.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub passed: bool,
    /// As the kernel measured it (zero if it never reported).
    pub duration_us: u64,
    /// Why it failed, and what the console printed while it ran.
    pub message: String,
}

impl Outcome {
    /// A failure the kernel could not report itself: the run ended or hung.
    fn unreported(why: String, output: String) -> Outcome {
        Outcome { passed: false, duration_us: 0, message: format!("{why}\n{output}") }
    }
}

/// Parses `ktest: test <i> <name> timeout=<s>` / `ktest: start ...`.
fn parse_test_line(rest: &str) -> Option<TestInfo> {
    let mut w = rest.split_whitespace();
    let index = w.next()?.parse().ok()?;
    let name = w.next()?.to_string();
    let timeout = w.next()?.strip_prefix("timeout=")?.parse().ok()?;
    Some(TestInfo { index, name, timeout: Duration::from_secs(timeout) })
}

/// Parses `<i> <name> <n>us [reason]` from an ok/FAILED line.
fn parse_result_line(rest: &str) -> Option<(usize, u64, String)> {
    let mut w = rest.splitn(4, ' ');
    let index = w.next()?.parse().ok()?;
    let _name = w.next()?;
    let us = w.next()?.strip_suffix("us")?.parse().ok()?;
    Some((index, us, w.next().unwrap_or("").to_string()))
}

/// Boots the kernel in `mode=list` and returns its tests.
pub fn list_tests(images: &Images, firmware: Firmware) -> Result<Vec<TestInfo>> {
    let mut q = Qemu::spawn(images, &BootOptions::new(firmware, "mode=list"))?;
    let count: usize = q.wait_for(BOOT_TIMEOUT, |l| l.strip_prefix("ktest: list ")?.trim().parse().ok())?;
    let mut tests = Vec::with_capacity(count);
    while tests.len() < count {
        let t = q.wait_for(Duration::from_secs(10), |l| parse_test_line(l.strip_prefix("ktest: test ")?))?;
        tests.push(t);
    }
    let status = q.wait_exit(Duration::from_secs(10))?;
    if status != EXIT_SUCCESS {
        bail!("kernel exited with status {status} after listing its tests");
    }
    Ok(tests)
}

/// Statistics of one [`run_tests`] call.
#[derive(Clone, Debug, Default)]
pub struct RunStats {
    pub boots: usize,
    /// From starting QEMU to the first `ktest: start` of the first boot.
    pub boot_to_first_test: Option<Duration>,
    pub total: Duration,
}

/// Runs the tests with the given indices, restarting QEMU after any test that
/// ends the run, until every one has a result.
pub fn run_tests(
    images: &Images,
    firmware: Firmware,
    tests: &[TestInfo],
    selection: &[usize],
) -> Result<(BTreeMap<usize, Outcome>, RunStats)> {
    run_tests_on(images, firmware, None, tests, selection)
}

/// [`run_tests`] on CPU model `cpu` (QEMU's `-cpu`; None for the default).
pub fn run_tests_on(
    images: &Images,
    firmware: Firmware,
    cpu: Option<&'static str>,
    tests: &[TestInfo],
    selection: &[usize],
) -> Result<(BTreeMap<usize, Outcome>, RunStats)> {
    let started = Instant::now();
    let mut results = BTreeMap::new();
    let mut stats = RunStats::default();
    let mut remaining: Vec<usize> = selection.to_vec();
    let disk = test_disk()?;
    let swap = swap_size()?;
    while !remaining.is_empty() {
        let run = remaining.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        let mut opts = BootOptions::new(firmware, format!("mode=test run={run}"));
        opts.cpu = cpu;
        opts.disks = vec![rootfs_disk(images), disk.clone()];
        opts.swap = swap;
        let mut q = Qemu::spawn(images, &opts)?;
        stats.boots += 1;
        let mut current: Option<(usize, String)> = None;
        let mut deadline = Instant::now() + BOOT_TIMEOUT;
        let mut reported_this_boot = 0;
        loop {
            match q.next(deadline) {
                Event::Line(line) => {
                    if let Some(rest) = line.strip_prefix("ktest: start ") {
                        let Some(t) = parse_test_line(rest) else { continue };
                        stats.boot_to_first_test.get_or_insert(q.started.elapsed());
                        deadline = Instant::now() + t.timeout;
                        current = Some((t.index, String::new()));
                    } else if let Some(rest) = line.strip_prefix("ktest: ok ") {
                        if let Some((i, us, _)) = parse_result_line(rest) {
                            results.insert(i, Outcome { passed: true, duration_us: us, message: String::new() });
                            reported_this_boot += 1;
                        }
                        current = None;
                        deadline = Instant::now() + BOOT_TIMEOUT;
                    } else if let Some(rest) = line.strip_prefix("ktest: FAILED ") {
                        if let Some((i, us, reason)) = parse_result_line(rest) {
                            let output = current.take().map(|c| c.1).unwrap_or_default();
                            results.insert(i, Outcome { passed: false, duration_us: us, message: format!("{reason}\n{output}") });
                            reported_this_boot += 1;
                        }
                        current = None;
                        deadline = Instant::now() + BOOT_TIMEOUT;
                    } else if line.starts_with("ktest: heap ") {
                        eprintln!("{line}");
                    } else if line.starts_with("ktest: done") {
                        let _ = q.wait_exit(Duration::from_secs(10));
                        break;
                    } else if let Some((_, out)) = current.as_mut() {
                        out.push_str(&line);
                        out.push('\n');
                    }
                }
                Event::Exited(status) => {
                    if let Some((i, out)) = current.take() {
                        results.insert(i, Outcome::unreported(format!("QEMU exited ({status}) during the test"), out));
                        reported_this_boot += 1;
                    }
                    break;
                }
                Event::TimedOut => {
                    q.kill();
                    if let Some((i, out)) = current.take() {
                        let limit = tests.iter().find(|t| t.index == i).map(|t| t.timeout).unwrap_or_default();
                        let why = format!("hung: no result within its {limit:?} timeout");
                        results.insert(i, Outcome::unreported(why, out));
                        reported_this_boot += 1;
                    }
                    break;
                }
            }
        }
        remaining.retain(|i| !results.contains_key(i));
        if reported_this_boot == 0 && !remaining.is_empty() {
            bail!("the kernel ran none of tests {run} (did it reach the test runner?); console:\n{}", q.transcript);
        }
    }
    stats.total = started.elapsed();
    Ok((results, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_disk_has_the_pattern() {
        let d = test_disk().unwrap();
        let data = std::fs::read(&d.path).unwrap();
        assert_eq!(data.len() as u64, TEST_DISK_SECTORS * 512);
        for n in [0u64, 1, 258, TEST_DISK_SECTORS - 1] {
            let s = &data[n as usize * 512..][..512];
            assert_eq!(u64::from_le_bytes(s[..8].try_into().unwrap()), n, "sector {n} starts with its number");
            assert!(s.iter().enumerate().all(|(i, &b)| b == disk_pattern(n, i)));
        }
    }

    #[test]
    fn disks_are_attached_as_modern_virtio_blk() {
        let images = Images::for_kernel(Path::new("/nonexistent/kernel"));
        let mut opts = BootOptions::new(Firmware::Bios, "mode=test");
        opts.disks.push(Disk { path: "/tmp/a,b.img".into(), serial: "s1".into(), snapshot: true });
        let cmd = qemu_command(&images, &opts).unwrap();
        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(args.contains(&"file=/tmp/a,,b.img,if=none,format=raw,id=disk0,snapshot=on".to_string()), "{args:?}");
        assert!(args.contains(&"virtio-blk-pci,drive=disk0,disable-legacy=on,serial=s1".to_string()), "{args:?}");
    }

    #[test]
    fn swap_images_are_sparse_and_go_away() {
        use std::os::unix::fs::MetadataExt;
        let img = SwapImage::create(DEFAULT_SWAP_SIZE).unwrap();
        let path = img.path.clone();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), DEFAULT_SWAP_SIZE);
        assert!(meta.blocks() * 512 < 1 << 20, "{} bytes allocated: not sparse", meta.blocks() * 512);
        assert_ne!(SwapImage::create(4096).unwrap().path, path, "each QEMU gets its own");
        drop(img);
        assert!(!path.exists());
    }

    #[test]
    fn sizes_parse_as_truncate_reads_them() {
        assert_eq!(parse_size("256M"), Some(256 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("64K"), Some(64 << 10));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("0"), Some(0));
        for bad in ["", "M", "12MB", "-1", "1.5G", "99999999999999999999G"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn protocol_lines_parse() {
        let t = parse_test_line("3 kernel::kern::heap::many_sizes timeout=30").unwrap();
        assert_eq!(t, TestInfo { index: 3, name: "kernel::kern::heap::many_sizes".into(), timeout: Duration::from_secs(30) });
        assert_eq!(parse_result_line("3 kernel::kern::heap::x 1234us"), Some((3, 1234, String::new())));
        assert_eq!(
            parse_result_line("7 a::b 5us exception 14 #PF page fault"),
            Some((7, 5, "exception 14 #PF page fault".into()))
        );
        assert!(parse_test_line("x y").is_none());
        assert!(parse_result_line("1 a 12ms").is_none());
    }
}
