//! Every in-kernel test as a cargo test, plus the host-side checks of booting
//! (both firmware paths) and of debugging with gdb.
//!
//! The kernel's tests run first, all in one go (restarting QEMU only when a
//! test ends the run); the trials then report what each one did, so the usual
//! `test result:` line counts them. Filters work as for any cargo test:
//! `cargo test -p tests --test kernel -- heap` boots the kernel for the
//! matching tests only.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use tests::{
    BOOT_TIMEOUT, BootOptions, EXIT_SUCCESS, Firmware, Images, KERNEL_BASE, Outcome, Qemu, images, list_tests, run_tests,
    run_tests_on,
};

fn selected(args: &Arguments, name: &str) -> bool {
    let matches = |pat: &str| if args.exact { name == pat } else { name.contains(pat) };
    if let Some(f) = &args.filter
        && !matches(f)
    {
        return false;
    }
    !args.skip.iter().any(|s| matches(s))
}

fn main() {
    let args = Arguments::from_args();
    let images = match images() {
        Ok(i) => Arc::new(i),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    };

    let kernel_tests = match list_tests(&images, Firmware::Bios) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot list the in-kernel tests: {e:#}");
            std::process::exit(1);
        }
    };

    let chosen: Vec<usize> = kernel_tests.iter().filter(|t| selected(&args, &t.name)).map(|t| t.index).collect();
    let mut results: BTreeMap<usize, Outcome> = BTreeMap::new();
    if !args.list && !chosen.is_empty() {
        match run_tests(&images, Firmware::Bios, &kernel_tests, &chosen) {
            Ok((r, stats)) => {
                eprintln!(
                    "in-kernel tests: {} run in {:.1} s over {} boot(s); boot to first test {:.2} s",
                    r.len(),
                    stats.total.as_secs_f64(),
                    stats.boots,
                    stats.boot_to_first_test.unwrap_or_default().as_secs_f64()
                );
                results = r;
            }
            Err(e) => {
                eprintln!("error: running the in-kernel tests failed: {e:#}");
                std::process::exit(1);
            }
        }
    }

    let mut trials: Vec<Trial> = kernel_tests
        .iter()
        .map(|t| {
            let outcome = results.get(&t.index).cloned();
            Trial::test(t.name.clone(), move || match outcome {
                Some(o) if o.passed => Ok(()),
                Some(o) => Err(Failed::from(o.message)),
                None => Err(Failed::from("the kernel reported no result for this test")),
            })
            .with_kind("kernel")
        })
        .collect();

    let count = kernel_tests.len();
    let i = images.clone();
    trials.push(Trial::test("boot::bios_reaches_test_runner", move || bios_boot(&i, count)).with_kind("host"));
    let i = images.clone();
    let on_uefi: Vec<Option<usize>> = [
        "kernel::kern::time::ticks_advance",
        "kernel::dev::virtio_blk::reads_match_the_pattern",
        "kernel::proc::file_calls",
        "kernel::mm::swap::runs_are_written_and_read_back",
    ]
    .iter()
    .map(|n| kernel_tests.iter().find(|t| t.name == *n).map(|t| t.index))
    .collect();
    trials.push(Trial::test("boot::uefi_reaches_test_runner", move || uefi_boot(&i, count, &on_uefi)).with_kind("host"));
    let i = images.clone();
    trials.push(Trial::test("boot::demo_exits_cleanly", move || demo(&i)).with_kind("host"));
    let i = images.clone();
    let smp_check =
        kernel_tests.iter().find(|t| t.name == "kernel::arch::smp::every_cpu_the_madt_lists_is_online").map(|t| t.index);
    trials.push(Trial::test("boot::every_cpu_comes_online_smp_1_to_8", move || smp_bring_up(&i, smp_check)).with_kind("host"));
    let i = images.clone();
    trials.push(Trial::test("run::a_host_program_and_its_status", move || run_program(&i)).with_kind("host"));
    let i = images.clone();
    trials.push(Trial::test("run::a_64_mib_program", move || run_large_program(&i)).with_kind("host"));
    let i = images.clone();
    trials.push(Trial::test("fs::mapped_file_checksum_matches_the_host", move || mapped_checksum(&i)).with_kind("host"));
    let i = images.clone();
    trials.push(
        Trial::test("swap::mapped_file_larger_than_ram_read_twice", move || mapped_file_larger_than_ram(&i)).with_kind("host"),
    );
    let i = images.clone();
    let writer = kernel_tests.iter().find(|t| t.name == "kernel::fs::writes_through_a_mapping_reach_the_disk").map(|t| t.index);
    trials.push(
        Trial::test("fs::kernel_writes_reach_the_image", move || kernel_writes_reach_the_image(&i, writer)).with_kind("host"),
    );
    let i = images.clone();
    let on_max: Vec<usize> = kernel_tests
        .iter()
        .filter(|t| t.name.starts_with("kernel::proc::") || t.name.starts_with("kernel::arch::cpu::"))
        .map(|t| t.index)
        .collect();
    let listed = kernel_tests.clone();
    trials.push(Trial::test("boot::user_programs_with_smep_and_smap", move || cpu_max(&i, &listed, &on_max)).with_kind("host"));
    let i = images.clone();
    trials.push(Trial::test("soak::three_workers_of_16_mib_in_64_mib_for_60_s", move || soak(&i, 3, 60, 16)).with_kind("host"));
    let i = images.clone();
    trials.push(Trial::test("gdb::breakpoint_in_kernel_main", move || gdb_session(&i)).with_kind("host"));
    let i = images.clone();
    trials.push(
        Trial::test("gdb::vm_commands_match_the_kernel_bios", move || gdb_vm_commands(&i, Firmware::Bios)).with_kind("host"),
    );
    let i = images.clone();
    trials.push(
        Trial::test("gdb::vm_commands_match_the_kernel_uefi", move || gdb_vm_commands(&i, Firmware::Uefi)).with_kind("host"),
    );
    let i = images.clone();
    trials.push(Trial::test("gdb::vm_steps_counts_a_copy_on_write_fault", move || gdb_vm_steps(&i)).with_kind("host"));

    let conclusion = libtest_mimic::run(&args, trials);
    // A failure's output can be long (a bomb's console), and the last
    // test's is printed last: the reasons again, in a few lines at the end.
    let failed: Vec<_> = kernel_tests.iter().filter_map(|t| Some((t, results.get(&t.index).filter(|o| !o.passed)?))).collect();
    if !failed.is_empty() {
        eprintln!("in-kernel failures, in short:");
        for (t, o) in failed {
            let why = o.message.lines().next().unwrap_or_default();
            let panic = o.message.lines().find(|l| l.contains("KERNEL PANIC at ")).unwrap_or_default();
            eprintln!("  {}: {why}{}{panic}", t.name, if panic.is_empty() { "" } else { ": " });
        }
    }
    conclusion.exit();
}

