//! `fork` of a map: the child's entries, shared or copy-on-write.

use super::*;

impl VmMap {
    /// The map a fork gives the child, over `pmap`: shared entries map the
    /// same object; copied entries become copy-on-write in both (and the
    /// parent's writable mappings are write-protected); `None` entries are
    /// left out. Wirings are not inherited. `NoMemory` if an object could
    /// not be allocated: the partial child is dropped (its references go
    /// with it, at once, but none is the last: the parent's entries hold
    /// theirs); the parent keeps any object it was given for an entry that
    /// had none, which changes nothing it sees.
    pub fn fork(&mut self, pmap: Arc<dyn Pmap>) -> Result<VmMap, MapError> {
        let env = self.env;
        let mut child = VmMap::new(self.min, self.max, pmap, env);
        child.max_entries = self.max_entries;
        child.entry_alloc = self.entry_alloc;
        child.stack_top = self.stack_top;
        child.limits = self.limits;
        child.room_for(self.entries.len(), 0)?;
        for e in self.entries.values_mut() {
            if e.inherit == Inherit::None {
                continue;
            }
            if e.object.is_none() {
                let o = VmObject::try_new(ObjectKind::Anonymous, e.pages(), env).map_err(|_| MapError::NoMemory)?;
                e.object = Some(o);
                e.offset = 0;
            }
            let Some(o) = e.object.as_ref() else { continue };
            // A backing object that only this one still uses (the last
            // child forked from it has gone) is merged into it first, as
            // FreeBSD's vm_map_copy_entry does: otherwise every fork and
            // exit would leave the chain one object deeper. It may decline
            // (shared, busy pages, short of memory): that is only a longer
            // chain.
            let _ = crate::object::collapse(o);
            // The child maps the same pages now.
            o.lock().set_one_mapping(false);
            o.reference();
            let mut c = e.clone();
            c.wired_count = 0;
            if e.inherit == Inherit::Copy {
                e.cow = true;
                e.needs_copy = true;
                c.cow = true;
                c.needs_copy = true;
                self.pmap.protect(e.start, e.end, e.prot - Prot::WRITE).flush();
            }
            child.size += c.end - c.start;
            child.entries.insert(c.start, c);
        }
        self.timestamp += 1;
        Ok(child)
    }
}
