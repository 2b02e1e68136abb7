#!/usr/bin/env bash
# Runs a static x86_64 program as /init under Debian's Linux kernel in QEMU
# (TCG, serial console on stdout) and prints what it prints. The program
# should power the machine off when done (reboot(RB_POWER_OFF) as PID 1);
# if it exits instead, Linux panics and QEMU stops all the same (panic=-1
# with -no-reboot), and this script then fails.
#
# usage: tests/linux/run-linux.sh <static-elf> [-m MEM] [-cpu MODEL] [-smp N] [--prealloc] [--swap SIZE]
#
#   -m MEM       guest memory, QEMU's -m (default 128M, as our kernel's boots)
#   -cpu MODEL   QEMU's -cpu (default: none given, QEMU's default model)
#   -smp N       processors, QEMU's -smp (default 1, as our kernel's boots)
#   --prealloc   QEMU's -mem-prealloc: guest RAM allocated before the boot
#   --swap SIZE  a swap disk: a fresh sparse image of SIZE (truncate's sizes)
#                made a swap area by mkswap, attached as a virtio-blk disk
#                (serial swap, Linux's /dev/vda) as run-qemu.sh attaches ours;
#                the virtio modules go into the initramfs as /modules/*.ko,
#                for /init to load (Debian builds virtio as modules) and
#                then swapon(2) /dev/vda itself
#
# The kernel is the one Debian's linux-image-amd64 depends on (Linux 6.1 on
# Debian 12), fetched with `apt-get download` and unpacked under
# target/linux/ once; LINUX_KERNEL=<bzImage> uses another one instead.
# Installs qemu-system-x86 if it is missing. Environment: LINUX_TIMEOUT
# (seconds, default 900), LINUX_APPEND (extra kernel command line; words
# after a `--` there are /init's arguments).
#
# Transparent huge pages are turned off (transparent_hugepage=never): Debian's
# kernel has them on by default (THP_ALWAYS) for guests of 512 MiB and more,
# and a 2 MiB fault is not the 4 KiB page fault our kernel is compared on.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE="$ROOT/target/linux"

die() { echo "run-linux.sh: error: $*" >&2; exit 1; }
note() { echo "run-linux.sh: $*" >&2; }
usage() { sed -n '8,20s/^# \{0,1\}//p' "$0"; }

# ---- arguments -----------------------------------------------------------------
elf="" mem=128M cpu="" smp=1 prealloc=0 swap=""
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        -m) [ $# -ge 2 ] || die "-m needs a value"; mem=$2; shift 2 ;;
        -cpu) [ $# -ge 2 ] || die "-cpu needs a value"; cpu=$2; shift 2 ;;
        -smp|--smp) [ $# -ge 2 ] || die "-smp needs a number"; smp=$2; shift 2 ;;
        --prealloc) prealloc=1; shift ;;
        --swap) [ $# -ge 2 ] || die "--swap needs a size"; swap=$2; shift 2 ;;
        -*) usage >&2; die "unknown option: $1" ;;
        *) [ -z "$elf" ] || die "one program only (got $elf and $1)"; elf=$1; shift ;;
    esac
done
[ -n "$elf" ] || { usage >&2; exit 2; }
[ -f "$elf" ] || die "no such file: $elf"
[[ $smp =~ ^[1-9][0-9]*$ ]] || die "bad processor count: $smp"
# The kernel execs /init directly: it must be a static x86_64 ELF.
[ "$(head -c 4 "$elf" | od -An -c | tr -d ' ')" = '177ELF' ] || die "$elf is not an ELF file"

# ---- installing what is missing ---------------------------------------------
sudo=()
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then sudo=(sudo); fi
fi
apt_updated=0
apt_update() {
    [ $apt_updated = 1 ] && return 0
    command -v apt-get >/dev/null || return 1
    note "apt-get update"
    "${sudo[@]}" apt-get update -qq || return 1
    apt_updated=1
}

ensure_qemu() {
    command -v qemu-system-x86_64 >/dev/null && return 0
    command -v apt-get >/dev/null || die "qemu-system-x86_64 not found and no apt-get to install qemu-system-x86"
    note "installing the Debian package qemu-system-x86"
    apt_update || die "'apt-get update' failed; cannot install qemu-system-x86"
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null \
        || die "'apt-get install qemu-system-x86' failed"
    command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 still missing after installing qemu-system-x86"
}

# The versioned image package linux-image-amd64 depends on, e.g.
# linux-image-6.1.0-28-amd64 (empty if apt does not know it).
kernel_package() {
    apt-cache depends linux-image-amd64 2>/dev/null \
        | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1
}

# Downloads $pkg into $CACHE/download; true if a .deb is there. As root,
# apt-get warns that its _apt user cannot write there; it works all the same.
download() {
    (cd "$CACHE/download" && apt-get download -q "$pkg") 2>&1 | grep -v 'Download is performed unsandboxed' >&2 || true
    compgen -G "$CACHE/download/*.deb" >/dev/null
}

