//! Kernel benchmarks, run by `./run-qemu.sh bench` (as `cargo bench`) against
//! the release kernel. Prints one `bench: <name> <value> <unit>` line per figure.
//!
//! Figures that need a clock outside the guest are measured here, on the host:
//! boot time (QEMU start to the kernel's first line) and the real timer rate
//! (ticks between two kernel lines over the host time between them). The
//! kernel's own figures (`mode=bench`) are passed through as they come.
//! Boot times are medians of several boots; on a shared machine the ratio
//! lines matter more than absolute times.
//!
//! Last, `user/vmbench.c` (zero-fill and copy-on-write faults, munmap and
//! mremap of 64 MiB, as a program sees them) runs unmodified on our kernel
//! (`./run-qemu.sh run <elf>`) and on Debian's Linux (`tests/linux/run-linux.sh`)
//! in the same QEMU set-up as the kernel's benchmarks, side by side.
//!
//! Then swap: `user/swapbench.c` writes a pattern over three times RAM of
//! anonymous memory and reads it back twice (swapper's workload), on both
//! kernels with [`SWAP_MEMORY`] of RAM and a fresh [`SWAP_DISK`] swap disk
//! (ours as `run-qemu.sh` attaches it; on Linux a swap area made by mkswap,
//! `run-linux.sh --swap`), and reads the swap counters of `/proc/vmstat`
//! (pswpout, pswpin; ours has that file too) around each phase.
//! `swap.pageout` is the pages written to swap during the write phase over
//! its time, `swap.pagein` the pages read from swap during the two read
//! passes over their time (each phase's own computing included, the same on
//! both). It runs once more on each kernel without swap read-ahead (ours:
//! `swap.read_ahead=off`; Linux: `vm.page-cluster` 0), giving
//! `swap.pagein_unclustered` and the clustered/unclustered ratio.
//! `cargo bench --bench kernel -- swap` (with `KERNEL_ELF` set to a release
//! kernel, as `run-qemu.sh bench` sets it) runs only this part.
//!
//! Then several processors: first the kernel's own (`mode=bench bench=smp`
//! at `-smp 4`: `kernel.phys.order0_pair_<N>cpu`, the page allocator's
//! order-0 pair with 1, 2 and 4 CPUs allocating at once, and its 4-CPU/1-CPU
//! ratio; `bench=tlb` at `-smp 2`: 10^5 rounds of the TLB shootdown check,
//! `kernel.tlb_acid.*`),
//! then `user/smpbench.c`, will-it-scale's page_fault1
//! (private anonymous), page_fault2 (private file, copy-on-write) and
//! page_fault3 (shared file), 128 MiB per worker for pf1 and a 32 MiB
//! quarter of one 128 MiB file per worker for pf2 and pf3, each with 1, 2
//! and 4 worker processes and then threads, in pages faulted per second
//! summed over the workers; and munmap of one page while three other
//! threads of the process run (TLB shootdown), in ns per call. It runs on
//! both kernels at `-smp 1` and `-smp 2` (the host's two cores: where
//! scaling can show under TCG), with [`SMP_MEMORY`] of RAM (on Linux the
//! file is in the initramfs's tmpfs), on ours with the root filesystem
//! grown to [`SMP_ROOTFS_SIZE`] (a copy of the image, `resize2fs`, as
//! `ROOTFS_IMAGE`) for the file. Each figure prints as `smp.cpu<N>.<name>`
//! (ours) and `linux.smp.cpu<N>.<name>`, then the ratios:
//! `smp.pf1_procs_2cpu_vs_1cpu` (two processes on two CPUs over one on
//! one: 2.00 is perfect scaling, and `linux.smp.pf1_procs_2cpu_vs_1cpu` is
//! what TCG and the host let Linux reach),
//! `smp.<pf1|pf2|pf3>_<procs|threads>_vs_linux` (two workers on two CPUs)
//! and `smp.munmap_4threads_vs_linux` (on two CPUs; above 1 is slower than
//! Linux here, unlike the rates), and the same of the median munmap, since
//! four threads on two CPUs make the mean mostly the waits of a thread
//! preempted on its way out of munmap. `cargo bench --bench kernel -- smp`
//! runs only this part.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::{BOOT_TIMEOUT, BootOptions, Firmware, Images, Qemu, images, workspace_root};

const BOOTS: usize = 3;

