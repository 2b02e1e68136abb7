#!/usr/bin/env bash
# The one entry point: installs what is missing, builds, and boots the kernel.
# Run `./run-qemu.sh -h` for the commands.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)

usage() {
    cat <<'USAGE'
usage: ./run-qemu.sh [--uefi] [--smp N] [--swap SIZE] [--disk FILE]... [command]

commands:
  (none)     build and boot the kernel in QEMU (headless, serial console on
             stdout); init runs the VM demo, then QEMU exits by itself
  run <static ELF> [args...]
             boot the kernel with that host program handed in; init runs it
             with the arguments, its output goes to stdout, its input comes
             from stdin (piped input is handed in whole, then end of input;
             on a terminal, Ctrl-D ends it), and this script exits with its
             status (128 + the signal number if it was killed)
  test       host unit tests and every in-kernel test, each reported by name
             (the test boots at -smp 4, KTEST_SMP), the in-kernel tests once
             more at -smp 1, then the page protocol's models and the Miri
             run (below); non-zero exit status on any failure
  models     the page protocol's loom models alone (vm/MODELS.md): every
             interleaving of each model's threads, within LOOM_MAX_PREEMPTIONS
             (default 3); prints each model's count of interleavings
  miri       the host tests of the unsafe code (radix trie, page array,
             zone, allocator, blist) under Miri
  bench      host benchmarks and the kernel's benchmarks (release build);
             prints `bench: <name> <value> <unit>` lines
  bench user vmbench alone, here and on Linux 6.1, with the ratios
  bench swap swapbench alone, here and on Linux 6.1
  bench smp  smpbench alone (will-it-scale's page_fault1/2/3 with 1, 2 and 4
             processes and threads, munmap with three other threads
             running), here and on Linux 6.1, each at -smp 1 and -smp 2
  bench soak the long hostile runs instead (release build, about 15 minutes):
             the soak, 4 workers x 24 MiB in 64 MiB with swap for 10 minutes
             (SOAK_SECONDS), then SOAK_SHORT_RUNS (default 0) runs of the test
             suite's 60 s soak, then 10^6 fuzzed system calls (FUZZ_CALLS)
             over 5 seeds with page, trie-node and PV-entry allocation each
             failing 1 %; each must end with every word intact and the page
             invariants clean
  --gdb      boot with QEMU halted, waiting for gdb; prints the command to attach
             (with the vm commands of tools/gdb/ loaded: help vm)
  -h, --help this text

options:
  --uefi     boot the UEFI image with OVMF instead of the BIOS image
  --smp N    processors, QEMU's -smp (default 1, or SMP; the kernel
             starts up to 8)
  --disk FILE
             attach FILE, a raw disk image, as a virtio-blk disk (repeatable;
             the kernel finds them after the root filesystem, serials disk0,
             disk1, ...);
             a FILE that does not exist is created, 16 MiB of zeroes. Writes
             go to the file. The root filesystem comes first (serial rootfs),
             then the swap disk (serial swap).
  --swap SIZE
             size of the swap disk: bytes, or a number with K, M or G
             (default 512M, or SWAP_SIZE); 0 for none. The swap disk is a
             sparse image made fresh for each boot and removed afterwards.

environment:
  GDB_PORT   port of QEMU's gdb stub for --gdb (default 1234)
  QEMU_ARGS  extra arguments for QEMU (boot, run and --gdb)
  MEMORY     guest memory, QEMU's -m (default 128M)
  SMP        processors as for --smp
  ROOTFS_IMAGE  boot and run attach this root filesystem image instead of
             $KERNEL_ELF-fs.img (with snapshot=on all the same: its file
             is never written)
  KERNEL_CMDLINE  kernel command line for boot and --gdb (default mode=demo;
             for run: mode=run log=warn)
  KERNEL_PROFILE  debug (default) or release: the kernel build boot and run use
  KERNEL_ELF  boot and run use this kernel (with its images) instead of building
  SWAP_SIZE  size of the swap disk as for --swap (also read by the test boots
             of `test`)
  KTEST_SMP  processors of the test boots of `test`'s first pass (default 4)
USAGE
}

