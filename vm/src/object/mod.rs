//! VM objects: the things pages belong to (FreeBSD's `vm_object`).
//!
//! An object is a sparse array of pages indexed by page index: anonymous
//! memory, a file (vnode), swap-backed memory, or physical memory. Its
//! resident pages are in a radix trie ([`crate::radix`]). For copy-on-write,
//! an object can *shadow* a backing object: a lookup that misses in the shadow
//! continues in the backing object at `pindex + backing_offset`, and so on
//! down the chain. When a backing object is referenced only by its one shadow,
//! [`collapse`] moves its pages up and removes it from the chain.
//!
//! ## Locking
//!
//! Lock legend for [`VmObject`] and [`ObjectState`]: (A) atomic, (C)
//! constant, (O) the object lock. The object lock is a spin lock taken with
//! [`VmObject::lock`]; the guard ([`Locked`]) carries the page operations, so
//! they cannot be called without it. Lock order: a shadow before its backing
//! object (front to back along the chain), both before any page busy lock is
//! waited on — waiting for a busy page always drops the object lock first.
//!
//! ## Page operations (with the rules of `vm/RULES.md`)
//!
//! - `insert`: the page is exclusively busy and in no object; a second page
//!   at the same index is a bug caught here (rule 15); a trie node that cannot
//!   be allocated fails the insert with nothing changed.
//! - `remove`: returns whether the caller may free the page (rule 5).
//! - `rename`: moves a page to another object/index; can fail (node
//!   allocation), and then nothing has moved.
//! - `replace`: swaps a new page into an old page's slot; cannot fail (rule 7).
//! - `remove_range`: truncation; waits for busy pages, removes every mapping
//!   (`PageMappings::remove_all`), frees unwired pages, and leaves wired ones to their last
//!   unwire.

use crate::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::sync::{Mutex, MutexGuard};
use bitflags::bitflags;

use crate::failpoint::FailPoint;
use crate::page::{Page, busy_wait};
use crate::phys::{AllocFlags, PhysMem};
use crate::pmap::PageMappings;
use crate::radix::{Entry, InsertError, Radix, VacantEntry};
use crate::zone::NodeZone;

/// What kind of memory an object holds. (A) fixed, except that an
/// anonymous object becomes a swap object at its first page-out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ObjectKind {
    /// Zero-fill memory; may later be paged to swap.
    Anonymous,
    /// A file's pages, through the vnode pager.
    Vnode,
    /// Anonymous memory that has swap space.
    Swap,
    /// Device or physical memory mapped as is.
    Physical,
}

impl ObjectKind {
    fn from_u8(v: u8) -> ObjectKind {
        match v {
            0 => ObjectKind::Anonymous,
            1 => ObjectKind::Vnode,
            2 => ObjectKind::Swap,
            _ => ObjectKind::Physical,
        }
    }
}

bitflags! {
    /// Object flags. (O)
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct ObjectFlags: u32 {
        /// Being terminated: no new pages, no new references.
        const DEAD = 1 << 0;
        /// Each page index is reachable through one map entry at most
        /// (FreeBSD's `OBJ_ONEMAPPING`): the anonymous memory of one
        /// private entry, never forked, shadowed or mapped twice. When a
        /// range of it is unmapped its pages and swap go at once
        /// ([`VmObject::trim`]), as nothing else can reach them.
        const ONE_MAPPING = 1 << 1;
    }
}

/// The object flags, for debuggers ([`crate::DebugConstant`]).
#[used]
pub static DEBUG_CONSTANTS: [crate::DebugConstant; 2] = [
    ("ObjectFlags::DEAD", ObjectFlags::DEAD.bits() as u64),
    ("ObjectFlags::ONE_MAPPING", ObjectFlags::ONE_MAPPING.bits() as u64),
];

/// What a pager says about a read (rule 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagerResult {
    /// The page is valid now.
    Ok,
    /// I/O error (EIO to the program).
    Error,
    /// Try the fault again shortly (a lock could not be had: rule 8).
    Again,
    /// No such page (beyond the end of the file).
    Bad,
}

