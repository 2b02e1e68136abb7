//! virtio-blk disks over PCI: the kernel's [`BlockDevice`]s.
//!
//! The device protocol (virtqueue, request headers, feature negotiation) is
//! virtio-drivers' `VirtIOBlk` over its modern (virtio 1.0) PCI transport;
//! this module adds what a kernel needs around it: finding the devices at
//! boot, requests from many threads at once, interrupt-driven completion
//! with sleeping requesters, and fail points.
//!
//! A request's life:
//!
//! ```text
//!  requester                                device          interrupt handler
//!  ---------                                ------          -----------------
//!  take a free slot, add the request  ──►   reads/writes
//!  to the virtqueue (device lock)           the buffer
//!  sleep on the slot's channel              used ring  ──►  ack (ISR read lowers the line)
//!                                                           pop every used request into
//!                                                           its slot, mark it done
//!  ◄──────────────────────────────────────────────────────  wakeup(slot channel)
//!  take the result, free the slot
//! ```
//!
//! Completions are popped in used-ring order by whoever holds the device
//! lock (virtio-drivers pops only the next used entry), so the interrupt
//! handler completes every request, not just its own waiter's. Without an
//! interrupt (no I/O APIC, no INTx line, or before the scheduler runs) the
//! requester polls the used ring itself; with one, it still polls once a
//! second ([`POLL_TICKS`]) as a safety net against a lost interrupt.
//!
//! Locking: each disk's [`Device`] is behind a spin lock that is taken with
//! interrupts off, since the interrupt handler takes it; nobody sleeps or
//! allocates memory while holding it. A requester sleeps on an atomic
//! `done` flag with the lock released. Lock order: device lock, then the
//! scheduler's (wakeups happen after the device lock is dropped anyway).
//!
//! Buffers: virtio-drivers hands the device the buffer itself (no copy), so
//! it must be physically contiguous; the heap and the page allocator's
//! contiguous runs are. Other buffers are copied through a bounce buffer
//! from the heap, at most [`BOUNCE_MAX`] bytes at a time. Requests are
//! split at [`MAX_TRANSFER`] bytes.
//!
//! Fail points `blk.read` and `blk.write` (`vm::failpoint`) make a request
//! fail with [`BlockError::Io`] before it reaches the device.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use pager::block::{BlockDevice, BlockError, SECTOR_SIZE, check_request};
use spin::Once;

use crate::kern::sync::IrqMutex;
use virtio_drivers::device::blk::{BlkReq, BlkResp, VirtIOBlk};
use virtio_drivers::transport::DeviceType;
use virtio_drivers::transport::pci::bus::{Command, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::{PciTransport, virtio_device_type};
use x86_64::instructions::interrupts;

use super::dma::{KernelHal, is_contiguous, map_mmio};
use super::pci::{self, PortCam};
use crate::arch::ioapic::{self, Trigger};
use crate::kern::{sched, time};

/// Requests a disk has in flight at most: virtio-drivers' queue size for
/// virtio-blk (with indirect descriptors, one descriptor per request).
const SLOTS: usize = 16;
/// Largest piece one virtio request carries; longer requests are split.
pub const MAX_TRANSFER: usize = 1 << 20;
/// Largest bounce buffer for a buffer that is not physically contiguous.
pub const BOUNCE_MAX: usize = 64 * 1024;
/// A sleeping requester checks the used ring itself this often.
const POLL_TICKS: u64 = time::HZ;
/// `Disk::irq` when the disk has no interrupt (polling).
const NO_IRQ: u32 = u32::MAX;

/// Where a slot's request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Free,
    /// In the virtqueue under this token.
    InFlight(u16),
    /// Popped from the used ring; the result waits for the requester.
    Done,
}

/// One request's memory: the header and status byte the device reads and
/// writes, and the data buffer's address. Lives in the heap (inside the
/// disk's `Arc`), so it is physically contiguous and never moves.
struct Slot {
    state: SlotState,
    write: bool,
    req: BlkReq,
    resp: BlkResp,
    buf: *mut u8,
    len: usize,
    result: Result<(), virtio_drivers::Error>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            state: SlotState::Free,
            write: false,
            req: BlkReq::default(),
            resp: BlkResp::default(),
            buf: core::ptr::null_mut(),
            len: 0,
            result: Ok(()),
        }
    }
}