die() { echo "run-qemu.sh: error: $*" >&2; exit 1; }
note() { echo "run-qemu.sh: $*" >&2; }

# ---- arguments ---------------------------------------------------------------
cmd=demo
firmware=bios
program=
program_args=()
disks=()
bench_args=()
swap_size=${SWAP_SIZE:-512M}
smp=${SMP:-1}
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --uefi) firmware=uefi ;;
        --disk)
            [ $# -ge 2 ] || { echo "run-qemu.sh: --disk needs a file" >&2; usage >&2; exit 2; }
            disks+=("$2")
            shift ;;
        --swap)
            [ $# -ge 2 ] || { echo "run-qemu.sh: --swap needs a size" >&2; usage >&2; exit 2; }
            swap_size=$2
            shift ;;
        --smp)
            [ $# -ge 2 ] || { echo "run-qemu.sh: --smp needs a number" >&2; usage >&2; exit 2; }
            smp=$2
            shift ;;
        --gdb) cmd=gdb ;;
        test|models|miri) cmd=$1 ;;
        bench)
            cmd=bench
            case "${2:-}" in soak|swap|user|smp) bench_args=(-- "$2"); shift ;; esac ;;
        run)
            cmd=run
            [ $# -ge 2 ] || { echo "run-qemu.sh: run needs a program" >&2; usage >&2; exit 2; }
            program=$2
            shift 2
            program_args=("$@")
            break ;;
        *) echo "run-qemu.sh: unknown option or command: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
[[ $swap_size =~ ^[0-9]+[KMG]?$ ]] || { echo "run-qemu.sh: bad swap size '$swap_size' (bytes, or a number with K, M or G)" >&2; exit 2; }
[[ $swap_size =~ ^0+[KMG]?$ ]] && swap_size=0
[[ $smp =~ ^[1-9][0-9]*$ ]] || { echo "run-qemu.sh: bad processor count '$smp' (a number from 1)" >&2; exit 2; }
# The test harness reads the size from the environment.
export SWAP_SIZE=$swap_size

# Files made for one run (the swap image, run's arguments and input),
# removed when the script exits.
scratch=
scratch_dir() {
    if [ -z "$scratch" ]; then
        scratch=$(mktemp -d)
        trap 'rm -rf "$scratch"' EXIT
    fi
}

# ---- installing what is missing ------------------------------------------------
apt_updated=0
apt_install() {
    local pkgs=("$@")
    note "installing Debian package(s): ${pkgs[*]}"
    local sudo=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || die "need root (or sudo) to install ${pkgs[*]}; install them by hand"
        sudo=(sudo)
    fi
    command -v apt-get >/dev/null || die "apt-get not found; install ${pkgs[*]} with your package manager"
    if [ $apt_updated = 0 ]; then
        "${sudo[@]}" apt-get update -qq || die "'apt-get update' failed; cannot install ${pkgs[*]}"
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null \
        || die "'apt-get install ${pkgs[*]}' failed"
}

ensure_toolchain() {
    command -v rustup >/dev/null || die "rustup not found: install it (https://rustup.rs), then run this again"
    local channel
    channel=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
    [ -n "$channel" ] || die "no channel in rust-toolchain.toml"
    # Installs the toolchain with the components and target that
    # rust-toolchain.toml lists; a no-op once they are there.
    if ! rustup run "$channel" rustc --print target-list >/dev/null 2>&1 \
        || ! rustup component list --toolchain "$channel" --installed 2>/dev/null | grep -q '^llvm-tools' \
        || ! rustup target list --toolchain "$channel" --installed 2>/dev/null | grep -q '^x86_64-unknown-none'; then
        note "installing Rust toolchain $channel"
        rustup toolchain install --no-self-update || die "'rustup toolchain install' ($channel from rust-toolchain.toml) failed"
    fi
}

# Miri, for `test` and `miri`: a component of the pinned toolchain, and
# the sysroot it builds once.
ensure_miri() {
    local channel
    channel=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
    if ! rustup component list --toolchain "$channel" --installed 2>/dev/null | grep -q '^miri'; then
        note "installing the miri component"
        rustup component add --toolchain "$channel" miri || die "'rustup component add miri' failed"
    fi
    cargo miri setup >/dev/null 2>&1 || cargo miri setup || die "'cargo miri setup' failed"
}