/// A pager as an object sees it. The vnode and swap pagers implement it; the
/// fault path calls it for pages not resident.
pub trait Pager: Send + Sync {
    /// Whether the pager holds page `pindex` (FreeBSD's `vm_pager_has_page`):
    /// `None` if not, and the fault goes on down the shadow chain (or
    /// zero-fills); if so, how many pages before and after it are worth
    /// reading in the same I/O (read-behind and read-ahead): pages the
    /// pager holds, next to each other in its store. A pager that cannot
    /// cluster says `Some((0, 0))`.
    fn has_page(&self, pindex: u64) -> Option<(u64, u64)>;
    /// Reads page `page.pindex()` of `object` into `page`, which is
    /// exclusively busy, invalid and in `object`. Called with no lock held.
    /// On `Ok` every block of the page is valid; otherwise the caller frees
    /// it (rule 6).
    fn get_page(&self, object: &VmObject, page: &'static Page) -> PagerResult;

    /// Reads `pages` (consecutive indices, each exclusively busy, invalid and
    /// in `object`) in one I/O where it can. The result is for
    /// `pages[req]`, the page a fault waits for: on `Ok` it is valid. The
    /// others are read ahead (or behind): each is valid or left invalid, and
    /// the caller finishes them either way (rule 6).
    fn get_pages(&self, object: &VmObject, pages: &[&'static Page], req: usize) -> PagerResult {
        self.get_page(object, pages[req])
    }

    /// Writes `pages` (consecutive indices of `object`, each exclusively
    /// busy, write-protected in every mapping, dirty) to the pager's store,
    /// in one I/O where it can (FreeBSD's `putpages`). Returns how many
    /// from the start were written; the caller marks those clean and keeps
    /// the rest dirty. Called with no lock held.
    fn put_pages(&self, _object: &VmObject, _pages: &[&'static Page]) -> usize {
        0
    }

    /// Whatever the pager holds for pages `[start, end)` is stale: they were
    /// dirtied, or left the object (FreeBSD's `swap_pager_freespace`). A
    /// pager whose store is the truth (a file) ignores it.
    fn forget(&self, _start: u64, _end: u64) {}

    /// The pages of `[start, end)` the pager holds copies of in a store of
    /// its own (swap), for reports (`/proc/PID/smaps`' Swap): the first
    /// such page at or after `start` and a mask of it and the 63 indices
    /// after it (bit n: index + n), or `None` if there is none. A pager
    /// whose store is the file itself holds nothing of its own.
    fn held_from(&self, _start: u64, _end: u64) -> Option<(u64, u64)> {
        None
    }

    /// Where in its own store the pager keeps page `pindex` (a swap
    /// block), for reports (`/proc/PID/pagemap`); `None` if it holds none.
    fn block_of(&self, _pindex: u64) -> Option<u64> {
        None
    }
}

/// What objects need from the rest of the VM: the page allocator, the zone of
/// trie nodes, the fail point for page allocation, and the machine's view of
/// every mapping of a page (to unmap pages leaving an object).
#[derive(Clone, Copy)]
pub struct VmEnv {
    pub pm: &'static PhysMem,
    pub zone: &'static NodeZone,
    pub page_alloc: &'static FailPoint,
    pub mappings: &'static dyn PageMappings,
}

/// Why an object operation did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectError {
    /// No page or no trie node could be allocated; nothing changed.
    NoMemory,
    /// A page needed is busy; retry after waiting.
    Busy,
    /// The object is being terminated.
    Dead,
    /// The collapse does not apply (backing shared, or not anonymous).
    NotCollapsible,
}

/// Removes every hardware mapping of `page` (`pmap_remove_all`) before it
/// leaves its object.
fn pmap_remove_all(env: &VmEnv, page: &'static Page) {
    env.mappings.remove_all(page);
    assert!(page.mapping_count() == 0, "page {:#x}: still mapped after remove_all", page.phys());
}

/// The lock-protected part of an object. (O) every field.
///
/// All of it is the object lock's (O): it is the data inside that lock.
pub struct ObjectState {
    /// Size in pages. (O)
    pub size: u64,
    /// The resident pages by index. (O)
    pages: Radix<&'static Page>,
    /// The object this one shadows, and where this one's index 0 is in it. (O)
    backing: Option<Arc<VmObject>>,
    backing_offset: u64,
    /// Objects shadowing this one. (O)
    shadow_count: u32,
    /// (O)
    flags: ObjectFlags,
    /// Where the pages' contents come from and go to (None: anonymous, not
    /// yet paged out). (O)
    pager: Option<Arc<dyn Pager>>,
}

/// A VM object.
pub struct VmObject {
    /// An [`ObjectKind`]. (A)
    kind: AtomicU8,
    /// The page allocator and the rest of the VM's environment. (C)
    env: VmEnv,
    /// References from maps and shadows (not Rust borrows). (A)
    ref_count: AtomicU32,
    /// Pager operations under way; termination waits for zero. (A)
    paging_in_progress: AtomicU32,
    /// The object lock (O) and what it protects.
    state: Mutex<ObjectState>,
}

impl VmObject {
    /// A new object with one reference. Panics if the kernel heap is
    /// exhausted: for setup code; the fault path uses [`VmObject::try_new`].
    pub fn new(kind: ObjectKind, size: u64, env: VmEnv) -> Arc<VmObject> {
        Self::try_new(kind, size, env).expect("kernel heap exhausted creating an object")
    }

    /// A new object with one reference, or `NoMemory` if the heap is short.
    pub fn try_new(kind: ObjectKind, size: u64, env: VmEnv) -> Result<Arc<VmObject>, ObjectError> {
        if crate::failpoint::OBJECT_ALLOC.should_fail() {
            return Err(ObjectError::NoMemory);
        }
        Arc::try_new(VmObject {
            kind: AtomicU8::new(kind as u8),
            env,
            ref_count: AtomicU32::new(1),
            paging_in_progress: AtomicU32::new(0),
            state: Mutex::ranked(
                ObjectState {
                    size,
                    pages: Radix::new(env.zone),
                    backing: None,
                    backing_offset: 0,
                    shadow_count: 0,
                    flags: ObjectFlags::empty(),
                    pager: None,
                },
                &crate::witness::order::OBJECT,
            ),
        })
        .map_err(|_| ObjectError::NoMemory)
    }

    /// A new anonymous object of `size` pages shadowing `backing` from page
    /// `offset` on. The shadow takes over the caller's reference to `backing`.
    pub fn shadow(backing: Arc<VmObject>, offset: u64, size: u64) -> Arc<VmObject> {
        Self::try_shadow(backing, offset, size).unwrap_or_else(|_| panic!("kernel heap exhausted creating a shadow"))
    }

    /// [`VmObject::shadow`] that fails cleanly when the heap is short,
    /// handing the backing object (and its reference) back.
    pub fn try_shadow(backing: Arc<VmObject>, offset: u64, size: u64) -> Result<Arc<VmObject>, Arc<VmObject>> {
        let obj = match VmObject::try_new(ObjectKind::Anonymous, size, backing.env) {
            Ok(o) => o,
            Err(_) => return Err(backing),
        };
        {
            let mut b = backing.lock();
            b.st.shadow_count += 1;
            // The shadow reaches its pages too.
            b.st.flags.remove(ObjectFlags::ONE_MAPPING);
        }
        let mut st = obj.lock();
        st.st.backing = Some(backing);
        st.st.backing_offset = offset;
        drop(st);
        Ok(obj)
    }

    pub fn kind(&self) -> ObjectKind {
        ObjectKind::from_u8(self.kind.load(Ordering::Acquire))
    }

    /// The object whose [`VmObject::handle`] is `handle`.
    ///
    /// # Safety
    /// The object must be alive for `'a`: the caller holds the busy lock of
    /// a page whose object is `handle` (termination waits for every busy
    /// page, so the object outlives the busy hold).
    pub unsafe fn from_handle<'a>(handle: usize) -> &'a VmObject {
        // SAFETY: per the contract, `handle` is the address of a live object.
        unsafe { &*(handle as *const VmObject) }
    }

    /// The VM services the object uses.
    pub fn env(&self) -> &VmEnv {
        &self.env
    }

    /// The handle pages record as their object.
    pub fn handle(&self) -> usize {
        self as *const VmObject as usize
    }

    /// Takes the object lock.
    pub fn lock(&self) -> Locked<'_> {
        Locked { obj: self, st: self.state.lock() }
    }

    /// True if the object lock is held, by anyone (for tests).
    pub fn is_locked(&self) -> bool {
        self.state.is_locked()
    }

    /// Whether the current thread holds the object lock, where that is
    /// known (debug builds with the lock-order check running); `None`
    /// elsewhere. (Whether *someone* holds it says nothing of the caller: a
    /// preempted pageout daemon may hold it meanwhile.)
    pub fn locked_by_me(&self) -> Option<bool> {
        self.state.held_by_me()
    }

    pub fn ref_count(&self) -> u32 {
        self.ref_count.load(Ordering::Acquire)
    }

    /// Adds a reference.
    pub fn reference(&self) {
        let old = self.ref_count.fetch_add(1, Ordering::AcqRel);
        assert!(old > 0, "reference to an object with no references");
    }

    /// Drops a reference; the last one terminates the object (frees its pages
    /// and drops its reference to its backing object).
    ///
    /// A loop, not a recursion, down the shadow chain (as FreeBSD's
    /// `vm_object_deallocate`): a chain hundreds of objects long (a process
    /// that forked that many times) must not overflow a kernel stack.
    pub fn deallocate(self: Arc<Self>) {
        let mut next = Some(self);
        while let Some(object) = next.take() {
            let old = object.ref_count.fetch_sub(1, Ordering::AcqRel);
            assert!(old > 0, "object reference count underflow");
            if old == 1 {
                next = object.terminate();
            }
        }
    }

    /// Pager operations under way (FreeBSD's `paging_in_progress`).
    pub fn paging_in_progress(&self) -> u32 {
        self.paging_in_progress.load(Ordering::Acquire)
    }

    /// Marks a pager operation under way.
    pub fn pip_add(&self) {
        self.paging_in_progress.fetch_add(1, Ordering::AcqRel);
    }

    /// Ends a pager operation; the last one wakes [`VmObject::pip_wait`].
    pub fn pip_wakeup(&self) {
        let old = self.paging_in_progress.fetch_sub(1, Ordering::AcqRel);
        assert!(old > 0, "paging_in_progress underflow");
        if old == 1 {
            crate::wakeup(self.pip_chan());
        }
    }

    fn pip_chan(&self) -> usize {
        &self.paging_in_progress as *const AtomicU32 as usize
    }

    /// Waits (sleeping) until no pager operation is under way (object lock
    /// not held): a page-out or page-in may take a disk request's time.
    pub fn pip_wait(&self) {
        while self.paging_in_progress.load(Ordering::Acquire) != 0 {
            crate::sleep_on(self.pip_chan(), &|| self.paging_in_progress.load(Ordering::Acquire) != 0);
        }
    }

    /// Frees every page and the trie, and releases the backing object.
    /// Returns the backing object, whose reference the caller drops next.
    fn terminate(&self) -> Option<Arc<VmObject>> {
        self.lock().st.flags |= ObjectFlags::DEAD;
        self.pip_wait();
        self.remove_range(0, u64::MAX);
        let backing = {
            let mut l = self.lock();
            l.st.pages.reclaim_all_nodes();
            l.st.backing.take()
        };
        if let Some(b) = &backing {
            b.lock().st.shadow_count -= 1;
        }
        backing
    }

    /// Pages `[start, end)` of a [`ObjectFlags::ONE_MAPPING`] object left
    /// the one entry that mapped them (an unmap): they go, with their swap,
    /// and the object ends at `start` if they were its end (FreeBSD's
    /// `vm_map_entry_delete`). Nothing when the caller's reference is the
    /// last: the object goes whole with it. Called with no lock held.
    pub fn trim(&self, start: u64, end: u64) {
        if self.ref_count() <= 1 || !self.lock().flags().contains(ObjectFlags::ONE_MAPPING) {
            return;
        }
        self.remove_range(start, end);
        let mut l = self.lock();
        if end >= l.st.size && start < l.st.size {
            l.st.size = start;
        }
    }

    /// Truncation: takes every page with index in `[start, end)` out of the
    /// object. Busy pages are waited for (the lock is dropped meanwhile);
    /// every mapping of each page is removed; unwired pages are freed; wired
    /// pages only leave the object, and their last unwire frees them (rule 5).
    pub fn remove_range(&self, start: u64, end: u64) {
        self.remove_pages(start, end, false);
        // Paged-out copies go too (a swap object's slots; rule 14).
        if let Some(pager) = self.lock().pager() {
            pager.forget(start, end);
        }
    }

    /// Invalidation of cached data (FreeBSD's `OBJPR_CLEANONLY`): frees the
    /// clean, unwired pages with index in `[start, end)` after removing
    /// their mappings; dirty pages (including those written through a
    /// mapping since they were last cleaned) and wired pages stay. Returns
    /// how many pages were freed.
    pub fn remove_clean(&self, start: u64, end: u64) -> usize {
        self.remove_pages(start, end, true)
    }

    fn remove_pages(&self, start: u64, end: u64, clean_only: bool) -> usize {
        let pm = self.env.pm;
        let mut next = start;
        let mut freed = 0;
        loop {
            let mut l = self.lock();
            let Some(page) = l.st.pages.lookup_ge(next).filter(|p| p.pindex() < end) else { break };
            if !page.try_xbusy() {
                drop(l);
                busy_wait(page);
                continue;
            }
            next = page.pindex().saturating_add(1);
            if clean_only {
                if page.wired() {
                    page.xunbusy();
                    continue;
                }
                // Write-protecting harvests the mappings' modified bits
                // into the page's dirty bits; a page found dirty keeps
                // its mappings and its place.
                drop(l);
                self.env.mappings.write_protect_all(page);
                if page.dirty() != 0 {
                    page.xunbusy();
                    continue;
                }
                self.env.mappings.remove_all(page);
                l = self.lock();
            } else {
                // Every mapping goes; a wired one leaves a mark holding its
                // wiring, which the map entry drops at unwire: a wired page
                // leaves the object now and is freed at its last unwire
                // (rule 5).
                self.env.mappings.orphan_wired(page);
            }
            assert!(page.mapping_count() == 0, "page {:#x}: still mapped after its mappings were removed", page.phys());
            let may_free = l.remove(page);
            drop(l);
            if may_free {
                pm.free(page);
                freed += 1;
            } else {
                page.xunbusy();
            }
        }
        freed
    }
}

/// The object lock, held; the page operations live here.
pub struct Locked<'a> {
    obj: &'a VmObject,
    st: MutexGuard<'a, ObjectState>,
}