/// Guest memory of the benchmark boots: the fault benchmarks need 64 MiB
/// twice over (an address space and its copy-on-write child).
const BENCH_MEMORY: &str = "512M";
/// Whether the benchmark boots have QEMU allocate guest memory up front.
const BENCH_PREALLOC: bool = true;
/// vmbench's figures: (name, unit).
const USER_FIGURES: [(&str, &str); 9] = [
    ("anon_zero_fill", "ns/fault"),
    ("cow", "ns/fault"),
    ("munmap", "ns/page"),
    ("file_fault", "ns/page"),
    ("mremap_64m", "us"),
    ("sig_trap", "ns/trap"),
    ("prot1_trap_unprot", "ns/op"),
    ("protN", "ns/call"),
    ("thread_create_join", "ns/pair"),
];
/// How long one vmbench run (boot included) may take.
const USER_TIMEOUT: Duration = Duration::from_secs(900);

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Time from starting QEMU to the kernel's first log line.
fn boot_to_main(images: &Images, firmware: Firmware) -> anyhow::Result<Duration> {
    // The default log level: the line is an info line.
    let mut q = Qemu::spawn(images, &BootOptions::new(firmware, "mode=list"))?;
    q.wait_for(BOOT_TIMEOUT, |l| l.contains("kernel main reached").then_some(()))?;
    Ok(q.started.elapsed())
}

/// Time from starting QEMU to the start of the first in-kernel test.
fn boot_to_first_test(images: &Images) -> anyhow::Result<Duration> {
    let mut q = Qemu::spawn(images, &BootOptions::new(Firmware::Bios, "mode=test run=0 log=warn"))?;
    q.wait_for(BOOT_TIMEOUT, |l| l.starts_with("ktest: start").then_some(()))?;
    Ok(q.started.elapsed())
}

fn run() -> anyhow::Result<()> {
    if std::env::args().skip(1).any(|a| a == "smp") {
        return smp_vs_linux();
    }
    if std::env::args().skip(1).any(|a| a == "swap") {
        return swap_vs_linux();
    }
    if std::env::args().skip(1).any(|a| a == "soak") {
        return soak();
    }
    if std::env::args().skip(1).any(|a| a == "user") {
        return user_vs_linux();
    }
    let images = images()?;

    for (name, fw) in [("bios", Firmware::Bios), ("uefi", Firmware::Uefi)] {
        let times = (0..BOOTS).map(|_| boot_to_main(&images, fw)).collect::<anyhow::Result<Vec<_>>>()?;
        println!("bench: boot.{name}_to_main {} ms", median(times).as_millis());
    }
    let times = (0..BOOTS).map(|_| boot_to_first_test(&images)).collect::<anyhow::Result<Vec<_>>>()?;
    println!("bench: boot.bios_to_first_test {} ms", median(times).as_millis());

    // The kernel's own benchmarks, and the tick rate by the host's clock.
    // The fault benchmark needs 64 MiB twice over (an address space and its
    // copy-on-write child), so the kernel's benchmarks get more memory. QEMU
    // allocates guest memory lazily, and the host's first touch of a page
    // (a host page fault and zeroing) cost 10-25 us per page here, more than
    // the guest's whole fault: preallocating keeps that out of the figures.
    let mut opts = BootOptions::new(Firmware::Bios, "mode=bench log=warn");
    opts.memory = BENCH_MEMORY;
    opts.prealloc = BENCH_PREALLOC;
    // The root filesystem, for the file benchmarks.
    opts.disks = vec![tests::rootfs_disk(&images)];
    let mut q = Qemu::spawn(&images, &opts)?;
    let mut tick_start: Option<(u64, f64, Instant)> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        match q.next(deadline) {
            tests::Event::Line(l) => {
                if let Some(rest) = l.strip_prefix("ktick: start ") {
                    // "ktick: start <ticks> hz=<nominal>"
                    let (n, hz) = rest.split_once(" hz=").ok_or_else(|| anyhow::anyhow!("bad line {l:?}"))?;
                    tick_start = Some((n.parse()?, hz.trim().parse()?, Instant::now()));
                } else if let Some(n) = l.strip_prefix("ktick: end ") {
                    let (t0, nominal, at) = tick_start.ok_or_else(|| anyhow::anyhow!("ktick end before start"))?;
                    let ticks = n.trim().parse::<u64>()? - t0;
                    let hz = ticks as f64 / at.elapsed().as_secs_f64();
                    println!("bench: timer.tick_rate {hz:.0} Hz");
                    println!("bench: timer.tick_rate_vs_nominal {:.3} ratio", hz / nominal);
                } else if l.starts_with("bench: ") {
                    println!("{l}");
                }
            }
            tests::Event::Exited(s) if s.code() == Some(tests::EXIT_SUCCESS) => break,
            tests::Event::Exited(s) => anyhow::bail!("bench kernel exited with {s}:\n{}", q.transcript),
            tests::Event::TimedOut => anyhow::bail!("bench kernel timed out:\n{}", q.transcript),
        }
    }
    drop(q);

    // Swap and smp go on after a vmbench failure; all are reported.
    let user = user_vs_linux();
    let swap = swap_vs_linux();
    let smp = smp_vs_linux();
    user.and(swap).and(smp)
}

