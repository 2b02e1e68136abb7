//! Fail points, in the manner of FreeBSD's `fail(9)`: named places in the code
//! that can be told to fail, so that every failure path runs in tests.
//!
//! A fail point is a value with plain atomic fields (readable and writable from
//! gdb); the kernel's own are the statics below, listed in [`ALL`]. Code that
//! can fail asks [`FailPoint::should_fail`] first and takes its real failure
//! path when told to. Actions:
//!
//! | action | text form | meaning |
//! | --- | --- | --- |
//! | `Off` | `off` | never fail |
//! | `Always` | `always` | fail every call |
//! | `Nth(n)` | `nth:N` | fail the N-th call from now (1 = the next), once |
//! | `Probability(ppm, seed)` | `P%` or `P%@SEED` | fail each call with probability P %, from a seeded generator so that a run can be replayed |
//!
//! The kernel command line sets them with `fail.<name>=<action>`, e.g.
//! `fail.radix.node_alloc=1%@7`. Host tests make fail points of their own, so
//! tests that run in parallel do not disturb each other.

use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// What a fail point does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Off,
    Always,
    /// Fail the n-th call from now (1 = the next one), once.
    Nth(u64),
    /// Fail with this probability in parts per million, seeded.
    Probability {
        ppm: u32,
        seed: u64,
    },
}

const MODE_OFF: u8 = 0;
const MODE_ALWAYS: u8 = 1;
const MODE_NTH: u8 = 2;
const MODE_PROB: u8 = 3;
/// Mixed into a probability's seed to make the generator's state.
const SEED_MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// The modes and the seed mix, for debuggers that set fail points in a
/// stopped kernel ([`crate::DebugConstant`]).
#[used]
pub static DEBUG_CONSTANTS: [crate::DebugConstant; 5] = [
    ("MODE_OFF", MODE_OFF as u64),
    ("MODE_ALWAYS", MODE_ALWAYS as u64),
    ("MODE_NTH", MODE_NTH as u64),
    ("MODE_PROB", MODE_PROB as u64),
    ("SEED_MIX", SEED_MIX),
];

/// One fail point. All fields are atomics: (A).
#[derive(Debug)]
pub struct FailPoint {
    pub name: &'static str,
    /// MODE_* above.
    mode: AtomicU8,
    /// Nth: calls left before the failure; Probability: parts per million.
    param: AtomicU64,
    /// Generator state for Probability.
    rng: AtomicU64,
    /// Times evaluated and times failed, for tests and reports.
    pub calls: AtomicU64,
    pub fired: AtomicU64,
}

/// Why an action string was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    BadAction,
    UnknownFailPoint,
}

impl FailPoint {
    pub const fn new(name: &'static str) -> FailPoint {
        FailPoint {
            name,
            mode: AtomicU8::new(MODE_OFF),
            param: AtomicU64::new(0),
            rng: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            fired: AtomicU64::new(0),
        }
    }

    /// Sets the action (and clears the counters).
    pub fn set(&self, action: Action) {
        self.calls.store(0, Ordering::Relaxed);
        self.fired.store(0, Ordering::Relaxed);
        let (mode, param) = match action {
            Action::Off => (MODE_OFF, 0),
            Action::Always => (MODE_ALWAYS, 0),
            Action::Nth(n) => (MODE_NTH, n.max(1)),
            Action::Probability { ppm, seed } => {
                // xorshift needs a non-zero state.
                self.rng.store(seed ^ SEED_MIX | 1, Ordering::Relaxed);
                (MODE_PROB, ppm.min(1_000_000) as u64)
            }
        };
        self.param.store(param, Ordering::Relaxed);
        self.mode.store(mode, Ordering::Release);
    }

    /// Parses and sets an action in its text form (see the module docs).
    pub fn set_str(&self, text: &str) -> Result<(), ParseError> {
        self.set(parse_action(text)?);
        Ok(())
    }

    /// True if this call must fail.
    #[inline]
    pub fn should_fail(&self) -> bool {
        let mode = self.mode.load(Ordering::Acquire);
        if mode == MODE_OFF {
            return false;
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        let fail = match mode {
            MODE_ALWAYS => true,
            MODE_NTH => {
                let left = self.param.fetch_sub(1, Ordering::AcqRel);
                if left == 1 {
                    self.mode.store(MODE_OFF, Ordering::Release);
                }
                left == 1
            }
            _ => {
                let ppm = self.param.load(Ordering::Relaxed);
                let r = self
                    .rng
                    .try_update(Ordering::Relaxed, Ordering::Relaxed, |mut x| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        Some(x)
                    })
                    .unwrap_or(1);
                (r % 1_000_000) < ppm
            }
        };
        if fail {
            self.fired.fetch_add(1, Ordering::Relaxed);
        }
        fail
    }
}