/// The BIOS image lists the same tests, and the kernel reports being loaded at
/// the base gdb assumes.
fn bios_boot(images: &Images, count: usize) -> Result<(), Failed> {
    let mut q = Qemu::spawn(images, &BootOptions::new(Firmware::Bios, "mode=list"))?;
    let base = q.wait_for(BOOT_TIMEOUT, |l| {
        let rest = l.split("booted: kernel at ").nth(1)?;
        u64::from_str_radix(rest.split(',').next()?.trim_start_matches("0x"), 16).ok()
    })?;
    if base != KERNEL_BASE {
        return Err(format!("kernel loaded at {base:#x}, gdb expects {KERNEL_BASE:#x}").into());
    }
    let listed: usize = q.wait_for(Duration::from_secs(10), |l| l.strip_prefix("ktest: list ")?.parse().ok())?;
    if listed != count || listed == 0 {
        return Err(format!("listed {listed} tests, expected {count}").into());
    }
    Ok(())
}

/// The UEFI image boots to the same test runner and passes tests that need
/// interrupts, the timer and the heap, and the virtio disks (whose registers
/// OVMF puts above the direct map) with the root filesystem and swap on them.
fn uefi_boot(images: &Images, count: usize, selection: &[Option<usize>]) -> Result<(), Failed> {
    let listed = list_tests(images, Firmware::Uefi)?;
    if listed.len() != count {
        return Err(format!("UEFI boot lists {} tests, BIOS boot {count}", listed.len()).into());
    }
    let chosen: Vec<usize> = selection.iter().map(|i| i.ok_or("a test run under UEFI is missing")).collect::<Result<_, _>>()?;
    let (results, _) = run_tests(images, Firmware::Uefi, &listed, &chosen)?;
    for idx in chosen {
        let name = listed.iter().find(|t| t.index == idx).map_or("?", |t| t.name.as_str());
        match results.get(&idx) {
            Some(o) if o.passed => {}
            Some(o) => return Err(format!("{name} failed under UEFI: {}", o.message).into()),
            None => return Err(format!("{name}: no result under UEFI").into()),
        }
    }
    Ok(())
}