/// What a vmbench run printed: its `bench: user.<name>` figures.
type Figures = Vec<(String, u64)>;

/// `<prefix><name> <n> <unit>` anywhere in `line` (a console line may
/// carry a prefix of its own), for a (name, unit) of `known`.
fn parse_figure(line: &str, prefix: &str, known: &[(&str, &str)]) -> Option<(String, u64)> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    let mut w = rest.split_whitespace();
    let name = w.next()?;
    let value = w.next()?.parse().ok()?;
    let unit = w.next()?;
    known.iter().any(|&(n, u)| n == name && u == unit).then(|| (name.to_string(), value))
}

/// A vmbench figure: `bench: user.<name> <n> <unit>`.
fn parse_user_figure(line: &str) -> Option<(String, u64)> {
    parse_figure(line, "bench: user.", &USER_FIGURES)
}

/// How a command that runs vmbench ended.
struct UserRun {
    status: Option<i32>,
    figures: Figures,
    stderr: String,
}

/// Runs `cmd`, echoing its output to stderr behind `tag`, and collects the
/// figures `parse` finds in its lines. Kills it after [`USER_TIMEOUT`].
fn run_user(mut cmd: Command, tag: &str, parse: fn(&str) -> Option<(String, u64)>) -> anyhow::Result<UserRun> {
    use anyhow::Context;
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {what}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let stderr = child.stderr.take().context("no stderr")?;
    let tag_err = tag.to_string();
    let err_reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("{tag_err}! {line}");
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let tag_out = tag.to_string();
    let out_reader = std::thread::spawn(move || {
        let mut figures = Figures::new();
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches('\r');
            eprintln!("{tag_out}| {line}");
            figures.extend(parse(line));
        }
        figures
    });
    let deadline = Instant::now() + USER_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("{what} still running after {USER_TIMEOUT:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let figures = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(UserRun { status: status.code(), figures, stderr })
}

/// Builds `user/<name>.c` with musl-gcc into the target directory.
fn build_user(root: &Path, name: &str) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let dir = target.join("user");
    std::fs::create_dir_all(&dir)?;
    let elf = dir.join(name);
    let status = Command::new("musl-gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&elf)
        .arg(root.join(format!("user/{name}.c")))
        .status()
        .context("cannot run musl-gcc (install the Debian package musl-tools; run-qemu.sh does)")?;
    anyhow::ensure!(status.success(), "musl-gcc failed on user/{name}.c");
    Ok(elf)
}

/// vmbench on our kernel (`./run-qemu.sh run <elf>`, with the memory of the
/// benchmark boots) and on Linux, then the ratios of the two.
fn user_vs_linux() -> anyhow::Result<()> {
    let root = workspace_root();
    let elf = build_user(&root, "vmbench")?;

    // Our kernel. `run-qemu.sh run <elf>` boots it with the program handed in
    // as a child of init and exits with the program's status; QEMU_ARGS come
    // after its own -m, and QEMU takes the last -m.
    let mut qemu_args = format!("-m {BENCH_MEMORY}");
    if BENCH_PREALLOC {
        qemu_args.push_str(" -mem-prealloc");
    }
    let mut cmd = Command::new(root.join("run-qemu.sh"));
    cmd.arg("run").arg(&elf).env("QEMU_ARGS", &qemu_args).current_dir(&root);
    // A failure here is reported after the Linux run, which goes on regardless.
    let ours = run_user(cmd, "ours", parse_user_figure).and_then(|run| match run.status {
        Some(0) if run.figures.len() == USER_FIGURES.len() => Ok(Some(run.figures)),
        Some(2) if run.stderr.contains("unknown option or command") => {
            println!("skip: user.* on our kernel: ./run-qemu.sh has no `run <elf>` command yet");
            Ok(None)
        }
        Some(0) => anyhow::bail!("vmbench on our kernel printed {} of its {} figures", run.figures.len(), USER_FIGURES.len()),
        s => anyhow::bail!("vmbench on our kernel failed (`./run-qemu.sh run` exit status {s:?})"),
    });
    if let Ok(Some(figures)) = &ours {
        for (name, value) in figures {
            let unit = USER_FIGURES.iter().find(|f| f.0 == name).map_or("", |f| f.1);
            println!("bench: user.{name} {value} {unit}");
        }
    }

    // Linux, in the same QEMU: default CPU model, same memory.
    let mut cmd = Command::new(root.join("tests/linux/run-linux.sh"));
    cmd.arg(&elf).args(["-m", BENCH_MEMORY]);
    if BENCH_PREALLOC {
        cmd.arg("--prealloc");
    }
    let linux = run_user(cmd, "linux", parse_user_figure)?;
    anyhow::ensure!(linux.status == Some(0), "vmbench on Linux failed (tests/linux/run-linux.sh exit status {:?})", linux.status);
    anyhow::ensure!(
        linux.figures.len() == USER_FIGURES.len(),
        "vmbench on Linux printed {} of its {} figures",
        linux.figures.len(),
        USER_FIGURES.len()
    );
    for (name, value) in &linux.figures {
        let unit = USER_FIGURES.iter().find(|f| f.0 == name).map_or("", |f| f.1);
        println!("bench: linux.user.{name} {value} {unit}");
    }

    if let Ok(Some(ours)) = &ours {
        for (name, value) in ours {
            if let Some((_, l)) = linux.figures.iter().find(|(n, _)| n == name)
                && *l > 0
            {
                println!("bench: user.{name}_vs_linux {:.2} x", *value as f64 / *l as f64);
            }
        }
    }
    ours.map(|_| ())
}