# The loom models (vm/MODELS.md): every crate built with --cfg loom, in a
# target directory of their own.
run_models() {
    note "running the page protocol's models (loom, vm/MODELS.md)"
    local out status=0
    out=$(mktemp)
    {
        RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$ROOT/target/loom" RUST_BACKTRACE=0 \
            cargo test -q -p vm --lib -- models:: --show-output &&
        RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$ROOT/target/loom" RUST_BACKTRACE=0 \
            cargo test -q -p pager --test models -- --show-output
    } >"$out" 2>&1 || status=$?
    # Each model's line, the broken variants' failures as loom found them,
    # and the summary.
    grep -E '^model: |^test result' "$out" || true
    echo "the broken variants, as loom failed them:"
    awk '/^thread .*broken_.* panicked/ { n = $2; gsub(/\047/, "", n); sub(/.*::/, "", n); getline; print "  " n ": " $0 }' "$out" || true
    if [ "$status" -ne 0 ]; then
        tail -80 "$out"
        rm -f "$out"
        die "a model failed (one alone: RUSTFLAGS='--cfg loom' CARGO_TARGET_DIR=target/loom cargo test -p vm --lib -- models::NAME, or -p pager --test models)"
    fi
    rm -f "$out"
}

# The host tests that reach unsafe code, under Miri (Stacked Borrows): the
# radix trie, the zone, the page records and their busy lock, the sleeping
# lock, the allocator's page array and its word-at-a-time fills (the tests
# on one or two MiB: those over the whole of a larger memory take Miri too
# long), and the blist. The tries and zones keep tagged pointers in
# integers (permissive provenance), and the tests leak their environments
# on purpose, as the kernel's are static (leaks ignored). The tests shrink
# their sizes under Miri (`cfg!(miri)`); the blist's fragmented device
# (a hundred thousand fills, minutes under Miri) reaches no code the other
# blist tests miss, and is left to the plain run.
MIRI_VM_TESTS=(radix:: zone:: page::tests:: sync:: phys::tests::alloc_returns phys::tests::double_free
    phys::tests::freeing_ phys::tests::readahead_ phys::tests::a_write_to_a_pooled_page)
MIRI_PAGER_TESTS=(blist:: --skip blist::tests::a_fragmented_device)
run_miri() {
    note "running the unsafe code's host tests under Miri"
    local start=$SECONDS flags="-Zmiri-permissive-provenance -Zmiri-ignore-leaks"
    # MIRI_BORROWS=tree: the Tree Borrows model instead of Stacked Borrows.
    [ "${MIRI_BORROWS:-stacked}" = tree ] && flags+=" -Zmiri-tree-borrows"
    MIRIFLAGS="$flags" cargo miri test -q -p vm --lib -- "${MIRI_VM_TESTS[@]}" &&
        MIRIFLAGS="$flags" cargo miri test -q -p pager --lib -- "${MIRI_PAGER_TESTS[@]}" ||
        die "Miri found undefined behaviour or a test failed (one alone: ./run-qemu.sh miri, or cargo miri test -p vm --lib -- NAME)"
    echo "miri: the chosen tests clean (${MIRI_BORROWS:-stacked} borrows) in $((SECONDS - start)) s"
}

ensure_qemu() {
    command -v qemu-system-x86_64 >/dev/null || apt_install qemu-system-x86
    command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 still missing after installing qemu-system-x86"
}

ovmf_path() {
    for f in "${OVMF:-}" /usr/share/ovmf/OVMF.fd /usr/share/OVMF/OVMF_CODE.fd /usr/share/qemu/OVMF.fd; do
        [ -n "$f" ] && [ -f "$f" ] && { echo "$f"; return 0; }
    done
    return 1
}

ensure_ovmf() {
    ovmf_path >/dev/null || apt_install ovmf
    ovmf_path >/dev/null || die "OVMF firmware still missing after installing ovmf"
}

ensure_musl() {
    command -v musl-gcc >/dev/null || apt_install musl-tools
    command -v musl-gcc >/dev/null || die "musl-gcc still missing after installing musl-tools"
    # Some test programs are built against glibc too (static): gcc and libc.a.
    command -v gcc >/dev/null && [ -f "$(gcc -print-file-name=libc.a)" ] || apt_install gcc libc6-dev
}

