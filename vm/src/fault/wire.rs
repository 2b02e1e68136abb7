//! Wiring ranges for `mlock` and `mlock2`: the map marks the entries, the
//! fault path brings the pages in and wires each as it maps it.

use super::{FaultError, fault};
use crate::PAGE_SIZE;
use crate::map::{Fill, MapLock};
use crate::pmap::Prot;

/// Wires `[start, end)` of `map` (mlock): marks the entries wired and faults
/// every page in, wired (`lock` without on-fault). A private mapping that can be written is copied to
/// its own anonymous memory now (rule 10), so a later write never has to
/// replace a wired page.
pub fn wire(map: &MapLock, start: u64, end: u64) -> Result<(), FaultError> {
    lock(map, start, end, false)
}

/// Locks `[start, end)` of `map` as `mlock2` does (see
/// `VmMap::lock_entries`): a range not locked yet is marked so and has its
/// pages brought in and wired, or with `on_fault` only those mapped now
/// (the rest are wired at their faults, as Linux's `MLOCK_ONFAULT`). On a
/// failure the part this call locked is unlocked again.
pub fn lock(map: &MapLock, start: u64, end: u64, on_fault: bool) -> Result<(), FaultError> {
    let todo = map.lock().lock_entries(start, end, on_fault)?;
    let undo = |map: &MapLock| {
        for t in todo.iter().filter(|t| t.newly) {
            let _ = map.lock().unwire(t.start, t.end);
        }
    };
    for t in &todo {
        let mut va = t.start;
        while va < t.end {
            let prot = {
                let map = map.lock();
                if t.fill == Fill::Present {
                    // The next page mapped here, if any.
                    let pmap = map.pmap();
                    let mut next = pmap.next_used(va, t.end);
                    while let Some(v) = next
                        && pmap.extract(v).is_none()
                    {
                        next = pmap.next_used(v + PAGE_SIZE as u64, t.end);
                    }
                    let Some(v) = next else { break };
                    va = v;
                }
                map.entry(va).map(|e| e.prot).unwrap_or(Prot::READ)
            };
            if prot.is_empty() {
                // Nothing reaches it: locked on fault (`lock_entries`).
                va += PAGE_SIZE as u64;
                continue;
            }
            let access = if prot.contains(Prot::WRITE) { Prot::WRITE } else { Prot::READ };
            if let Err(err) = fault(map, va, access, true) {
                undo(map);
                return Err(err);
            }
            va += PAGE_SIZE as u64;
        }
    }
    Ok(())
}