/// With `-smp 1`, 2, 4 and 8 (BIOS) and `-smp 4` (UEFI) every processor
/// QEMU was given comes online, and the in-kernel check of every CPU's
/// number, APIC ID, TSS and IST stacks (`every_cpu_the_madt_lists_is_online`)
/// passes there.
fn smp_bring_up(images: &Images, check: Option<usize>) -> Result<(), Failed> {
    let check = check.ok_or("the in-kernel test every_cpu_the_madt_lists_is_online is missing")?;
    for (firmware, n) in [(Firmware::Bios, 1), (Firmware::Bios, 2), (Firmware::Bios, 4), (Firmware::Bios, 8), (Firmware::Uefi, 4)]
    {
        let mut opts = BootOptions::new(firmware, format!("mode=test log=info run={check}"));
        opts.smp = n;
        let mut q = Qemu::spawn(images, &opts)?;
        let online: u32 = q
            .wait_for(BOOT_TIMEOUT, |l| l.split("smp: ").last()?.split(" CPU").next()?.parse().ok())
            .map_err(|e| format!("-smp {n} ({firmware:?}): {e}"))?;
        let passed = q
            .wait_for(BOOT_TIMEOUT, |l| {
                if l.starts_with("ktest: ok ") { Some(true) } else { l.starts_with("ktest: FAILED ").then_some(false) }
            })
            .map_err(|e| format!("-smp {n} ({firmware:?}): {e}"))?;
        q.kill();
        if online != n || !passed {
            return Err(
                format!("-smp {n} ({firmware:?}): {online} CPUs online, check passed: {passed}:\n{}", q.transcript).into()
            );
        }
    }
    Ok(())
}

/// The demo (what `./run-qemu.sh` shows) runs to its end and exits with success.
fn demo(images: &Images) -> Result<(), Failed> {
    let mut q = Qemu::spawn(images, &BootOptions::new(Firmware::Bios, "mode=demo"))?;
    let status = q.wait_exit(BOOT_TIMEOUT)?;
    for want in [
        "memory:",
        "heap:",
        "timer:",
        "demo: touched 1024 fresh pages",
        "rewrote the first half (copy-on-write)",
        "the parent still sees 1024 of 1024 pages unchanged",
        "was killed by signal 11",
        "init: exited with status 0",
        "vm: every process gone",
        "page invariants: hold",
        "vm counters: faults:",
        "demo: done",
    ] {
        if !q.transcript.lines().any(|l| l.contains(want)) {
            return Err(format!("demo output lacks {want:?}:\n{}", q.transcript).into());
        }
    }
    if status != EXIT_SUCCESS {
        return Err(format!("demo exited with {status}:\n{}", q.transcript).into());
    }
    Ok(())
}