ensure_gdb() {
    command -v gdb >/dev/null || apt_install gdb
}

# mke2fs, e2fsck and debugfs: the filesystem tests make and check ext2 images.
ensure_e2fsprogs() {
    command -v mke2fs >/dev/null && command -v e2fsck >/dev/null && command -v debugfs >/dev/null \
        || apt_install e2fsprogs
}

# ---- building ------------------------------------------------------------------------
# build_kernel PROFILE: builds the kernel ELF and its disk images; sets KERNEL_ELF.
build_kernel() {
    local profile=$1 flags=()
    [ "$profile" = release ] && flags=(--release)
    note "building the kernel ($profile)"
    cargo build -p kernel --target x86_64-unknown-none "${flags[@]}" || die "kernel build failed"
    KERNEL_ELF="$ROOT/target/x86_64-unknown-none/$profile/kernel"
    cargo run -q -p boot -- "$KERNEL_ELF" >/dev/null || die "creating the disk images failed"
    export KERNEL_ELF
}

# The kernel of KERNEL_ELF if set (its images already built, as under the
# test and bench harnesses), else a fresh build of KERNEL_PROFILE.
use_or_build_kernel() {
    if [ -n "${KERNEL_ELF:-}" ]; then
        [ -f "$KERNEL_ELF-bios.img" ] && [ -f "$KERNEL_ELF-fs.img" ] \
            || die "KERNEL_ELF=$KERNEL_ELF has no disk images next to it"
        return 0
    fi
    build_kernel "${KERNEL_PROFILE:-debug}"
}

qemu_args() {
    local image cmdline=${KERNEL_CMDLINE:-mode=demo}
    if [ "$firmware" = uefi ]; then image="$KERNEL_ELF-uefi.img"; else image="$KERNEL_ELF-bios.img"; fi
    QEMU=(qemu-system-x86_64
        -drive "format=raw,snapshot=on,file=$image"
        -serial stdio -display none -monitor none -no-reboot
        -device isa-debug-exit,iobase=0xf4,iosize=0x04
        -m "${MEMORY:-128M}"
        -fw_cfg "name=opt/kernel/cmdline,string=${cmdline//,/,,}")
    [ "$firmware" = uefi ] && QEMU+=(-bios "$(ovmf_path)")
    [ "$smp" != 1 ] && QEMU+=(-smp "$smp")
    # The root filesystem (made by boot from rootfs/ and user/, or
    # ROOTFS_IMAGE); a run's writes stay in a snapshot.
    local rootfs=${ROOTFS_IMAGE:-$KERNEL_ELF-fs.img}
    [ -f "$rootfs" ] || die "no root filesystem image $rootfs"
    QEMU+=(-drive "file=${rootfs//,/,,},if=none,format=raw,id=rootfs,snapshot=on"
        -device "virtio-blk-pci,drive=rootfs,disable-legacy=on,serial=rootfs")
    # The swap disk: a sparse image made fresh for this boot (nothing paged
    # out by an earlier run is there to mislead), written directly.
    if [ "$swap_size" != 0 ]; then
        scratch_dir
        truncate -s "$swap_size" "$scratch/swap.img" || die "cannot create a $swap_size swap image in $scratch"
        QEMU+=(-drive "file=$scratch/swap.img,if=none,format=raw,id=swap"
            -device "virtio-blk-pci,drive=swap,disable-legacy=on,serial=swap")
    fi
    local i=0 disk
    for disk in "${disks[@]}"; do
        if [ ! -e "$disk" ]; then
            note "creating $disk: a 16 MiB raw disk image of zeroes"
            truncate -s 16M "$disk" || die "cannot create $disk"
        fi
        QEMU+=(-drive "file=${disk//,/,,},if=none,format=raw,id=disk$i"
            -device "virtio-blk-pci,drive=disk$i,disable-legacy=on,serial=disk$i")
        i=$((i + 1))
    done
    # shellcheck disable=SC2206
    [ -n "${QEMU_ARGS:-}" ] && QEMU+=($QEMU_ARGS)
    return 0
}

