//! Block devices: the trait pagers and filesystems read and write through.
//!
//! A device is an array of 512-byte sectors, read and written through a
//! shared reference: several threads may have requests outstanding (a
//! page-in and a page-out on the swap disk, a read-ahead and a flush on the
//! root disk), and the device orders them. The kernel implements the trait
//! over virtio-blk; tests use [`RamDisk`], which can be told to fail chosen
//! requests so every error path of a pager can be made to run.
//!
//! Locking: a [`RamDisk`]'s contents, fail plan and request count are behind
//! its own spin lock (R), held for one request's copy and nothing else.

use alloc::vec;
use alloc::vec::Vec;

use spin::Mutex;

/// Bytes per sector.
pub const SECTOR_SIZE: usize = 512;

/// Why a block request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockError {
    /// The device reported an I/O error (EIO to a program).
    Io,
    /// The request reaches past the end of the device.
    OutOfRange { sector: u64, count: u64, capacity: u64 },
    /// The buffer is not a whole number of sectors.
    BadLength(usize),
}

/// A device of fixed-size sectors, shared by its users: each request is
/// whole (it reads or writes all its sectors or fails), and requests from
/// several threads may run at once.
pub trait BlockDevice {
    /// Number of sectors.
    fn capacity(&self) -> u64;
    /// Reads `buf.len() / SECTOR_SIZE` sectors starting at `sector`.
    fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError>;
    /// Writes `buf.len() / SECTOR_SIZE` sectors starting at `sector`.
    fn write(&self, sector: u64, buf: &[u8]) -> Result<(), BlockError>;
}

/// A device behind a pointer is a device (the kernel holds its disks as
/// trait objects; tests share a RAM disk with the pager under test).
macro_rules! forward {
    ($($ptr:ty),*) => {$(
        impl<D: BlockDevice + ?Sized> BlockDevice for $ptr {
            fn capacity(&self) -> u64 {
                (**self).capacity()
            }
            fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
                (**self).read(sector, buf)
            }
            fn write(&self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
                (**self).write(sector, buf)
            }
        }
    )*};
}
forward!(alloc::boxed::Box<D>, alloc::sync::Arc<D>, &D);

/// Checks a request against the device: whole sectors, inside the device.
pub fn check_request(capacity: u64, sector: u64, len: usize) -> Result<u64, BlockError> {
    if !len.is_multiple_of(SECTOR_SIZE) {
        return Err(BlockError::BadLength(len));
    }
    let count = (len / SECTOR_SIZE) as u64;
    match sector.checked_add(count) {
        Some(end) if end <= capacity => Ok(count),
        _ => Err(BlockError::OutOfRange { sector, count, capacity }),
    }
}

/// Which requests a [`RamDisk`] fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailPlan {
    /// Fail nothing.
    #[default]
    Never,
    /// Fail the n-th request from now (0 = the next one), then succeed again.
    Nth(u64),
    /// Fail every request that touches this sector.
    Sector(u64),
    /// Fail every request.
    Always,
    /// Fail each request with probability `ppm` parts per million, from a
    /// seeded generator (a failing run replays exactly).
    Probability { ppm: u32, seed: u64 },
}

/// Which requests a [`RamDisk`]'s [`FailPlan`] applies to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailOn {
    #[default]
    Both,
    Reads,
    Writes,
}

/// A block device in memory, with injectable errors.
pub struct RamDisk {
    state: Mutex<RamState>,
}

/// What a [`RamDisk`]'s lock covers. (R) every field.
struct RamState {
    data: Vec<u8>,
    fail: FailPlan,
    /// The requests `fail` applies to (the others always succeed).
    fail_on: FailOn,
    requests: u64,
}

impl RamDisk {
    /// A zero-filled disk of `sectors` sectors.
    pub fn new(sectors: u64) -> Self {
        Self::from_data(vec![0; sectors as usize * SECTOR_SIZE])
    }