/// On `-cpu max` (which has SMEP and SMAP) the kernel turns both on, and the
/// user-program tests and the SMAP probe pass there too.
fn cpu_max(images: &Images, tests: &[tests::TestInfo], selection: &[usize]) -> Result<(), Failed> {
    if selection.len() < 10 {
        return Err(format!("only {} user-program tests found", selection.len()).into());
    }
    let (results, _) = run_tests_on(images, Firmware::Bios, Some("max"), tests, selection)?;
    let failed: Vec<String> = selection
        .iter()
        .filter(|i| !results.get(i).is_some_and(|o| o.passed))
        .map(|i| {
            let name = tests.iter().find(|t| t.index == *i).map_or("?", |t| t.name.as_str());
            format!("{name}: {}", results.get(i).map_or("no result", |o| o.message.as_str()))
        })
        .collect();
    if !failed.is_empty() {
        return Err(format!("under -cpu max:\n{}", failed.join("\n")).into());
    }
    Ok(())
}

/// `user/cksum.c`, run with `./run-qemu.sh run`, maps the 32 MiB data file
/// of the root image and checksums it through the mapping (the vnode
/// pager, with read-ahead); the host's checksum of the same bytes matches.
fn mapped_checksum(images: &Images) -> Result<(), Failed> {
    checksum_run(images, "128M", "data/seq32", boot::DATA_SIZE, 1)
}

/// The 64 MiB data file, larger than the 64 MiB guest's memory, is mapped
/// and checksummed twice: the second pass reads again what the pageout
/// daemon dropped during the first, and both match the host's checksum.
fn mapped_file_larger_than_ram(images: &Images) -> Result<(), Failed> {
    checksum_run(images, "64M", "data/seq64", 2 * boot::DATA_SIZE, 2)
}

/// `user/soak.c` in a 64 MiB guest with swap: `workers` processes of `mib`
/// MiB each map, fill, check, fork checkers and unmap for `secs` seconds.
/// Every word must read back as written, the kernel must not hang (the run
/// is given three times its length, then killed), and once every process is
/// gone the page invariants must hold.
fn soak(images: &Images, workers: u32, secs: u32, mib: u32) -> Result<(), Failed> {
    let run = tests::userprog::Run {
        name: "soak",
        args: vec![workers.to_string(), secs.to_string(), mib.to_string()],
        memory: "64M",
        cmdline: "",
        timeout: Duration::from_secs(3 * secs as u64 + 60),
        smp: tests::default_smp(),
    };
    let out = tests::userprog::run(images, &run)?;
    match out.last_line("soak: ").filter(|l| l.contains(" words checked, ")) {
        Some(line) if out.status == Some(0) && line.contains(" 0 wrong,") && out.invariants_hold() => {
            eprintln!("{line}");
            Ok(())
        }
        _ => Err(format!("soak failed (exit {:?}):\n{}{}", out.status, out.stdout, out.stderr).into()),
    }
}