/// Guest memory of the swap runs: as the pageout tests boot.
const SWAP_MEMORY: &str = "128M";
/// The swap workload, three times [`SWAP_MEMORY`].
const SWAP_MIB: &str = "384";
/// Size of the swap disk on both kernels (run-qemu.sh's default).
const SWAP_DISK: &str = "512M";
/// swapbench's figures: (name, unit).
const SWAP_FIGURES: [(&str, &str); 6] = [
    ("pageout", "pages/s"),
    ("pagein", "pages/s"),
    ("pages_out", "pages"),
    ("pages_in", "pages"),
    ("write_ms", "ms"),
    ("read_ms", "ms"),
];

/// A swapbench figure: `bench: swap.<name> <n> <unit>`.
fn parse_swap_figure(line: &str) -> Option<(String, u64)> {
    parse_figure(line, "bench: swap.", &SWAP_FIGURES)
}

/// One swapbench run, all of its figures or an error.
fn swap_run(cmd: Command, what: &str) -> anyhow::Result<Figures> {
    let run = run_user(cmd, what, parse_swap_figure)?;
    anyhow::ensure!(run.status == Some(0), "swapbench ({what}) failed (exit status {:?})", run.status);
    anyhow::ensure!(
        run.figures.len() == SWAP_FIGURES.len(),
        "swapbench ({what}) printed {} of its {} figures",
        run.figures.len(),
        SWAP_FIGURES.len()
    );
    Ok(run.figures)
}

fn figure(f: &Figures, name: &str) -> u64 {
    f.iter().find(|(n, _)| n == name).map_or(0, |f| f.1)
}

fn unit(name: &str) -> &'static str {
    SWAP_FIGURES.iter().find(|f| f.0 == name).map_or("", |f| f.1)
}

