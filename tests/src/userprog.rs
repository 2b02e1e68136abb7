//! One of `user/`'s programs, built on the host with `musl-gcc` and run on
//! the kernel as `./run-qemu.sh run` runs it (init as its parent, a fresh
//! swap disk, the exit status handed back), for the host tests and the
//! benchmarks that need a guest of their own size or command line: the
//! soak, the long fuzz runs.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{Images, workspace_root};

/// How to run a program.
pub struct Run<'a> {
    /// `user/<name>.c`.
    pub name: &'a str,
    pub args: Vec<String>,
    /// Guest memory (`MEMORY`).
    pub memory: &'a str,
    /// Extra kernel command line (after `mode=run log=warn run.report=on`):
    /// fail points, say.
    pub cmdline: &'a str,
    /// Killed (and an error) past this.
    pub timeout: Duration,
    /// Processors (QEMU's -smp).
    pub smp: u32,
}

/// What a run printed and how it ended.
pub struct Outcome {
    /// The program's exit status as `run-qemu.sh` reports it (128 + the
    /// signal if it was killed); `None` if the script failed otherwise.
    pub status: Option<i32>,
    /// The console: the program's output and the kernel's lines.
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Outcome {
    /// The last console line that starts with `prefix`.
    pub fn last_line(&self, prefix: &str) -> Option<&str> {
        self.stdout.lines().rev().find(|l| l.starts_with(prefix))
    }

    /// The kernel's closing line held: every process gone and the page
    /// invariants clean (`kernel/src/devtools/demo.rs`).
    pub fn invariants_hold(&self) -> bool {
        self.stdout.lines().any(|l| l.contains("vm: every process gone") && l.ends_with("page invariants: hold"))
    }
}

/// Builds `user/<name>.c` into a fresh temporary directory; returns the
/// directory and the program.
pub fn build(name: &str) -> Result<(PathBuf, PathBuf)> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("bsdvm-{name}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let prog = dir.join(name);
    let src = workspace_root().join(format!("user/{name}.c"));
    let cc = Command::new("musl-gcc").args(["-static", "-O2", "-o"]).arg(&prog).arg(&src).status().context("musl-gcc")?;
    if !cc.success() {
        bail!("musl-gcc failed on user/{name}.c");
    }
    Ok((dir, prog))
}

/// Runs the program on `images`' kernel; an error only when it could not be
/// built or ran past its time (the console so far in the message).
pub fn run(images: &Images, r: &Run<'_>) -> Result<Outcome> {
    let (dir, prog) = build(r.name)?;
    let start = Instant::now();
    let mut child = Command::new(workspace_root().join("run-qemu.sh"))
        .arg("run")
        .arg(&prog)
        .args(&r.args)
        .env("KERNEL_ELF", &images.kernel)
        .env("MEMORY", r.memory)
        .env("SMP", r.smp.to_string())
        // The kernel's closing line, and only its warnings besides.
        .env("KERNEL_CMDLINE", format!("mode=run log=warn run.report=on {}", r.cmdline).trim_end())
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Read both pipes as they fill, so that a talkative run never blocks.
    let mut out = child.stdout.take().context("stdout")?;
    let mut err = child.stderr.take().context("stderr")?;
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if start.elapsed() > r.timeout {
            // The script and QEMU under it: the whole group.
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    let Some(status) = status else {
        bail!("{} {:?} did not finish within {:?} (a hang?):\n{stdout}{stderr}", r.name, r.args, r.timeout);
    };
    Ok(Outcome { status: status.code(), stdout, stderr, elapsed: start.elapsed() })
}
