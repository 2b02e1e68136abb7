//! The map's half of a fault: the entry at an address, its first object
//! and index, made or shadowed as the access needs.

use super::{Inherit, Lookup, MapError, PAGE, VmMap};
use crate::object::{ObjectKind, VmObject};
use crate::pmap::Prot;

impl VmMap {
    /// Finds what a fault at `va` for `access` needs: the first object and
    /// index, and the protection to map with. Makes the anonymous object of an
    /// untouched entry, and the shadow of a private entry on its first write.
    pub fn lookup(&mut self, va: u64, access: Prot) -> Result<Lookup, MapError> {
        self.lookup_as(va, access, false)
    }

    /// [`VmMap::lookup`], and with `force` for an access that overrides
    /// the entry's protection up to its maximum, as a debugger's does
    /// (`/proc/PID/mem`; Linux's FOLL_FORCE, FreeBSD's `VM_PROT_COPY`). A
    /// forced read needs READ in the maximum; a forced write needs WRITE
    /// in the maximum and either WRITE in the protection or a private
    /// entry, whose own copy takes the write (a shared one is never
    /// written behind its protection). The entry must be readable, and the
    /// page is mapped with the entry's protection: a forced write leaves
    /// no writable mapping behind.
    pub fn lookup_as(&mut self, va: u64, access: Prot, force: bool) -> Result<Lookup, MapError> {
        let env = self.env;
        let e = self.entries.range_mut(..=va).next_back().map(|(_, e)| e).filter(|e| va < e.end).ok_or(MapError::NoEntry)?;
        let forced = force
            && e.prot.contains(Prot::READ)
            && e.max_prot.contains(access)
            && (!access.contains(Prot::WRITE) || e.inherit != Inherit::Share);
        if !e.prot.contains(access) && !forced {
            return Err(MapError::Protection);
        }
        let pages = e.pages();
        if e.object.is_none() {
            let o = VmObject::try_new(ObjectKind::Anonymous, pages, env).map_err(|_| MapError::NoMemory)?;
            // Private memory: this entry is all that maps it.
            o.lock().set_one_mapping(e.inherit == Inherit::Copy);
            e.object = Some(o);
            e.offset = 0;
        }
        let mut prot = e.prot;
        let mut shadowed = false;
        if e.needs_copy {
            if access.contains(Prot::WRITE) {
                let backing = e.object.take().unwrap();
                match VmObject::try_shadow(backing, e.offset, pages) {
                    Ok(shadow) => {
                        shadow.lock().set_one_mapping(true);
                        e.object = Some(shadow);
                    }
                    Err(backing) => {
                        e.object = Some(backing);
                        return Err(MapError::NoMemory);
                    }
                }
                e.offset = 0;
                e.needs_copy = false;
                shadowed = true;
            } else {
                // Read through to the shared object; a write faults again.
                prot.remove(Prot::WRITE);
            }
        }
        let lookup = Lookup {
            object: e.object.clone().unwrap(),
            pindex: e.offset + (va - e.start) / PAGE,
            prot,
            cow: e.cow,
            wired: e.wired_count > 0,
            lock_on_fault: e.wired_count > 0 && e.lock_on_fault,
            entry_start: e.start,
            entry_end: e.end,
            timestamp: 0,
        };
        // The entry has a new object: a fault that looked it up before
        // (and may be about to map a page of the object now shadowed, over
        // the page a fault of the new object maps) sees the change when it
        // rechecks, and looks again (FreeBSD's `vm_fault_relookup`).
        if shadowed {
            self.timestamp += 1;
        }
        Ok(Lookup { timestamp: self.timestamp, ..lookup })
    }
}