/// swapbench on our kernel and on Linux, with and without swap read-ahead;
/// the figures, the clustered/unclustered ratios and ours over Linux's.
fn swap_vs_linux() -> anyhow::Result<()> {
    let root = workspace_root();
    let elf = build_user(&root, "swapbench")?;
    let ours = |read_ahead: &str| {
        let mut cmd = Command::new(root.join("run-qemu.sh"));
        cmd.args(["--swap", SWAP_DISK, "run"])
            .arg(&elf)
            .args([SWAP_MIB])
            .env("MEMORY", SWAP_MEMORY)
            .env("KERNEL_CMDLINE", format!("mode=run log=warn swap.read_ahead={read_ahead}"))
            .env_remove("QEMU_ARGS")
            .current_dir(&root);
        swap_run(cmd, &format!("ours, read-ahead {read_ahead}"))
    };
    // Linux hands the words after `--` to /init as its arguments.
    let linux = |mode: &str| {
        let mut cmd = Command::new(root.join("tests/linux/run-linux.sh"));
        cmd.arg(&elf).args(["-m", SWAP_MEMORY, "--swap", SWAP_DISK]).env("LINUX_APPEND", format!("-- {SWAP_MIB} {mode}"));
        swap_run(cmd, &format!("linux, {mode}"))
    };
    let runs = [ours("on"), ours("off"), linux("clustered"), linux("unclustered")];
    let print = |prefix: &str, clustered: &Figures, unclustered: &Figures| {
        for (name, value) in clustered {
            println!("bench: {prefix}swap.{name} {value} {}", unit(name));
        }
        for name in ["pagein", "pages_in", "read_ms"] {
            println!("bench: {prefix}swap.{name}_unclustered {} {}", figure(unclustered, name), unit(name));
        }
        let single = figure(unclustered, "pagein");
        if single > 0 {
            println!(
                "bench: {prefix}swap.pagein_clustered_vs_unclustered {:.2} x",
                figure(clustered, "pagein") as f64 / single as f64
            );
        }
    };
    if let [Ok(on), Ok(off), ..] = &runs {
        print("", on, off);
    }
    if let [_, _, Ok(on), Ok(off)] = &runs {
        print("linux.", on, off);
    }
    if let [Ok(ours), Ok(ours_off), Ok(linux), Ok(linux_off)] = &runs {
        for (name, o, l) in [("pageout", ours, linux), ("pagein", ours, linux), ("pagein_unclustered", ours_off, linux_off)] {
            let key = name.trim_end_matches("_unclustered");
            let (o, l) = (figure(o, key), figure(l, key));
            if l > 0 {
                println!("bench: swap.{name}_vs_linux {:.2} x", o as f64 / l as f64);
            }
        }
    }
    let [a, b, c, d] = runs;
    a.and(b).and(c).and(d).map(|_| ())
}

/// Guest memory of the smp runs on both kernels: pf1's four 128 MiB
/// mappings at once, and room to spare. (Our kernel does not boot with
/// 1 GiB or more yet: early allocations such as the pmap's PV list heads,
/// 8 bytes a page, fail; hence one 128 MiB file for pf2 and pf3, not one
/// per worker.)
const SMP_MEMORY: &str = "768M";
/// Size the smp runs' copy of our root filesystem is grown to: 160 MiB
/// with 48 free cannot hold smpbench's 128 MiB file.
const SMP_ROOTFS_SIZE: &str = "512M";
/// The processor counts of the smp runs.
const SMP_CPUS: [u32; 2] = [1, 2];
/// smpbench's figures: (name, unit).
const SMP_FIGURES: [(&str, &str); 20] = [
    ("pf1_procs_1", "pages/s"),
    ("pf1_procs_2", "pages/s"),
    ("pf1_procs_4", "pages/s"),
    ("pf1_threads_1", "pages/s"),
    ("pf1_threads_2", "pages/s"),
    ("pf1_threads_4", "pages/s"),
    ("pf2_procs_1", "pages/s"),
    ("pf2_procs_2", "pages/s"),
    ("pf2_procs_4", "pages/s"),
    ("pf2_threads_1", "pages/s"),
    ("pf2_threads_2", "pages/s"),
    ("pf2_threads_4", "pages/s"),
    ("pf3_procs_1", "pages/s"),
    ("pf3_procs_2", "pages/s"),
    ("pf3_procs_4", "pages/s"),
    ("pf3_threads_1", "pages/s"),
    ("pf3_threads_2", "pages/s"),
    ("pf3_threads_4", "pages/s"),
    ("munmap_4threads", "ns"),
    ("munmap_4threads_median", "ns"),
];

/// An smpbench figure: `bench: smp.<name> <n> <unit>`.
fn parse_smp_figure(line: &str) -> Option<(String, u64)> {
    parse_figure(line, "bench: smp.", &SMP_FIGURES)
}

fn smp_unit(name: &str) -> &'static str {
    SMP_FIGURES.iter().find(|f| f.0 == name).map_or("", |f| f.1)
}

/// One smpbench run, all of its figures or an error.
fn smp_run(cmd: Command, what: &str) -> anyhow::Result<Figures> {
    let run = run_user(cmd, what, parse_smp_figure)?;
    anyhow::ensure!(run.status == Some(0), "smpbench ({what}) failed (exit status {:?})", run.status);
    anyhow::ensure!(
        run.figures.len() == SMP_FIGURES.len(),
        "smpbench ({what}) printed {} of its {} figures",
        run.figures.len(),
        SMP_FIGURES.len()
    );
    Ok(run.figures)
}