# Sets KERNEL to a bzImage: $LINUX_KERNEL, the cached one, or a fresh download.
ensure_kernel() {
    if [ -n "${LINUX_KERNEL:-}" ]; then
        [ -f "$LINUX_KERNEL" ] || die "LINUX_KERNEL=$LINUX_KERNEL: no such file"
        KERNEL=$LINUX_KERNEL
        MODULES=
        return 0
    fi
    if ! command -v apt-cache >/dev/null || ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
        die "cannot get Debian's Linux kernel: apt-get, apt-cache and dpkg-deb are needed (a Debian system); or set LINUX_KERNEL=<bzImage>"
    fi
    pkg=$(kernel_package)
    if [ -z "$pkg" ]; then
        apt_update || die "'apt-get update' failed and apt does not know linux-image-amd64"
        pkg=$(kernel_package)
    fi
    [ -n "$pkg" ] || die "apt does not know linux-image-amd64 (no Debian package lists?); set LINUX_KERNEL=<bzImage>"
    local dir="$CACHE/$pkg"
    if ! compgen -G "$dir/boot/vmlinuz-*" >/dev/null || ! compgen -G "$dir/lib/modules/*/kernel/drivers/block/virtio_blk.ko" >/dev/null; then
        mkdir -p "$CACHE/download"
        rm -f "$CACHE/download/"*.deb
        note "downloading the Debian package $pkg"
        download || { apt_update && download; } \
            || die "'apt-get download $pkg' failed: cannot get Debian's Linux kernel"
        local deb
        deb=$(compgen -G "$CACHE/download/*.deb" | head -n 1)
        rm -rf "$dir.tmp"
        mkdir -p "$dir.tmp"
        # The kernel image, its config, and the virtio modules (for --swap).
        dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dir.tmp" --wildcards './boot/vmlinuz-*' './boot/config-*' \
            './lib/modules/*/kernel/drivers/virtio/*.ko' './lib/modules/*/kernel/drivers/block/virtio_blk.ko' \
            || die "unpacking $deb failed"
        rm -rf "$dir"
        mv "$dir.tmp" "$dir"
        rm -f "$deb"
    fi
    KERNEL=$(compgen -G "$dir/boot/vmlinuz-*" | head -n 1) || true
    [ -n "$KERNEL" ] || die "no boot/vmlinuz-* in $pkg"
    MODULES=$(compgen -G "$dir/lib/modules/*/kernel/drivers" | head -n 1) || true
}

# The modules a virtio-blk disk needs, in the order they load.
VIRTIO_MODULES=(virtio/virtio_ring virtio/virtio virtio/virtio_pci_legacy_dev virtio/virtio_pci_modern_dev
    virtio/virtio_pci block/virtio_blk)

# ---- the initramfs -------------------------------------------------------------
# A newc cpio archive written by hand (no cpio needed): /dev, /dev/console
# (c 5 1, so that the kernel can give /init its stdin/stdout/stderr) and /init.
cpio_ino=1
cpio_entry() { # name mode(octal) rdevmajor rdevminor [file]
    local name=$1 mode=$2 rmaj=$3 rmin=$4 file=${5:-} size=0
    [ -n "$file" ] && size=$(stat -c %s "$file")
    local namesize=$((${#name} + 1))
    printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
        "$cpio_ino" "$((8#$mode))" 0 0 1 0 "$size" 0 0 "$rmaj" "$rmin" "$namesize" 0
    printf '%s\0' "$name"
    head -c $(((4 - (110 + namesize) % 4) % 4)) /dev/zero
    if [ -n "$file" ]; then
        cat "$file"
        head -c $(((4 - size % 4) % 4)) /dev/zero
    fi
    cpio_ino=$((cpio_ino + 1))
}

make_initramfs() { # elf out
    {
        cpio_entry dev 040755 0 0
        cpio_entry dev/console 020600 5 1
        cpio_entry init 0100755 0 0 "$1"
        if [ -n "$swap" ]; then
            local i=0 m
            cpio_entry modules 040755 0 0
            for m in "${VIRTIO_MODULES[@]}"; do
                cpio_entry "modules/$i-$(basename "$m").ko" 0100644 0 0 "$MODULES/$m.ko"
                i=$((i + 1))
            done
        fi
        cpio_entry 'TRAILER!!!' 0 0 0
    } >"$2"
}

# ---- running -------------------------------------------------------------------
ensure_qemu
ensure_kernel
command -v timeout >/dev/null || die "timeout (coreutils) not found"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -z "$swap" ] || [ -n "$MODULES" ] || die "--swap needs Debian's kernel (its virtio modules), not LINUX_KERNEL"
make_initramfs "$elf" "$work/initramfs.cpio"

QEMU=(qemu-system-x86_64 -accel tcg
    -kernel "$KERNEL" -initrd "$work/initramfs.cpio"
    -append "console=ttyS0 quiet panic=-1 transparent_hugepage=never${LINUX_APPEND:+ $LINUX_APPEND}"
    -serial stdio -display none -monitor none -no-reboot
    -m "$mem")
[ -n "$cpu" ] && QEMU+=(-cpu "$cpu")
[ "$smp" != 1 ] && QEMU+=(-smp "$smp")
[ $prealloc = 1 ] && QEMU+=(-mem-prealloc)
if [ -n "$swap" ]; then
    command -v mkswap >/dev/null || die "--swap: mkswap (util-linux) not found"
    truncate -s "$swap" "$work/swap.img" || die "cannot create a $swap swap image"
    mkswap -q "$work/swap.img" >/dev/null || die "mkswap failed on the swap image"
    QEMU+=(-drive "file=$work/swap.img,if=none,format=raw,id=swap"
        -device "virtio-blk-pci,drive=swap,disable-legacy=on,serial=swap")
fi
note "kernel $(basename "$KERNEL") ($(basename "$(dirname "$(dirname "$KERNEL")")"))"
note "${QEMU[*]@Q}"

set +e
timeout "${LINUX_TIMEOUT:-900}" "${QEMU[@]}" </dev/null | tr -d '\r' | tee "$work/console"
status=${PIPESTATUS[0]}
set -e
[ "$status" = 124 ] && die "QEMU still running after ${LINUX_TIMEOUT:-900} s: killed"
[ "$status" = 0 ] || die "QEMU exited with status $status"
if grep -q 'Kernel panic' "$work/console"; then
    die "Linux panicked (see above): /init exited instead of powering off, or was killed (out of memory?)"
fi
