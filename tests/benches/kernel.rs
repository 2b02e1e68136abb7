//! Kernel benchmarks, run by `./run-qemu.sh bench` (as `cargo bench`) against
//! the release kernel. Prints one `bench: <name> <value> <unit>` line per figure.
//!
//! Figures that need a clock outside the guest are measured here, on the host:
//! boot time (QEMU start to the kernel's first line) and the real timer rate
//! (ticks between two kernel lines over the host time between them). The
//! kernel's own figures (`mode=bench`) are passed through as they come.
//! Boot times are medians of several boots; on a shared machine the ratio
//! lines matter more than absolute times.

use std::time::{Duration, Instant};

use tests::{BOOT_TIMEOUT, BootOptions, Firmware, Images, Qemu, images};

const BOOTS: usize = 3;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Time from starting QEMU to the kernel's first log line.
fn boot_to_main(images: &Images, firmware: Firmware) -> anyhow::Result<Duration> {
    let mut q = Qemu::spawn(images, &BootOptions::new(firmware, "mode=list log=warn"))?;
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
    opts.memory = "512M";
    opts.prealloc = true;
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
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