/// A copy of the release kernel's root filesystem grown to
/// [`SMP_ROOTFS_SIZE`] (sparse: only what the image holds takes room), for
/// smpbench's file.
fn grown_rootfs(root: &Path) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    let images = images()?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let dir = target.join("smpbench");
    std::fs::create_dir_all(&dir)?;
    let image = dir.join(format!("rootfs-{SMP_ROOTFS_SIZE}.img"));
    let status = Command::new("cp").arg("--sparse=always").arg(&images.fs).arg(&image).status().context("cannot run cp")?;
    anyhow::ensure!(status.success(), "cannot copy {} to {}", images.fs.display(), image.display());
    // -f: the image is fresh from mke2fs, never mounted.
    let out = Command::new("resize2fs")
        .arg("-f")
        .arg(&image)
        .arg(SMP_ROOTFS_SIZE)
        .output()
        .context("cannot run resize2fs (install the Debian package e2fsprogs; run-qemu.sh bench does)")?;
    anyhow::ensure!(out.status.success(), "resize2fs of {} failed:\n{}", image.display(), String::from_utf8_lossy(&out.stderr));
    Ok(image)
}

/// A ratio with two decimals, or three significant digits when it is
/// smaller than 0.1 (so that one far below Linux's does not print as 0.00).
fn ratio_digits(r: f64) -> String {
    let decimals = if r > 0.0 && r < 0.1 { (2.0 - r.log10().floor()) as usize } else { 2 };
    format!("{r:.decimals$}")
}

/// smpbench on our kernel and on Linux, each at every count of
/// [`SMP_CPUS`]; the figures, then the scaling and ours over Linux's.
/// The kernel's own benchmarks of several CPUs: `mode=bench bench=smp`
/// at `-smp 4` (`devtools/bench_smp.rs`: the page allocator's order-0 pair
/// on 1, 2 and 4 CPUs at once), then `bench=tlb` at `-smp 2`: 10^5 rounds
/// of the TLB shootdown check, a writer on the other CPU (at `-smp 4` on
/// the host's two cores the writers' spinning vCPUs take turns with the
/// unmapper's, and the rounds take most of an hour). Lines passed through.
fn kernel_smp() -> anyhow::Result<()> {
    let images = images()?;
    for (part, cpus, limit) in [("smp", 4, 600), ("tlb", 2, 1800)] {
        let mut opts = BootOptions::new(Firmware::Bios, format!("mode=bench bench={part} log=warn"));
        opts.memory = BENCH_MEMORY;
        opts.prealloc = BENCH_PREALLOC;
        opts.smp = cpus;
        let mut q = Qemu::spawn(&images, &opts)?;
        let deadline = Instant::now() + Duration::from_secs(limit);
        loop {
            match q.next(deadline) {
                tests::Event::Line(l) if l.starts_with("bench: ") => println!("{l}"),
                tests::Event::Line(_) => {}
                tests::Event::Exited(s) if s.code() == Some(tests::EXIT_SUCCESS) => break,
                tests::Event::Exited(s) => anyhow::bail!("bench={part} kernel exited with {s}:\n{}", q.transcript),
                tests::Event::TimedOut => anyhow::bail!("bench={part} kernel timed out:\n{}", q.transcript),
            }
        }
    }
    Ok(())
}