    /// A disk holding `bytes` (a filesystem image, say); a partial last sector
    /// is padded with zeroes.
    pub fn from_bytes(mut bytes: Vec<u8>) -> Self {
        let padded = bytes.len().div_ceil(SECTOR_SIZE) * SECTOR_SIZE;
        bytes.resize(padded, 0);
        Self::from_data(bytes)
    }

    fn from_data(data: Vec<u8>) -> Self {
        RamDisk { state: Mutex::new(RamState { data, fail: FailPlan::Never, fail_on: FailOn::Both, requests: 0 }) }
    }

    /// A copy of the disk's contents, to write an image back to a file.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.state.lock().data.clone()
    }

    /// Takes the disk's contents.
    pub fn into_bytes(self) -> Vec<u8> {
        self.state.into_inner().data
    }

    /// Requests served or failed so far.
    pub fn requests(&self) -> u64 {
        self.state.lock().requests
    }

    /// Which requests fail from now on.
    pub fn set_fail(&self, plan: FailPlan) {
        self.state.lock().fail = plan;
    }

    /// The requests the fail plan applies to (the others always succeed).
    pub fn set_fail_on(&self, on: FailOn) {
        self.state.lock().fail_on = on;
    }

    /// The current fail plan (an `Nth` plan counts down as requests come).
    pub fn fail(&self) -> FailPlan {
        self.state.lock().fail
    }

    /// Runs `f` over the contents of `len` bytes at `sector` if the request
    /// is good and its fail plan lets it through.
    fn request(&self, sector: u64, len: usize, writing: bool, f: impl FnOnce(&mut [u8])) -> Result<(), BlockError> {
        let mut st = self.state.lock();
        let count = check_request((st.data.len() / SECTOR_SIZE) as u64, sector, len)?;
        st.requests += 1;
        let applies = match st.fail_on {
            FailOn::Both => true,
            FailOn::Reads => !writing,
            FailOn::Writes => writing,
        };
        let plan = if applies { st.fail } else { FailPlan::Never };
        let fails = match plan {
            FailPlan::Never => false,
            FailPlan::Nth(k) => {
                if k == 0 {
                    st.fail = FailPlan::Never;
                    true
                } else {
                    st.fail = FailPlan::Nth(k - 1);
                    false
                }
            }
            FailPlan::Sector(s) => (sector..sector + count).contains(&s),
            FailPlan::Always => true,
            FailPlan::Probability { ppm, seed } => {
                // xorshift64*: the state moves on with every request.
                let mut x = seed | 1;
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                st.fail = FailPlan::Probability { ppm, seed: x };
                (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) % 1_000_000 < ppm as u64
            }
        };
        if fails {
            return Err(BlockError::Io);
        }
        let start = sector as usize * SECTOR_SIZE;
        f(&mut st.data[start..start + len]);
        Ok(())
    }
}

impl BlockDevice for RamDisk {
    fn capacity(&self) -> u64 {
        (self.state.lock().data.len() / SECTOR_SIZE) as u64
    }

    fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.request(sector, buf.len(), false, |data| buf.copy_from_slice(data))
    }

    fn write(&self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        self.request(sector, buf.len(), true, |data| data.copy_from_slice(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probability plan fails about that share of requests, replayably;
    /// `fail_on` limits a plan to reads or writes.
    #[test]
    fn fail_plans_by_probability_and_direction() {
        let run = |seed| {
            let d = RamDisk::new(8);
            d.set_fail(FailPlan::Probability { ppm: 100_000, seed });
            let mut buf = [0u8; SECTOR_SIZE];
            (0..10_000).map(|_| d.read(0, &mut buf).is_err()).collect::<Vec<bool>>()
        };
        let a = run(7);
        let failed = a.iter().filter(|f| **f).count();
        assert!((800..1200).contains(&failed), "{failed} of 10000 failed at 10 %");
        assert_eq!(a, run(7), "the same seed fails the same requests");
        let d = RamDisk::new(8);
        d.set_fail(FailPlan::Always);
        d.set_fail_on(FailOn::Writes);
        let mut buf = [0u8; SECTOR_SIZE];
        assert!(d.read(0, &mut buf).is_ok());
        assert_eq!(d.write(0, &buf), Err(BlockError::Io));
        d.set_fail_on(FailOn::Reads);
        assert!(d.write(0, &buf).is_ok());
        assert_eq!(d.read(0, &mut buf), Err(BlockError::Io));
    }

    #[test]
    fn reads_back_what_was_written() {
        let d = RamDisk::new(16);
        let w: Vec<u8> = (0..2 * SECTOR_SIZE).map(|i| i as u8).collect();
        d.write(3, &w).unwrap();
        let mut r = vec![0u8; 2 * SECTOR_SIZE];
        d.read(3, &mut r).unwrap();
        assert_eq!(r, w);
        let mut z = vec![1u8; SECTOR_SIZE];
        d.read(0, &mut z).unwrap();
        assert!(z.iter().all(|&b| b == 0));
    }

    #[test]
    fn from_bytes_pads_and_gives_back() {
        let d = RamDisk::from_bytes(vec![7u8; SECTOR_SIZE + 1]);
        assert_eq!(d.capacity(), 2);
        assert_eq!(d.to_bytes()[SECTOR_SIZE], 7);
        let bytes = d.into_bytes();
        assert_eq!(bytes.len(), 2 * SECTOR_SIZE);
        assert!(bytes[SECTOR_SIZE + 1..].iter().all(|&b| b == 0));
    }

    #[test]
    fn bad_requests_are_refused() {
        let d = RamDisk::new(4);
        let mut b = vec![0u8; SECTOR_SIZE];
        assert_eq!(d.read(4, &mut b), Err(BlockError::OutOfRange { sector: 4, count: 1, capacity: 4 }));
        assert_eq!(d.read(u64::MAX, &mut b), Err(BlockError::OutOfRange { sector: u64::MAX, count: 1, capacity: 4 }));
        let mut odd = vec![0u8; 100];
        assert_eq!(d.read(0, &mut odd), Err(BlockError::BadLength(100)));
        assert_eq!(d.requests(), 0, "refused requests must not count as served");
    }

    #[test]
    fn failures_happen_as_planned() {
        let d = RamDisk::new(8);
        let mut b = vec![0u8; SECTOR_SIZE];
        d.set_fail(FailPlan::Nth(1));
        assert!(d.read(0, &mut b).is_ok());
        assert_eq!(d.read(0, &mut b), Err(BlockError::Io));
        assert!(d.read(0, &mut b).is_ok(), "Nth fails once");
        d.set_fail(FailPlan::Sector(5));
        let mut two = vec![0u8; 2 * SECTOR_SIZE];
        assert_eq!(d.read(4, &mut two), Err(BlockError::Io));
        assert!(d.read(6, &mut two).is_ok());
        d.set_fail(FailPlan::Always);
        assert_eq!(d.write(0, &b), Err(BlockError::Io));
    }
}

#[cfg(target_os = "none")]
mod ktests {
    use ktest::ktest;

    use super::*;

    /// The RAM disk works in the kernel too (its heap, no std).
    #[ktest]
    fn ram_disk_in_kernel() {
        let d = RamDisk::new(64);
        let w = vec![0xA5u8; 4 * SECTOR_SIZE];
        d.write(60, &w).unwrap();
        let mut r = vec![0u8; 4 * SECTOR_SIZE];
        d.read(60, &mut r).unwrap();
        assert_eq!(r, w);
        d.set_fail(FailPlan::Always);
        assert_eq!(d.read(0, &mut r[..SECTOR_SIZE]), Err(BlockError::Io));
    }
}