/// Parses `off`, `always`, `nth:N`, `P%` or `P%@SEED` (P may have decimals).
pub fn parse_action(text: &str) -> Result<Action, ParseError> {
    match text {
        "off" => return Ok(Action::Off),
        "always" => return Ok(Action::Always),
        _ => {}
    }
    if let Some(n) = text.strip_prefix("nth:") {
        return n.parse().map(Action::Nth).map_err(|_| ParseError::BadAction);
    }
    let (pct, seed) = match text.split_once('@') {
        Some((p, s)) => (p, s.parse().map_err(|_| ParseError::BadAction)?),
        None => (text, 1),
    };
    let pct = pct.strip_suffix('%').ok_or(ParseError::BadAction)?;
    let (whole, frac) = pct.split_once('.').unwrap_or((pct, ""));
    let whole: u32 = whole.parse().map_err(|_| ParseError::BadAction)?;
    if frac.len() > 4 || whole > 100 {
        return Err(ParseError::BadAction);
    }
    let frac_ppm: u32 = if frac.is_empty() {
        0
    } else {
        let f: u32 = frac.parse().map_err(|_| ParseError::BadAction)?;
        f * 10u32.pow(4 - frac.len() as u32)
    };
    Ok(Action::Probability { ppm: whole * 10_000 + frac_ppm, seed })
}

/// Node allocation of the radix trie (`radix::NodeZone`).
pub static RADIX_NODE_ALLOC: FailPoint = FailPoint::new("radix.node_alloc");
/// Page allocation for objects (`object::VmObject::alloc_page`).
pub static PAGE_ALLOC: FailPoint = FailPoint::new("page.alloc");
/// Allocation of a VM object (`object::VmObject::try_new`): fork's
/// objects for entries that had none, shadows, vnode objects.
pub static OBJECT_ALLOC: FailPoint = FailPoint::new("object.alloc");
/// A map entry's allocation (`map::VmMap`): the map, clip or fork that
/// needs one fails with `TooManyEntries`, as on a short heap.
pub static MAP_ENTRY_ALLOC: FailPoint = FailPoint::new("map.entry_alloc");
/// Pager I/O: a read or write of backing store fails with an I/O error.
pub static PAGER_IO: FailPoint = FailPoint::new("pager.io");

/// Block-device reads and writes (the kernel's virtio-blk driver): the
/// request fails with an I/O error before it reaches the device.
pub static BLK_READ: FailPoint = FailPoint::new("blk.read");
pub static BLK_WRITE: FailPoint = FailPoint::new("blk.write");

/// Swap-device reads and writes (the swap pager's page-ins and page-outs):
/// the transfer fails with an I/O error, the other disks unaffected.
pub static SWAP_READ: FailPoint = FailPoint::new("swap.read");
pub static SWAP_WRITE: FailPoint = FailPoint::new("swap.write");

/// PV-entry allocation of the machine's pmap (one per mapping of a managed
/// page): `pmap_enter` fails with a shortage and the fault waits and retries
/// (rule 12).
pub static PV_ALLOC: FailPoint = FailPoint::new("pmap.pv_alloc");

/// Every kernel fail point, for the command line and the debugger.
pub static ALL: [&FailPoint; 10] = [
    &RADIX_NODE_ALLOC,
    &PAGE_ALLOC,
    &OBJECT_ALLOC,
    &MAP_ENTRY_ALLOC,
    &PAGER_IO,
    &BLK_READ,
    &BLK_WRITE,
    &SWAP_READ,
    &SWAP_WRITE,
    &PV_ALLOC,
];

/// Sets the kernel fail point `name` from its text form.
pub fn set_by_name(name: &str, action: &str) -> Result<(), ParseError> {
    let fp = ALL.iter().find(|f| f.name == name).ok_or(ParseError::UnknownFailPoint)?;
    fp.set_str(action)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse() {
        assert_eq!(parse_action("off"), Ok(Action::Off));
        assert_eq!(parse_action("always"), Ok(Action::Always));
        assert_eq!(parse_action("nth:3"), Ok(Action::Nth(3)));
        assert_eq!(parse_action("1%"), Ok(Action::Probability { ppm: 10_000, seed: 1 }));
        assert_eq!(parse_action("0.5%@9"), Ok(Action::Probability { ppm: 5_000, seed: 9 }));
        assert_eq!(parse_action("100%"), Ok(Action::Probability { ppm: 1_000_000, seed: 1 }));
        for bad in ["", "sometimes", "nth:x", "101%", "5", "1%@x", "0.00001%"] {
            assert_eq!(parse_action(bad), Err(ParseError::BadAction), "{bad:?}");
        }
        assert_eq!(set_by_name("no.such.point", "off"), Err(ParseError::UnknownFailPoint));
    }

    #[test]
    fn nth_fails_once() {
        let fp = FailPoint::new("t");
        fp.set(Action::Nth(3));
        let got: [bool; 5] = core::array::from_fn(|_| fp.should_fail());
        assert_eq!(got, [false, false, true, false, false]);
        assert_eq!(fp.fired.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn probability_is_seeded_and_roughly_right() {
        let a = FailPoint::new("a");
        let b = FailPoint::new("b");
        a.set(Action::Probability { ppm: 100_000, seed: 42 });
        b.set(Action::Probability { ppm: 100_000, seed: 42 });
        let mut fails = 0;
        for _ in 0..100_000 {
            let x = a.should_fail();
            assert_eq!(x, b.should_fail(), "same seed, same sequence");
            fails += x as u32;
        }
        assert!((9_000..11_000).contains(&fails), "10 % of 100000 gave {fails}");
        a.set(Action::Off);
        assert!(!(0..1000).any(|_| a.should_fail()));
        a.set(Action::Always);
        assert!((0..10).all(|_| a.should_fail()));
    }
}
