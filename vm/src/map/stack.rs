//! Stacks that grow down (FreeBSD's `vm_map_growstack`): an entry mapped
//! with [`VmMap::map_stack`] is a stack, and a fault in the gap below it,
//! within the stack's limit, grows it instead of failing. The fault path
//! calls [`VmMap::grow_stack`] when its lookup finds no entry. Any other
//! entry can be made to grow down the same way ([`VmMap::set_grows_down`],
//! Linux's `MAP_GROWSDOWN`); the process's own stack is the one that
//! [`VmMap::map_stack`] made.
//!
//! A stack grows by at least [`MapLimits::step`] at a time (fewer faults
//! for a program that recurses down its stack), never below its floor
//! (its top less [`MapLimits::stack`], Linux's and FreeBSD's RLIMIT_STACK)
//! nor into an entry mapped in the gap, and never past the map's size
//! limit (RLIMIT_AS) or, when new memory is wired as it is mapped
//! (`mlockall(MCL_FUTURE)`), its wired limit (RLIMIT_MEMLOCK): when the
//! step is too much it grows by what the fault needs, and when even that
//! is too much it does not grow. Each growth is a new anonymous entry just
//! below the stack, marked as the stack's new bottom.
//!
//! The limits belong to the map's owner (a process) and are given to the
//! map ([`VmMap::set_limits`]) whenever they change: FreeBSD reads them
//! from the process at each growth; here the VM knows no processes.

use super::{Inherit, MapError, PAGE, VmMap};
use crate::pmap::Prot;

/// What the map's owner allows its stack and the map to grow to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapLimits {
    /// Most bytes the stack may span below its top (RLIMIT_STACK).
    pub stack: u64,
    /// Most bytes the map may hold (RLIMIT_AS).
    pub size: u64,
    /// When new memory is wired as it is mapped: most bytes the map may
    /// hold wired (RLIMIT_MEMLOCK). `None` when it is not.
    pub wire_future: Option<u64>,
    /// New memory wired as it is mapped is locked on fault
    /// (`mlockall(MCL_FUTURE | MCL_ONFAULT)`): marked, not brought in.
    pub lock_on_fault: bool,
    /// The least a stack grows by at once.
    pub step: u64,
    /// No stack grows below this address (the first pages of the address
    /// space stay unmapped, whatever the limit).
    pub lowest: u64,
}

impl MapLimits {
    /// No limit but the map's range; growth by a page at a time.
    pub const UNLIMITED: MapLimits =
        MapLimits { stack: u64::MAX, size: u64::MAX, wire_future: None, lock_on_fault: false, step: PAGE, lowest: 0 };
    /// A new map's: its stack does not grow until the owner says how far.
    pub const NO_GROWTH: MapLimits = MapLimits { stack: 0, ..MapLimits::UNLIMITED };
}

/// What [`VmMap::grow_stack`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Growth {
    /// The address is not in a stack's gap: nothing to do.
    NotStack,
    /// The stack now covers `[start, end)` more (new memory, to be wired
    /// when `wire` is set).
    Grew { start: u64, end: u64, wire: bool },
    /// The address is just past the stack's limit (within a step of its
    /// floor): a stack overflow, worth a message.
    Overflow { limit: u64 },
    /// The stack cannot grow there (in the way of an entry, past the size
    /// or wired limit, or short of map entries).
    Refused,
}

impl VmMap {
    /// Maps a stack of `len` bytes ending at `top`: read-write anonymous
    /// memory that grows down on faults below it.
    pub fn map_stack(&mut self, top: u64, len: u64) -> Result<u64, MapError> {
        let start = top.checked_sub(len).ok_or(MapError::InvalidRange)?;
        self.map(Some(start), len, Prot::RW, Prot::RW, Inherit::Copy, None, false)?;
        self.set_grows_down(start);
        self.stack_top = Some(top);
        Ok(start)
    }

    /// Makes the entry that starts at `start` grow down on faults below it,
    /// as a stack does. False if no entry starts there.
    pub fn set_grows_down(&mut self, start: u64) -> bool {
        match self.entries.get_mut(&start) {
            Some(e) => {
                e.grows_down = true;
                true
            }
            None => false,
        }
    }

    /// The top of the stack whose lowest entry starts at `low`: the end of
    /// the run of entries that grow down, each just above the last.
    fn top_of(&self, low: u64) -> u64 {
        let mut top = low;
        while let Some(e) = self.entries.get(&top).filter(|e| e.grows_down) {
            top = e.end;
        }
        top
    }

    /// The limits the map's owner allows.
    pub fn limits(&self) -> MapLimits {
        self.limits
    }

    /// Sets them (when the owner's limits change; existing memory stays).
    pub fn set_limits(&mut self, limits: MapLimits) {
        self.limits = limits;
    }

    /// The top of the process's stack, if the map has one.
    pub fn stack_top(&self) -> Option<u64> {
        self.stack_top
    }

    /// The lowest address of the stack, if the map has one.
    pub fn stack_bottom(&self) -> Option<u64> {
        let top = self.stack_top?;
        let mut bottom = top;
        while let Some((_, e)) = self.entries.range(..bottom).next_back() {
            if e.end != bottom || !e.grows_down {
                break;
            }
            bottom = e.start;
        }
        (bottom < top).then_some(bottom)
    }

    /// The lowest address the stack may reach.
    fn stack_floor(&self, top: u64) -> u64 {
        top.saturating_sub(self.limits.stack).max(self.limits.lowest).max(self.min)
    }

    /// A fault at `addr` found no entry: grows the stack above it down to
    /// cover it if `addr` is in the gap below a stack and within the limits.
    pub fn grow_stack(&mut self, addr: u64) -> Growth {
        let Some((&low, stack)) = self.entries.range(addr..).next() else { return Growth::NotStack };
        if !stack.grows_down || addr >= low {
            return Growth::NotStack;
        }
        let top = self.top_of(low);
        let lim = self.limits;
        let floor = self.stack_floor(top);
        if addr < floor {
            return if addr >= floor.saturating_sub(lim.step) { Growth::Overflow { limit: lim.stack } } else { Growth::NotStack };
        }
        let want = addr & !(PAGE - 1);
        // Stop at whatever is mapped below the stack.
        let below = self.entries.range(..low).next_back().map_or(floor, |(_, e)| e.end);
        if below > want {
            return Growth::NotStack;
        }
        let mut start = want.min(low.saturating_sub(lim.step)).max(floor).max(below);
        let mut room = lim.size.saturating_sub(self.size);
        if let Some(wired) = lim.wire_future {
            room = room.min(wired.saturating_sub(self.wired_size()));
        }
        if low - start > room {
            start = want;
            if low - start > room {
                return Growth::Refused;
            }
        }
        // The new memory is like the stack's bottom entry (a stack
        // mapped inaccessible and opened later grows as it is now).
        let (prot, max_prot, inherit) = (stack.prot, stack.max_prot, stack.inherit);
        if self.map(Some(start), low - start, prot, max_prot, inherit, None, false).is_err() {
            return Growth::Refused;
        }
        self.set_grows_down(start);
        let mut wire = lim.wire_future.is_some();
        if wire && lim.lock_on_fault {
            // Nothing to bring in: the entry is locked, its pages come
            // wired at their faults.
            let e = self.entries.get_mut(&start).expect("just mapped");
            e.wired_count = 1;
            e.lock_on_fault = true;
            wire = false;
        }
        Growth::Grew { start, end: low, wire }
    }
}