/// Runs `cksum` on `/<file>` (`size` bytes of the data pattern) `times`
/// times in one program, in a guest of `memory`; every line must carry the
/// host's checksum.
fn checksum_run(images: &Images, memory: &str, file: &str, size: usize, times: usize) -> Result<(), Failed> {
    let dir = std::env::temp_dir().join(format!("bsdvm-cksum-{}-{memory}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let prog = dir.join("cksum");
    let src = tests::workspace_root().join("user/cksum.c");
    let cc = Command::new("musl-gcc").args(["-static", "-O2", "-o"]).arg(&prog).arg(&src).status()?;
    if !cc.success() {
        return Err("musl-gcc failed on user/cksum.c".into());
    }
    let path = format!("/{file}");
    let out = Command::new(tests::workspace_root().join("run-qemu.sh"))
        .arg("run")
        .arg(&prog)
        .args(std::iter::repeat_n(&path, times))
        .env("KERNEL_ELF", &images.kernel)
        .env("MEMORY", memory)
        .stdin(Stdio::null())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let want = format!("{size} {:016x} {path}", boot::fnv1a((0..size).map(boot::data_byte)));
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() || stdout.lines().filter(|l| *l == want).count() != times {
        return Err(format!("expected {times} x {want:?} ({memory}); exit {:?}, output:\n{stdout}", out.status.code()).into());
    }
    Ok(())
}

/// The kernel writes a file (through the filesystem and a shared mapping) on
/// a copy of the root image and powers off; the host then finds the image
/// clean (`e2fsck -fn`) and the file's bytes as the kernel left them
/// (`debugfs`).
fn kernel_writes_reach_the_image(images: &Images, test: Option<usize>) -> Result<(), Failed> {
    let test = test.ok_or("kernel::fs::writes_through_a_mapping_reach_the_disk is missing")?;
    let dir = std::env::temp_dir().join(format!("bsdvm-fs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let image = dir.join("fs.img");
    std::fs::copy(&images.fs, &image)?;
    let mut opts = BootOptions::new(Firmware::Bios, format!("mode=test run={test}"));
    opts.disks = vec![tests::Disk { path: image.clone(), serial: "rootfs".into(), snapshot: false }];
    let mut q = Qemu::spawn(images, &opts)?;
    let status = q.wait_exit(BOOT_TIMEOUT)?;
    if status != EXIT_SUCCESS || !q.transcript.contains("ktest: ok") {
        return Err(format!("the writing test failed (status {status}):\n{}", q.transcript).into());
    }
    let fsck = Command::new("e2fsck").arg("-fn").arg(&image).output()?;
    if !fsck.status.success() {
        return Err(format!(
            "e2fsck -fn finds the image unclean:\n{}{}",
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        )
        .into());
    }
    let cat = Command::new("debugfs").arg("-R").arg("cat /tmp/written-by-the-kernel").arg(&image).output()?;
    let want: Vec<u8> = (0..8192u32)
        .map(|i| match i {
            0 => b'M',
            4097 => b'N',
            _ => b'a' + (i % 26) as u8,
        })
        .collect();
    if cat.stdout != want {
        return Err(format!("debugfs reads {} bytes, not what the kernel wrote", cat.stdout.len()).into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `./run-qemu.sh run <program> [args]`: a static musl program built here
/// runs under init with its arguments, its output reaches stdout, and the
/// script exits with its status (128 + the signal when it was killed).
/// `./run-qemu.sh run` of a static program of more than 64 MiB (a 64 MiB
/// array in .data) in the default 128 MiB guest: the kernel reads it into
/// pages of kernel virtual memory (not one heap block, which failed with
/// NoMemory from 6.4 MB on), and the program reads every page of its array
/// and writes its last byte.
fn run_large_program(images: &Images) -> Result<(), Failed> {
    let dir = std::env::temp_dir().join(format!("bsdvm-big-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let src = dir.join("big.c");
    std::fs::write(
        &src,
        r#"#include <stdio.h>
static char big[64 << 20] = {1, 2, 3};
int main(void) {
    unsigned long sum = 0;
    for (unsigned long i = 0; i < sizeof big; i += 4096) sum += big[i];
    big[sizeof big - 1] = 7;
    printf("big: %lu bytes, sum %lu, last %d\n", (unsigned long)sizeof big, sum + big[1] + big[2], big[sizeof big - 1]);
    return 0;
}
"#,
    )?;
    let prog = dir.join("big");
    let cc = Command::new("musl-gcc").args(["-static", "-O2", "-o"]).arg(&prog).arg(&src).status()?;
    if !cc.success() {
        return Err("musl-gcc failed".into());
    }
    let size = std::fs::metadata(&prog)?.len();
    let out = Command::new(tests::workspace_root().join("run-qemu.sh"))
        .arg("run")
        .arg(&prog)
        .env("KERNEL_ELF", &images.kernel)
        .stdin(Stdio::null())
        .output()?;
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if size < 64 << 20 || !out.status.success() || !stdout.contains("big: 67108864 bytes, sum 6, last 7\n") {
        return Err(format!(
            "a {size}-byte program: exit {:?}, output:\n{stdout}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

fn run_program(images: &Images) -> Result<(), Failed> {
    let dir = std::env::temp_dir().join(format!("bsdvm-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let src = dir.join("prog.c");
    std::fs::write(
        &src,
        r#"#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "cat") == 0) {
        char b[7];
        ssize_t n;
        while ((n = read(0, b, sizeof b)) > 0) write(1, b, n);
        return n == 0 ? 3 : 4;
    }
    for (int i = 1; i < argc; i++) printf("arg %d [%s]\n", i, argv[i]);
    if (argc > 1 && strcmp(argv[1], "crash") == 0) *(volatile int *)0 = 1;
    return 7;
}
"#,
    )?;
    let prog = dir.join("prog");
    let cc = Command::new("musl-gcc").args(["-static", "-O2", "-o"]).arg(&prog).arg(&src).status()?;
    if !cc.success() {
        return Err("musl-gcc failed".into());
    }
    let run_with = |args: &[&str], input: &[u8]| -> Result<(i32, String), Failed> {
        use std::io::Write;
        let mut child = Command::new(tests::workspace_root().join("run-qemu.sh"))
            .arg("run")
            .arg(&prog)
            .args(args)
            .env("KERNEL_ELF", &images.kernel)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().ok_or("no stdin")?.write_all(input)?;
        let out = child.wait_with_output()?;
        Ok((out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned()))
    };
    let run = |args: &[&str]| run_with(args, b"");
    let (code, out) = run(&["one", "two words", ""])?;
    if code != 7 || !out.contains("arg 1 [one]\narg 2 [two words]\narg 3 []\n") {
        return Err(format!("exit status {code}, output:\n{out}").into());
    }
    // Piped input is read whole, then the end of input.
    let input = "first line\nsecond, longer line\n";
    let (code, out) = run_with(&["cat"], input.as_bytes())?;
    if code != 3 || out != input {
        return Err(format!("cat of piped input: exit status {code}, output:\n{out:?}").into());
    }
    let (code, out) = run(&["crash"])?;
    if code != 128 + 11 || !out.contains("killed by signal 11") {
        return Err(format!("a crashing program: exit status {code}, output:\n{out}").into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The gdb command run-qemu.sh prints: load the vm commands (tools/gdb/) and
/// the symbols at the kernel's base, and attach. Returns the arguments that
/// come before any of the caller's own.
pub fn gdb_base_args(images: &Images, port: u16) -> Vec<String> {
    vec![
        "-nx".into(),
        "-ex".into(),
        "set pagination off".into(),
        "-ex".into(),
        format!("source {}", tests::workspace_root().join("tools/gdb/vm.py").display()),
        "-ex".into(),
        format!("symbol-file -o {KERNEL_BASE:#x} {}", images.kernel.display()),
        "-ex".into(),
        format!("target remote 127.0.0.1:{port}"),
    ]
}

/// gdb attaches to a halted QEMU, stops at `kernel_main` with a hardware
/// breakpoint, and shows Rust names in `bt` and `info symbol`.
fn gdb_session(images: &Images) -> Result<(), Failed> {
    let cmds = ["hbreak kernel::kernel_main", "continue", "bt", "info symbol $pc", "kill"].map(String::from);
    let opts = BootOptions::new(Firmware::Bios, "mode=demo");
    let (mut q, text) = gdb_batch(images, opts, &cmds, Duration::from_secs(120))?;
    q.kill();
    let hit = text.lines().any(|l| l.contains("Breakpoint 1,") && l.contains("kernel::kernel_main"));
    let bt = text.lines().any(|l| l.starts_with("#0") && l.contains("kernel::kernel_main"));
    let caller = text.lines().any(|l| l.starts_with("#1") && l.contains("kernel::"));
    // `info symbol` prints the demangled linkage name; with v0 mangling it
    // carries the crate's disambiguator: `kernel[6bce42699ea06ffd]::kernel_main`.
    let sym = text.lines().any(|l| l.starts_with("kernel") && l.contains("::kernel_main + ") && l.contains("in section .text"));
    if hit && bt && caller && sym {
        Ok(())
    } else {
        Err(format!(
            "gdb session incomplete (breakpoint hit: {hit}, bt frame 0: {bt}, bt frame 1: {caller}, info symbol: {sym}):\n{text}"
        )
        .into())
    }
}

/// The `vm` gdb commands (tools/gdb/) against the kernel's own view of the
/// same state: `mode=vmstate` prints its view and stops at
/// `kernel::devtools::vmstate::stop_here`; gdb runs every command of
/// `tests::gdbvm::commands` there, sets the `page.alloc` fail point, and
/// lets the kernel go on, which then finds the fail point set. Both outputs
/// are parsed and compared field by field (`tests::gdbvm::compare`).
fn gdb_vm_commands(images: &Images, firmware: Firmware) -> Result<(), Failed> {
    use tests::gdbvm::{self, MARK};

    let mut cmds: Vec<String> = vec!["hbreak kernel::devtools::vmstate::stop_here".into(), "continue".into()];
    for (cmd, _) in gdbvm::commands() {
        cmds.extend([format!("echo {MARK}{cmd}\\n"), cmd]);
    }
    // On to the end: the kernel reports what the fail point did.
    cmds.extend([format!("echo {MARK}end\\n"), "continue".into()]);
    let (mut q, text) = gdb_batch(images, vmstate_boot(images, firmware), &cmds, Duration::from_secs(180))?;
    let status = q.wait_exit(BOOT_TIMEOUT)?;
    let report = |why: String| -> Failed { format!("{why}\n--- gdb:\n{text}\n--- console:\n{}", q.transcript).into() };
    if !text.contains("Breakpoint 1, kernel::devtools::vmstate::stop_here") {
        return Err(report("gdb never stopped at kernel::devtools::vmstate::stop_here".into()));
    }
    if text.contains("Traceback") || text.contains("Python Exception") {
        return Err(report("a gdb command failed in Python".into()));
    }
    let kernel = gdbvm::kernel_view(&q.transcript).map_err(report)?;
    let mut wrong = gdbvm::compare(&kernel, &gdbvm::sections(&text));
    if kernel.after_stop.as_deref() != Some("ok,failed") {
        wrong.push(format!(
            "page.alloc set to nth:2 from gdb: the kernel's two allocations after the stop went {:?}, not ok,failed",
            kernel.after_stop
        ));
    }
    if status != EXIT_SUCCESS {
        wrong.push(format!("the kernel exited with {status} after the stop"));
    }
    if !wrong.is_empty() {
        return Err(report(format!("gdb and the kernel disagree:\n  {}", wrong.join("\n  "))));
    }
    Ok(())
}

/// `vm steps` (tools/gdb/vmgdb/steps.py) over a real fault: `mode=vmstate`
/// writes to its private file page at 0x40000000, a copy-on-write fault;
/// gdb stops in `page_fault` there and steps it to its return. The count
/// must add up (the instructions by function to the total), name the
/// fault's steps and the copy among the calls, and end back in the trap
/// handler; a limit stops it; bad arguments are refused.
fn gdb_vm_steps(images: &Images) -> Result<(), Failed> {
    let cmds = [
        "hbreak kernel::mm::vmspace::page_fault if cr2 == 0x40000000 && (tf.error & 2) != 0",
        "continue",
        "vm steps 3",
        "vm steps",
        "vm steps 1 2",
        "delete",
        "continue",
    ]
    .map(String::from);
    let (mut q, text) = gdb_batch(images, vmstate_boot(images, Firmware::Bios), &cmds, Duration::from_secs(180))?;
    let status = q.wait_exit(BOOT_TIMEOUT)?;
    let fail = |why: &str| -> Result<(), Failed> { Err(format!("{why}\n--- gdb:\n{text}").into()) };
    // The whole run's report (after the three steps'), up to the next.
    let Some(first) = text.split("steps from ").nth(2) else { return fail("no `vm steps` report") };
    let head = first.lines().next().unwrap_or_default();
    let number = |after: &str| {
        let word = head.split(after).nth(1).and_then(|r| r.split_whitespace().next());
        word.and_then(|w| w.parse::<u64>().ok())
    };
    let (Some(n), Some(calls)) = (number(": "), number("instructions, ")) else { return fail("unreadable report") };
    if !head.starts_with("kernel::mm::vmspace::page_fault:") || !head.contains("returned to") || !head.contains("<trap_dispatch>")
    {
        return fail("the report does not run from page_fault back into trap_dispatch");
    }
    let section = |name: &str| -> Vec<(u64, String)> {
        first
            .split(name)
            .nth(1)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .map_while(|l| {
                let l = l.trim();
                let (c, f) = l.split_once("  ")?;
                Some((c.trim().parse().ok()?, f.trim().to_string()))
            })
            .collect()
    };
    let (called, by_fn) = (section("  calls:"), section("  instructions by function:"));
    if by_fn.iter().map(|(c, _)| c).sum::<u64>() != n {
        return fail("the instructions by function do not add up to the total");
    }
    if called.iter().map(|(c, _)| c).sum::<u64>() != calls {
        return fail("the calls listed do not add up to the count");
    }
    // The fault's steps are inlined into `fault`; the pmap is called
    // through its trait object, and the copy is a call of its own.
    let expected =
        ["vm::fault::fault", "<kernel::arch::pmap::X86Pmap as vm::pmap::Pmap>::enter_accessed", "vm::fault::copy_page"];
    for f in expected {
        if !called.iter().any(|(_, g)| g == f) {
            return fail(&format!("{f} is not among the calls"));
        }
    }
    // A copy-on-write fault copies 4 KiB: well over a thousand instructions.
    if n < 1000 {
        return fail(&format!("only {n} instructions for a copy-on-write fault"));
    }
    let three = text.split("steps from ").nth(1).and_then(|r| r.lines().next()).unwrap_or_default();
    if !three.starts_with("kernel::mm::vmspace::page_fault: 3 instructions, ") || !three.contains("stopped after 3 at") {
        return fail("`vm steps 3` did not stop after three instructions");
    }
    if !text.contains("usage: vm steps [LIMIT]") {
        return fail("`vm steps 1 2` was not refused with the usage");
    }
    if text.contains("Traceback") || text.contains("Python Exception") {
        return fail("a gdb command failed in Python");
    }
    if status != EXIT_SUCCESS {
        return fail(&format!("the kernel exited with {status}"));
    }
    Ok(())
}

/// The boot of `mode=vmstate`: the root filesystem (the file it maps) and
/// a swap disk (the pages it pages out).
fn vmstate_boot(images: &Images, firmware: Firmware) -> BootOptions {
    let mut opts = BootOptions::new(firmware, "mode=vmstate");
    opts.disks = vec![tests::rootfs_disk(images)];
    opts.swap = Some(64 << 20);
    opts
}

/// Boots `opts` halted with the gdb stub and runs `gdb -batch` on it: the
/// attach command run-qemu.sh prints, then `cmds`. Returns QEMU (running on
/// or ended, as the commands left it) and gdb's output, stdout and stderr
/// in the order gdb wrote them (errors are part of what tests check).
fn gdb_batch(images: &Images, mut opts: BootOptions, cmds: &[String], limit: Duration) -> Result<(Qemu, String), Failed> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    opts.gdb_port = Some(port);
    let q = Qemu::spawn(images, &opts)?;
    // Give QEMU a moment to open its gdb port.
    std::thread::sleep(Duration::from_millis(500));
    let mut args = gdb_base_args(images, port);
    for cmd in cmds {
        args.extend(["-ex".into(), cmd.clone()]);
    }
    let log = std::env::temp_dir().join(format!("bsdvm-gdb-{}-{port}.txt", std::process::id()));
    let file = std::fs::File::create(&log)?;
    let child = Command::new("gdb")
        .arg("-batch")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .map_err(|e| format!("cannot run gdb (install the Debian package gdb): {e}"))?;
    let waited = wait_with_timeout(child, limit);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    waited.map_err(|e| format!("{}\ngdb's output:\n{text}", e.message().unwrap_or_default()))?;
    Ok((q, text))
}

fn wait_with_timeout(mut child: std::process::Child, limit: Duration) -> Result<std::process::Output, Failed> {
    let program = "the command";
    let start = std::time::Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            return Ok(child.wait_with_output()?);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            return Err(format!(
                "{:?} did not finish within {limit:?}:\n{}{}",
                program,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