/// The device and its requests. (D) the disk's device lock, interrupts off.
struct Device {
    blk: VirtIOBlk<KernelHal, PciTransport>,
    slots: [Slot; SLOTS],
}

// SAFETY: the raw buffer pointers in the slots are only followed under the
// device lock, while their requester is blocked waiting for the request.
unsafe impl Send for Device {}

/// Counters of one disk. (A)
#[derive(Debug, Default)]
pub struct Stats {
    /// Interrupts that found this disk's interrupt status set.
    pub interrupts: AtomicU64,
    /// Requests completed by the interrupt handler.
    pub irq_completions: AtomicU64,
    /// Requests completed by a requester polling the used ring.
    pub polled_completions: AtomicU64,
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub sectors_read: AtomicU64,
    pub sectors_written: AtomicU64,
    /// Requests that failed (device error or fail point).
    pub errors: AtomicU64,
    /// Pieces copied through a bounce buffer.
    pub bounced: AtomicU64,
    /// Most requests ever in flight at once.
    pub peak_in_flight: AtomicU64,
}

/// One virtio-blk disk. Fields (C) unless tagged.
pub struct DiskInner {
    /// Position in [`disks`].
    pub index: usize,
    pub pci: DeviceFunction,
    /// The device's serial number (`-device virtio-blk-pci,serial=...`).
    pub serial: String,
    /// Size in sectors.
    pub capacity: u64,
    pub readonly: bool,
    /// The I/O APIC pin its interrupt comes in on, or NO_IRQ. (A) set once,
    /// after the disk is published.
    irq: AtomicU32,
    dev: IrqMutex<Device>,
    /// Per slot: the request is done (set by the completer, cleared by the
    /// owner when it starts the next request). (A)
    done: [AtomicBool; SLOTS],
    /// Bumped whenever a slot or descriptors may have come free; requesters
    /// that found none sleep on it. (A)
    progress: AtomicU64,
    pub stats: Stats,
}

/// A handle on a disk: cheap to clone, usable from any thread. Requests
/// from several handles (or threads) run concurrently, up to the device's
/// queue depth; a requester sleeps until its request completes.
#[derive(Clone)]
pub struct Disk(Arc<DiskInner>);

impl core::ops::Deref for Disk {
    type Target = DiskInner;
    fn deref(&self) -> &DiskInner {
        &self.0
    }
}

/// Every disk found at boot, in PCI order. (C) set once by [`probe`].
static DISKS: Once<Vec<Disk>> = Once::new();

/// The disks found at boot (none before [`probe`]).
pub fn disks() -> Vec<Disk> {
    DISKS.get().cloned().unwrap_or_default()
}

/// The disk with this serial number.
pub fn by_serial(serial: &str) -> Option<Disk> {
    DISKS.get()?.iter().find(|d| d.serial == serial).cloned()
}

impl DiskInner {
    fn slot_chan(&self, i: usize) -> usize {
        &self.done[i] as *const AtomicBool as usize
    }

    fn progress_chan(&self) -> usize {
        &self.progress as *const AtomicU64 as usize
    }

    /// The I/O APIC pin of the disk's interrupt, if it has one.
    pub fn irq(&self) -> Option<u32> {
        Some(self.irq.load(Ordering::Acquire)).filter(|&p| p != NO_IRQ)
    }

    /// Pops every completed request off the used ring into its slot.
    /// Returns a mask of the slots completed. Device lock held.
    fn drain(&self, d: &mut Device) -> u32 {
        let Device { blk, slots } = d;
        let mut mask = 0u32;
        while let Some(token) = blk.peek_used() {
            let Some(i) = slots.iter().position(|s| s.state == SlotState::InFlight(token)) else {
                // Cannot pop it without its buffers: a driver bug.
                log::error!("virtio-blk{}: the device completed unknown request {token}", self.index);
                break;
            };
            let s = &mut slots[i];
            // SAFETY: the buffers are those passed to the *_nb call that
            // returned `token` (recorded in the slot); the requester is
            // blocked until `done` is set, so nothing else touches them.
            s.result = unsafe {
                if s.write {
                    let buf = core::slice::from_raw_parts(s.buf, s.len);
                    blk.complete_write_blocks(token, &s.req, buf, &mut s.resp)
                } else {
                    let buf = core::slice::from_raw_parts_mut(s.buf, s.len);
                    blk.complete_read_blocks(token, &s.req, buf, &mut s.resp)
                }
            };
            s.state = SlotState::Done;
            // Release pairs with the Acquire loads of the requester.
            self.done[i].store(true, Ordering::Release);
            mask |= 1 << i;
        }
        mask
    }