impl Locked<'_> {
    pub fn object(&self) -> &VmObject {
        self.obj
    }

    pub fn resident(&self) -> usize {
        self.st.pages.len()
    }

    /// Size in pages.
    pub fn size(&self) -> u64 {
        self.st.size
    }

    /// Raises the size to `size` pages (a map entry grew over pages the
    /// object never had: `VmMap::remap`). Never lowers it.
    pub fn grow_to(&mut self, size: u64) {
        self.st.size = self.st.size.max(size);
    }

    /// Sets or clears [`ObjectFlags::ONE_MAPPING`] (the map's to keep).
    pub fn set_one_mapping(&mut self, on: bool) {
        self.st.flags.set(ObjectFlags::ONE_MAPPING, on);
    }

    pub fn flags(&self) -> ObjectFlags {
        self.st.flags
    }

    pub fn shadow_count(&self) -> u32 {
        self.st.shadow_count
    }

    /// Whether the object shadows another (without a reference to it).
    pub fn has_backing(&self) -> bool {
        self.st.backing.is_some()
    }

    pub fn backing(&self) -> Option<(Arc<VmObject>, u64)> {
        self.st.backing.as_ref().map(|b| (b.clone(), self.st.backing_offset))
    }

    pub fn set_pager(&mut self, pager: Arc<dyn Pager>) {
        self.st.pager = Some(pager);
    }

    /// An anonymous object's first page-out: it becomes a swap object with
    /// `pager` (FreeBSD's default-to-swap conversion). Returns the pager
    /// the object has now (another thread's, if it converted first).
    pub fn make_swap_backed(&mut self, pager: Arc<dyn Pager>) -> Arc<dyn Pager> {
        if let Some(p) = &self.st.pager {
            return p.clone();
        }
        assert_eq!(self.obj.kind(), ObjectKind::Anonymous, "only anonymous objects turn into swap objects");
        self.obj.kind.store(ObjectKind::Swap as u8, Ordering::Release);
        self.st.pager = Some(pager.clone());
        pager
    }

    pub fn pager(&self) -> Option<Arc<dyn Pager>> {
        self.st.pager.clone()
    }

    /// The resident page at `pindex`.
    pub fn lookup(&self, pindex: u64) -> Option<&'static Page> {
        self.st.pages.lookup(pindex)
    }

    /// The first resident page at or after `pindex`.
    pub fn lookup_ge(&self, pindex: u64) -> Option<&'static Page> {
        self.st.pages.lookup_ge(pindex)
    }

    /// The resident pages with index in `[start, end)`.
    pub fn pages_in(&self, start: u64, end: u64) -> Vec<&'static Page> {
        self.st.pages.range(start, end).collect()
    }

    /// Calls `f` for each resident page with index in `[start, end)`, in
    /// order, without allocating.
    pub fn for_each_in(&self, start: u64, end: u64, f: impl FnMut(&'static Page)) {
        self.st.pages.range(start, end).for_each(f)
    }

    /// Inserts `page` (exclusively busy, in no object) at `pindex`.
    pub fn insert(&mut self, page: &'static Page, pindex: u64) -> Result<(), ObjectError> {
        let obj = self.obj;
        let st = &mut *self.st;
        if st.flags.contains(ObjectFlags::DEAD) {
            return Err(ObjectError::Dead);
        }
        match st.pages.entry(pindex) {
            Entry::Vacant(place) => insert_at(obj, place, page, pindex),
            Entry::Occupied(other) => panic!(
                "object {:#x}: double insertion at index {pindex}: page {:#x} is there, page {:#x} inserted (rule 15)",
                obj.handle(),
                other.phys(),
                page.phys()
            ),
        }
    }

    /// Removes `page` (exclusively busy) from the object. Returns whether the
    /// caller may free it: false if it is wired, and then the last unwire
    /// frees it (rule 5).
    pub fn remove(&mut self, page: &'static Page) -> bool {
        assert_eq!(page.object(), Some(self.obj.handle()), "page {:#x}: removed from an object it is not in", page.phys());
        assert!(page.xbusied(), "page {:#x}: removed without the exclusive busy lock", page.phys());
        let got = self.st.pages.remove(page.pindex());
        assert!(got.is_some_and(|g| core::ptr::eq(g, page)), "page {:#x}: not in its object's trie", page.phys());
        let may_free = page.clear_owner();
        if !may_free {
            // Left to its last unwire, in no object: off the queues, where
            // the pageout daemon would find a page nobody may use.
            self.obj.env.pm.dequeue(page);
        }
        may_free
    }

    /// Rule 5 for a page of this object: removes it (exclusively busy), then
    /// frees it unless it is wired, in which case it is unbusied and its last
    /// unwire frees it.
    pub fn free_invalid(&mut self, page: &'static Page) {
        if self.remove(page) {
            self.obj.env.pm.free(page);
        } else {
            page.xunbusy();
        }
    }

    /// Moves `page` (exclusively busy, in this object) to `dest` at
    /// `new_pindex`. Can fail for want of a trie node, and then nothing moved.
    pub fn rename(&mut self, page: &'static Page, dest: &mut Locked<'_>, new_pindex: u64) -> Result<(), ObjectError> {
        assert_eq!(page.object(), Some(self.obj.handle()), "page {:#x}: renamed from an object it is not in", page.phys());
        assert!(page.xbusied(), "page {:#x}: renamed without the exclusive busy lock", page.phys());
        if dest.st.flags.contains(ObjectFlags::DEAD) {
            return Err(ObjectError::Dead);
        }
        let old_pindex = page.pindex();
        // Insert under the new index first (the only step that can fail) ...
        page.pindex.store(new_pindex, Ordering::Release);
        match dest.st.pages.insert(page) {
            Ok(()) => {}
            Err(InsertError::NoMemory) => {
                page.pindex.store(old_pindex, Ordering::Release);
                return Err(ObjectError::NoMemory);
            }
            Err(InsertError::Exists(other)) => {
                page.pindex.store(old_pindex, Ordering::Release);
                panic!("rename: double insertion at index {new_pindex}: page {:#x} is there (rule 15)", other.phys());
            }
        }
        // ... then leave the old object, which cannot fail.
        page.pindex.store(old_pindex, Ordering::Release);
        let removed = self.st.pages.remove(old_pindex);
        debug_assert!(removed.is_some_and(|r| core::ptr::eq(r, page)));
        page.pindex.store(new_pindex, Ordering::Release);
        page.object.store(dest.obj.handle(), Ordering::Release);
        Ok(())
    }

    /// Puts `new` (exclusively busy, in no object) in the place of `old`
    /// (exclusively busy, in this object) and returns `old`, now in no object.
    /// No allocation and no failure path (rule 7). The caller dirties `new`.
    pub fn replace(&mut self, new: &'static Page, old: &'static Page) -> &'static Page {
        assert!(new.object().is_none(), "replace: new page {:#x} already belongs to an object", new.phys());
        assert!(old.xbusied(), "replace: old page {:#x} is not exclusively busy", old.phys());
        assert_eq!(old.object(), Some(self.obj.handle()), "replace: old page {:#x} is not in this object", old.phys());
        let pindex = old.pindex();
        new.set_owner(self.obj.handle(), pindex);
        let prev = self.st.pages.replace(new);
        debug_assert!(core::ptr::eq(prev, old));
        old.clear_owner();
        old
    }

    /// Allocates a page for `pindex` and inserts it: exclusively busy,
    /// invalid (or zeroed with `AllocFlags::ZERO`). Memory shortage (no page,
    /// no trie node, or the `page.alloc` fail point) is `NoMemory`, with
    /// nothing changed.
    pub fn alloc_page(&mut self, pindex: u64, flags: AllocFlags) -> Result<&'static Page, ObjectError> {
        match self.lookup_or_alloc(pindex, flags)? {
            (page, true) => Ok(page),
            (other, false) => panic!(
                "object {:#x}: double insertion at index {pindex}: page {:#x} is there (rule 15)",
                self.obj.handle(),
                other.phys()
            ),
        }
    }

    /// The resident page at `pindex` (and `false`), or else a page allocated
    /// and inserted there as by [`Locked::alloc_page`] (and `true`), with one
    /// walk of the trie for both. Errors as `alloc_page`'s, with nothing
    /// changed.
    #[inline(always)]
    pub fn lookup_or_alloc(&mut self, pindex: u64, flags: AllocFlags) -> Result<(&'static Page, bool), ObjectError> {
        let obj = self.obj;
        let st = &mut *self.st;
        let place = match st.pages.entry(pindex) {
            Entry::Occupied(page) => return Ok((page, false)),
            Entry::Vacant(place) => place,
        };
        if st.flags.contains(ObjectFlags::DEAD) {
            return Err(ObjectError::Dead);
        }
        let env = &obj.env;
        if env.page_alloc.should_fail() {
            return Err(ObjectError::NoMemory);
        }
        let page = env.pm.alloc_inline(flags - AllocFlags::NOBUSY - AllocFlags::UNMANAGED).ok_or(ObjectError::NoMemory)?;
        match insert_at(obj, place, page, pindex) {
            Ok(()) => Ok((page, true)),
            Err(e) => {
                env.pm.free(page);
                Err(e)
            }
        }
    }

    /// Checks the object: the trie's structure, and that every page in it
    /// names this object and its index.
    pub fn check(&self) -> Result<(), &'static str> {
        self.st.pages.check().map_err(|_| "trie structure broken")?;
        for p in self.st.pages.range(0, u64::MAX) {
            if p.object() != Some(self.obj.handle()) {
                return Err("a page in the trie names another object");
            }
        }
        Ok(())
    }
}

/// Inserts `page` (exclusively busy, in no object) into `obj` at `place`,
/// the vacant entry for `pindex` in its trie.
#[inline(always)]
fn insert_at(
    obj: &VmObject,
    place: VacantEntry<'_, &'static Page, 16>,
    page: &'static Page,
    pindex: u64,
) -> Result<(), ObjectError> {
    assert!(page.is_managed(), "page {:#x}: unmanaged pages never join objects", page.phys());
    page.set_owner(obj.handle(), pindex);
    match place.insert(page) {
        Ok(()) => Ok(()),
        Err(InsertError::NoMemory) => {
            page.clear_owner();
            Err(ObjectError::NoMemory)
        }
        Err(InsertError::Exists(_)) => unreachable!("a vacant entry holds no value"),
    }
}

mod chain;
pub use chain::{Chain, chain, collapse, lookup_chain};

#[cfg(test)]
pub(crate) mod tests;

#[cfg(target_os = "none")]
mod ktests;