fn smp_vs_linux() -> anyhow::Result<()> {
    // The kernel's part goes on after a failure of its own; both are reported.
    let kernel = kernel_smp();
    if let Err(e) = &kernel {
        eprintln!("bench: the kernel's smp part failed: {e:#}");
    }
    let root = workspace_root();
    let elf = build_user(&root, "smpbench")?;
    let rootfs = grown_rootfs(&root)?;
    // Ours: `run-qemu.sh --smp N run <elf>`, no swap disk (Linux has none).
    let ours = |cpus: u32| {
        let mut cmd = Command::new(root.join("run-qemu.sh"));
        cmd.args(["--smp", &cpus.to_string(), "--swap", "0", "run"])
            .arg(&elf)
            .env("MEMORY", SMP_MEMORY)
            .env("ROOTFS_IMAGE", &rootfs)
            .env("QEMU_ARGS", if BENCH_PREALLOC { "-mem-prealloc" } else { "" })
            .current_dir(&root);
        smp_run(cmd, &format!("ours, -smp {cpus}"))
    };
    let linux = |cpus: u32| {
        let mut cmd = Command::new(root.join("tests/linux/run-linux.sh"));
        cmd.arg(&elf).args(["-m", SMP_MEMORY, "-smp", &cpus.to_string()]);
        if BENCH_PREALLOC {
            cmd.arg("--prealloc");
        }
        smp_run(cmd, &format!("linux, -smp {cpus}"))
    };
    let started = Instant::now();
    let ours: Vec<anyhow::Result<Figures>> = SMP_CPUS.iter().map(|&n| ours(n)).collect();
    let linux: Vec<anyhow::Result<Figures>> = SMP_CPUS.iter().map(|&n| linux(n)).collect();
    let _ = std::fs::remove_file(&rootfs);
    eprintln!("smp: four runs in {} s", started.elapsed().as_secs());

    for (prefix, runs) in [("", &ours), ("linux.", &linux)] {
        for (cpus, run) in SMP_CPUS.iter().zip(runs) {
            if let Ok(figures) = run {
                for (name, value) in figures {
                    println!("bench: {prefix}smp.cpu{cpus}.{name} {value} {}", smp_unit(name));
                }
            }
        }
    }
    // Run i of a kernel's: -smp SMP_CPUS[i].
    fn at(runs: &[anyhow::Result<Figures>], i: usize) -> Option<&Figures> {
        runs.get(i).and_then(|r| r.as_ref().ok())
    }
    let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
    for (prefix, runs) in [("", &ours), ("linux.", &linux)] {
        if let (Some(one), Some(two)) = (at(runs, 0), at(runs, 1))
            && let Some(r) = ratio(figure(two, "pf1_procs_2"), figure(one, "pf1_procs_1"))
        {
            println!("bench: {prefix}smp.pf1_procs_2cpu_vs_1cpu {} x", ratio_digits(r));
        }
    }
    if let (Some(o), Some(l)) = (at(&ours, 1), at(&linux, 1)) {
        for test in ["pf1", "pf2", "pf3"] {
            for mode in ["procs", "threads"] {
                let name = format!("{test}_{mode}_2");
                if let Some(r) = ratio(figure(o, &name), figure(l, &name)) {
                    println!("bench: smp.{test}_{mode}_vs_linux {} x", ratio_digits(r));
                }
            }
        }
        for name in ["munmap_4threads", "munmap_4threads_median"] {
            if let Some(r) = ratio(figure(o, name), figure(l, name)) {
                println!("bench: smp.{name}_vs_linux {} x", ratio_digits(r));
            }
        }
    }
    let mut failures = ours.into_iter().chain(linux).filter_map(Result::err).chain(kernel.err()).collect::<Vec<_>>();
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.remove(0)),
        n => {
            for e in &failures {
                eprintln!("error: {e:#}");
            }
            anyhow::bail!("{n} smp benchmark runs failed (above)")
        }
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// A number from the environment, or `default`.
fn env_number(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|_| anyhow::anyhow!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

/// `./run-qemu.sh bench soak`: the long runs that a hostile or merely busy
/// program makes, on the release kernel. Each run must end with its
/// program's success, every word read back as written, and the kernel's
/// closing line (every process gone, page invariants clean); a hang is a
/// run past three times its length. The figures:
///
/// - `soak.long_*`: `user/soak.c`, 4 workers of 24 MiB each in a 64 MiB
///   guest with swap for `SOAK_SECONDS` (600): maps, fills, checks, forks
///   copy-on-write checkers, unmaps.
/// - `soak.short_*`: `SOAK_SHORT_RUNS` (0) runs of the test suite's soak
///   (3 x 16 MiB, 60 s), each a boot of its own: the runs that hung were
///   those, before the scheduler stopped allocating.
/// - `soak.swap_smp4_*`: `SWAP_SMP_RUNS` (10) runs of `user/swapper.c` over
///   384 MiB (three times RAM) in a 128 MiB guest at `-smp 4`, its modes in
///   turn (one process, two, fork): every word it wrote reads back.
/// - `fuzz.*`: `user/fuzz.c`, `FUZZ_CALLS` (10^6) system calls with random
///   numbers and arguments over 5 seeds, with page, trie-node and PV-entry
///   allocation each failing 1 % of the time.
fn soak() -> anyhow::Result<()> {
    use tests::userprog::{Run, run};
    let images = images()?;
    let mut failures = Vec::new();

    let secs = env_number("SOAK_SECONDS", 600)?;
    let runs = |name: &str, workers: u64, mib: u64, secs: u64, count: u64, failures: &mut Vec<String>| {
        let (mut words, mut wrong, mut hangs, mut failed) = (0u64, 0u64, 0u64, 0u64);
        for i in 0..count {
            let r = Run {
                name: "soak",
                args: vec![workers.to_string(), secs.to_string(), mib.to_string()],
                memory: "64M",
                cmdline: "",
                timeout: Duration::from_secs(3 * secs + 60),
                smp: 1,
            };
            match run(&images, &r) {
                Err(e) => {
                    hangs += 1;
                    failures.push(format!("{name} run {i}: {e:#}"));
                }
                Ok(out) => {
                    let line = out.last_line("soak: ").filter(|l| l.contains(" words checked, "));
                    let number = |after: &str| -> Option<u64> {
                        let before = line?.split(after).next()?;
                        before.rsplit(' ').next()?.parse().ok()
                    };
                    words += number(" words checked").unwrap_or(0);
                    wrong += number(" wrong").unwrap_or(0);
                    if out.status != Some(0) || line.is_none() || !out.invariants_hold() {
                        failed += 1;
                        failures.push(format!("{name} run {i} (exit {:?}):\n{}", out.status, out.stdout));
                    }
                }
            }
        }
        println!("bench: soak.{name}_runs {count} runs");
        println!("bench: soak.{name}_hangs {hangs} runs");
        println!("bench: soak.{name}_failed {failed} runs");
        println!("bench: soak.{name}_words_checked {words} words");
        println!("bench: soak.{name}_words_wrong {wrong} words");
    };
    runs("long", 4, 24, secs, 1, &mut failures);
    runs("short", 3, 16, 60, env_number("SOAK_SHORT_RUNS", 0)?, &mut failures);

    // Programs three times larger than RAM on four processors: the
    // faulting processes, the pageout daemon and the laundry on CPUs of
    // their own, every word checked by the program.
    let (count, mut failed) = (env_number("SWAP_SMP_RUNS", 10)?, 0u64);
    let start = Instant::now();
    for i in 0..count {
        let mode = ["one", "two", "fork"][i as usize % 3];
        let r = Run {
            name: "swapper",
            args: vec!["384".into(), mode.into()],
            memory: "128M",
            cmdline: "",
            timeout: Duration::from_secs(900),
            smp: 4,
        };
        match run(&images, &r) {
            Ok(out) if out.status == Some(0) && out.last_line("swapper: ok").is_some() && out.invariants_hold() => {}
            Ok(out) => {
                failed += 1;
                failures.push(format!("swapper 384 {mode} at -smp 4, run {i} (exit {:?}):\n{}", out.status, out.stdout));
            }
            Err(e) => {
                failed += 1;
                failures.push(format!("swapper 384 {mode} at -smp 4, run {i}: {e:#}"));
            }
        }
    }
    println!("bench: soak.swap_smp4_runs {count} runs");
    println!("bench: soak.swap_smp4_failed {failed} runs");
    println!("bench: soak.swap_smp4_seconds {} s", start.elapsed().as_secs());

    // The fuzzer: the calls spread over five seeds, each a boot of its own.
    let total = env_number("FUZZ_CALLS", 1_000_000)?;
    let (mut calls, mut hangs, mut failed) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    for seed in 101..106u64 {
        let fail = format!("fail.page.alloc=1%@{seed} fail.radix.node_alloc=1%@{seed} fail.pmap.pv_alloc=1%@{seed}");
        let r = Run {
            name: "fuzz",
            args: vec![(total / 5).to_string(), seed.to_string()],
            memory: "128M",
            cmdline: &fail,
            timeout: Duration::from_secs(3600),
            smp: 1,
        };
        match run(&images, &r) {
            Err(e) => {
                hangs += 1;
                failures.push(format!("fuzz seed {seed}: {e:#}"));
            }
            Ok(out) => {
                // "fuzz: N calls by W workers (...)"
                // A kernel line may have run into the program's: the tally
                // is looked for anywhere in a line.
                let tally = out.stdout.lines().rev().find_map(|l| l.split("fuzz: ").nth(1).filter(|t| t.contains(" calls by ")));
                let made = tally.and_then(|t| t.split(' ').next()?.parse::<u64>().ok());
                calls += made.unwrap_or(0);
                if out.status != Some(0) || out.last_line("fuzz: ok").is_none() || !out.invariants_hold() {
                    failed += 1;
                    failures.push(format!("fuzz seed {seed} (exit {:?}):\n{}", out.status, out.stdout));
                }
            }
        }
    }
    println!("bench: fuzz.calls {calls} calls");
    println!("bench: fuzz.seconds {} s", start.elapsed().as_secs());
    println!("bench: fuzz.hangs {hangs} runs");
    println!("bench: fuzz.failed {failed} runs");
    for f in &failures {
        eprintln!("{f}");
    }
    anyhow::ensure!(failures.is_empty(), "{} soak or fuzz runs failed", failures.len());
    Ok(())
}