    /// Wakes the requesters of the slots in `mask`.
    fn wake(&self, mask: u32) {
        if mask == 0 {
            return;
        }
        for i in 0..SLOTS {
            if mask & (1 << i) != 0 {
                sched::wakeup(self.slot_chan(i));
            }
        }
        self.progress.fetch_add(1, Ordering::Release);
        sched::wakeup(self.progress_chan());
    }

    /// Completes whatever the device has finished, from the requester's side.
    fn poll(&self) {
        let mask = interrupts::without_interrupts(|| self.drain(&mut self.dev.lock()));
        self.stats.polled_completions.fetch_add(mask.count_ones() as u64, Ordering::Relaxed);
        self.wake(mask);
    }

    /// Called by the device interrupt, interrupts off.
    fn interrupt(&self) {
        let mask = {
            let mut d = self.dev.lock();
            if d.blk.ack_interrupt().is_empty() {
                return;
            }
            self.stats.interrupts.fetch_add(1, Ordering::Relaxed);
            self.drain(&mut d)
        };
        self.stats.irq_completions.fetch_add(mask.count_ones() as u64, Ordering::Relaxed);
        self.wake(mask);
    }

    /// Puts one request in the virtqueue; returns its slot. Sleeps while
    /// every slot (or descriptor) is taken.
    fn start(&self, write: bool, sector: u64, buf: *mut u8, len: usize) -> Result<usize, BlockError> {
        loop {
            let seen = self.progress.load(Ordering::Acquire);
            let started = interrupts::without_interrupts(|| {
                let mut d = self.dev.lock();
                let Device { blk, slots } = &mut *d;
                let Some(i) = slots.iter().position(|s| s.state == SlotState::Free) else { return Ok(None) };
                let s = &mut slots[i];
                s.write = write;
                s.buf = buf;
                s.len = len;
                // SAFETY: the buffer is valid for `len` bytes and stays
                // untouched until the request completes: its owner blocks in
                // `wait` (and the slot's header and status live in the heap).
                let token = unsafe {
                    if write {
                        blk.write_blocks_nb(sector as usize, &mut s.req, core::slice::from_raw_parts(buf, len), &mut s.resp)
                    } else {
                        blk.read_blocks_nb(sector as usize, &mut s.req, core::slice::from_raw_parts_mut(buf, len), &mut s.resp)
                    }
                };
                match token {
                    Ok(t) => {
                        self.done[i].store(false, Ordering::Relaxed);
                        s.state = SlotState::InFlight(t);
                        s.result = Ok(());
                        let busy = slots.iter().filter(|s| matches!(s.state, SlotState::InFlight(_))).count();
                        self.stats.peak_in_flight.fetch_max(busy as u64, Ordering::Relaxed);
                        Ok(Some(i))
                    }
                    Err(virtio_drivers::Error::QueueFull) => Ok(None),
                    Err(e) => Err(e),
                }
            });
            match started {
                Ok(Some(i)) => return Ok(i),
                Ok(None) => {
                    // Everything is in flight: wait for a completion.
                    let slept = self.irq().is_some()
                        && sched::sleep_until(self.progress_chan(), time::ticks() + POLL_TICKS, || {
                            self.progress.load(Ordering::Acquire) == seen
                        });
                    if !slept {
                        self.poll();
                        sched::yield_now();
                    }
                }
                Err(e) => {
                    log::warn!("virtio-blk{}: cannot queue a request: {e:?}", self.index);
                    return Err(BlockError::Io);
                }
            }
        }
    }

    /// Waits for the request in slot `i`, frees the slot, returns its result.
    fn wait(&self, i: usize) -> Result<(), virtio_drivers::Error> {
        let chan = self.slot_chan(i);
        loop {
            if self.done[i].load(Ordering::Acquire) {
                break;
            }
            // Sleeping with interrupts off would mean the caller holds a
            // spin lock (or is an interrupt handler): not allowed here.
            debug_assert!(interrupts::are_enabled() || self.irq().is_none(), "block request with interrupts off");
            let slept = self.irq().is_some()
                && sched::sleep_until(chan, time::ticks() + POLL_TICKS, || !self.done[i].load(Ordering::Acquire));
            if self.done[i].load(Ordering::Acquire) {
                break;
            }
            // No interrupt, or none in a while: look for ourselves.
            self.poll();
            if !slept && !self.done[i].load(Ordering::Acquire) {
                sched::yield_now();
            }
        }
        let result = interrupts::without_interrupts(|| {
            let mut d = self.dev.lock();
            let s = &mut d.slots[i];
            debug_assert_eq!(s.state, SlotState::Done);
            s.state = SlotState::Free;
            s.buf = core::ptr::null_mut();
            s.result
        });
        self.progress.fetch_add(1, Ordering::Release);
        sched::wakeup(self.progress_chan());
        result
    }