# QEMU's isa-debug-exit turns the kernel's success code into 33.
run_qemu() {
    local status=0
    "${QEMU[@]}" </dev/null || status=$?
    if [ $status = 33 ]; then return 0; fi
    die "the kernel ended with a failure (QEMU exit status $status)"
}

# ---- commands ----------------------------------------------------------------
ensure_toolchain
ensure_qemu
ensure_musl
[ "$firmware" = uefi ] && ensure_ovmf

case $cmd in
    demo)
        use_or_build_kernel
        qemu_args
        run_qemu
        ;;
    run)
        [ -f "$program" ] || die "no such file: $program"
        use_or_build_kernel
        KERNEL_CMDLINE=${KERNEL_CMDLINE:-mode=run log=warn}
        qemu_args
        scratch_dir
        tmp=$scratch
        # argv, NUL-separated: the program's name, then its arguments.
        printf '%s\0' "$(basename "$program")" "${program_args[@]}" >"$tmp/args"
        prog_path=$(realpath "$program")
        QEMU+=(-fw_cfg "name=opt/run/program,file=${prog_path//,/,,}"
            -fw_cfg "name=opt/run/args,file=$tmp/args"
            -serial "file:$tmp/status")
        qemu_status=0
        if [ -t 0 ]; then
            # A terminal: typed input goes through the serial console.
            "${QEMU[@]}" || qemu_status=$?
        else
            # A pipe or a file: handed in whole, so the program reads all of
            # it and then the end of input, as it would on Linux.
            cat >"$tmp/stdin"
            QEMU+=(-fw_cfg "name=opt/run/stdin,file=$tmp/stdin")
            "${QEMU[@]}" </dev/null || qemu_status=$?
        fi
        status=$(sed -n 's/^status \([0-9]*\).*/\1/p' "$tmp/status" 2>/dev/null | head -1)
        [ -n "$status" ] || die "the kernel reported no exit status (QEMU exit status $qemu_status)"
        exit "$status"
        ;;
    test)
        ensure_ovmf
        ensure_gdb
        ensure_e2fsprogs
        build_kernel debug
        note "running host unit tests and in-kernel tests"
        # Default workspace members: vm, pager, ktest, boot, and tests (which
        # boots the kernel and reports each in-kernel test), the kernel on
        # four processors; then the in-kernel tests again on one, where
        # other interleavings (and the single-CPU paths) run.
        KTEST_SMP=${KTEST_SMP:-4} cargo test
        note "running the in-kernel tests again at -smp 1"
        KTEST_SMP=1 cargo test -p tests --test kernel -- kernel::
        run_models
        ensure_miri
        run_miri
        ;;
    models)
        run_models
        ;;
    miri)
        ensure_miri
        run_miri
        ;;
    bench)
        ensure_ovmf
        # resize2fs grows the root filesystem for the smp part.
        ensure_e2fsprogs
        build_kernel release
        note "running benchmarks"
        if [ ${#bench_args[@]} -gt 0 ]; then
            cargo bench --bench kernel "${bench_args[@]}"
        else
            cargo bench --benches
        fi
        ;;
    gdb)
        ensure_gdb
        build_kernel debug
        port=${GDB_PORT:-1234}
        sysroot=$(rustc --print sysroot)
        cat <<EOF

QEMU is halted, waiting for gdb on port $port. In another terminal, attach with:

  gdb -ex 'source $sysroot/lib/rustlib/etc/gdb_load_rust_pretty_printers.py' \\
      -ex 'source $ROOT/tools/gdb/vm.py' \\
      -ex 'symbol-file -o 0xffffffff80000000 $KERNEL_ELF' \\
      -ex 'target remote localhost:$port'

then for example:  hbreak kernel::kernel_main   continue   bt
(hardware breakpoints work before the kernel is loaded; once it runs, break works too)
and the VM state, once stopped:  vm page va ADDR   vm object ADDR   vm map   vm pte ADDR
                                 vm phys   vm check   vm failpoint   (help vm)


EOF
        qemu_args
        QEMU+=(-S -gdb "tcp:127.0.0.1:$port")
        run_qemu
        ;;
esac