    /// One virtio request on a physically contiguous buffer.
    fn request(&self, write: bool, sector: u64, buf: *mut u8, len: usize) -> Result<(), BlockError> {
        let i = self.start(write, sector, buf, len)?;
        self.wait(i).map_err(|e| {
            log::warn!(
                "virtio-blk{}: {} of {} sectors at {sector} failed: {e:?}",
                self.index,
                if write { "write" } else { "read" },
                len / SECTOR_SIZE
            );
            BlockError::Io
        })
    }

    /// Reads or writes `len` bytes at `buf` from or to the disk at `sector`.
    fn transfer(&self, write: bool, sector: u64, buf: *mut u8, len: usize) -> Result<(), BlockError> {
        let count = check_request(self.capacity, sector, len)?;
        let fp = if write { &vm::failpoint::BLK_WRITE } else { &vm::failpoint::BLK_READ };
        let (ops, sectors) =
            if write { (&self.stats.writes, &self.stats.sectors_written) } else { (&self.stats.reads, &self.stats.sectors_read) };
        ops.fetch_add(1, Ordering::Relaxed);
        if fp.should_fail() {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            return Err(BlockError::Io);
        }
        if write && self.readonly {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            return Err(BlockError::Io);
        }
        let mut done = 0;
        while done < len {
            let piece = (len - done).min(MAX_TRANSFER);
            // SAFETY: `done < len`, inside the caller's buffer.
            let p = unsafe { buf.add(done) };
            let s = sector + (done / SECTOR_SIZE) as u64;
            let r = if !FORCE_BOUNCE.load(Ordering::Relaxed) && is_contiguous(p, piece).is_some() {
                self.request(write, s, p, piece).map(|()| piece)
            } else {
                self.bounced(write, s, p, piece.min(BOUNCE_MAX))
            };
            match r {
                Ok(n) => done += n,
                Err(e) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        sectors.fetch_add(count, Ordering::Relaxed);
        Ok(())
    }

    /// One request through a heap bounce buffer; returns the bytes moved.
    fn bounced(&self, write: bool, sector: u64, buf: *mut u8, len: usize) -> Result<usize, BlockError> {
        let mut bounce: Vec<u8> = Vec::new();
        if bounce.try_reserve_exact(len).is_err() {
            log::warn!("virtio-blk{}: no memory for a {len}-byte bounce buffer", self.index);
            return Err(BlockError::Io);
        }
        bounce.resize(len, 0);
        if is_contiguous(bounce.as_ptr(), len).is_none() {
            log::error!("virtio-blk{}: the heap is not physically contiguous", self.index);
            return Err(BlockError::Io);
        }
        self.stats.bounced.fetch_add(1, Ordering::Relaxed);
        if write {
            // SAFETY: the caller's buffer holds `len` bytes at `buf`.
            bounce.copy_from_slice(unsafe { core::slice::from_raw_parts(buf, len) });
        }
        self.request(write, sector, bounce.as_mut_ptr(), len)?;
        if !write {
            // SAFETY: as above; the caller's buffer is writable (a read).
            unsafe { core::ptr::copy_nonoverlapping(bounce.as_ptr(), buf, len) };
        }
        Ok(len)
    }
}

/// Test knob: send every request through a bounce buffer. (A)
static FORCE_BOUNCE: AtomicBool = AtomicBool::new(false);

impl Disk {
    /// Reads `buf.len() / SECTOR_SIZE` sectors from `sector`; sleeps until done.
    pub fn read_sectors(&self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.transfer(false, sector, buf.as_mut_ptr(), buf.len())
    }

    /// Writes `buf.len() / SECTOR_SIZE` sectors at `sector`; sleeps until done.
    pub fn write_sectors(&self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        // The device only reads the buffer; the pointer is mutable because
        // the request machinery is shared with reads.
        self.transfer(true, sector, buf.as_ptr() as *mut u8, buf.len())
    }
}

impl BlockDevice for Disk {
    fn capacity(&self) -> u64 {
        self.0.capacity
    }

    fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.read_sectors(sector, buf)
    }

    fn write(&self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        self.write_sectors(sector, buf)
    }
}

/// The device interrupt: completes the requests of every disk whose
/// interrupt status is set (disks may share a line). Interrupts off.
pub fn interrupt() {
    for d in DISKS.get().map(Vec::as_slice).unwrap_or(&[]) {
        if d.irq().is_some() {
            d.interrupt();
        }
    }
}

/// Finds the virtio-blk devices on PCI bus 0, sets them up, and routes
/// their interrupts through the I/O APIC to `vector` (if `ioapic`; else
/// they are polled). Logs each disk. Call once, at boot.
pub fn probe(ioapic: bool, vector: u8) {
    let mut root = PciRoot::new(PortCam);
    let mut found = Vec::new();
    let functions: Vec<_> = root.enumerate_bus(0).collect();
    for (df, info) in functions {
        if virtio_device_type(&info) != Some(DeviceType::Block) {
            continue;
        }
        // Memory decoding for the BARs, bus mastering for DMA, INTx on.
        let (_, command) = root.get_status_command(df);
        root.set_command(df, (command | Command::MEMORY_SPACE | Command::BUS_MASTER) - Command::INTERRUPT_DISABLE);
        let bars = root.bars(df).unwrap_or_default();
        // UEFI firmware puts 64-bit BARs above the memory, where the direct
        // map does not reach: map them there.
        let beyond = bars.iter().flatten().filter_map(|b| b.memory_address_size()).find(|&(a, n)| a != 0 && !map_mmio(a, n));
        if let Some((a, _)) = beyond {
            log::warn!("virtio-blk at {df}: skipped: cannot map its registers at {a:#x}");
            continue;
        }
        let transport = match PciTransport::new::<KernelHal, _>(&mut root, df) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("virtio-blk at {df}: {e}");
                continue;
            }
        };
        let mut blk = match VirtIOBlk::<KernelHal, _>::new(transport) {
            Ok(b) => b,
            Err(e) => {
                log::warn!("virtio-blk at {df}: cannot initialise: {e:?}");
                continue;
            }
        };
        let mut id = [0u8; 20];
        let serial = match blk.device_id(&mut id) {
            Ok(n) => String::from_utf8_lossy(&id[..n]).into_owned(),
            Err(_) => String::new(),
        };
        blk.enable_interrupts();
        let capacity = blk.capacity();
        let readonly = blk.readonly();
        let index = found.len();
        found.push(Disk(Arc::new(DiskInner {
            index,
            pci: df,
            serial,
            capacity,
            readonly,
            irq: AtomicU32::new(NO_IRQ),
            dev: IrqMutex::ranked(Device { blk, slots: core::array::from_fn(|_| Slot::new()) }, &vm::witness::order::DEVICE),
            done: core::array::from_fn(|_| AtomicBool::new(false)),
            progress: AtomicU64::new(0),
            stats: Stats::default(),
        })));
    }
    let disks = DISKS.call_once(|| found);
    // Route the lines only now: the handler finds the disks in DISKS, so a
    // pending level-triggered interrupt is acknowledged, not left to storm.
    for d in disks {
        let (line, pin) = pci::interrupt_line(d.pci);
        // The requests of the set-up (the serial number) left the line
        // raised. Lower it, or the I/O APIC, which acts on changes of the
        // line, would never see the next request's interrupt.
        interrupts::without_interrupts(|| d.dev.lock().blk.ack_interrupt());
        let routed = ioapic && pin != 0 && line != 0xFF && ioapic::route(line as u32, vector, Trigger::LevelHigh).is_ok();
        if routed {
            d.irq.store(line as u32, Ordering::Release);
        }
        log::info!(
            "virtio-blk{} at {}: {} sectors ({} KiB){}, serial {:?}, {}",
            d.index,
            d.pci,
            d.capacity,
            d.capacity * SECTOR_SIZE as u64 / 1024,
            if d.readonly { ", read-only" } else { "" },
            d.serial,
            if routed { alloc::format!("interrupt on I/O APIC pin {line}") } else { "polled (no interrupt)".into() }
        );
    }
    if disks.is_empty() {
        log::info!("virtio-blk: no disks");
    }
}

mod tests;
