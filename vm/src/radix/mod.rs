//! A path-compressed radix trie keyed by page index, in the manner of
//! FreeBSD's `vm_radix` / `pctrie`: the set of resident pages of an object.
//!
//! Why not a general map (BTreeMap, a hash table)? Three needs decide it:
//! - the leaves are the pages themselves (each page knows its own index), so
//!   the trie stores one word per page and no keys: a dense object costs about
//!   9 bytes per resident page with 16-wide nodes;
//! - the operations the VM needs are lookup, lookup of the nearest page at or
//!   after / at or before an index (read-ahead, clustering, range walks), and
//!   *replace*, which swaps a page in place with no allocation and so cannot
//!   fail (rule 7, seed 001);
//! - insertion allocates at most one node, from a dedicated zone, and fails
//!   cleanly when none can be had.
//!
//! ## Shape
//!
//! A node at level `clev` chooses a child by the key's `clev`-th digit
//! (`BITS` bits; level 0 is the lowest digit) and covers exactly the keys that
//! share its `owner`'s digits above `clev`. Paths are compressed: a node
//! exists only where two keys diverge, so every node has at least two
//! children, and the depth is at most `64 / BITS` but usually a few levels.
//!
//! ```text
//!            [clev 2, owner 0x000]          keys 0x003, 0x007, 0x2f1
//!             /digit 0       \digit 2
//!   [clev 0, owner 0x000]    leaf 0x2f1
//!     |3        |7
//!  leaf 0x003  leaf 0x007
//! ```
//!
//! A child slot holds 0 (empty), a node pointer (even), or a leaf with its low
//! bit set.
//!
//! ## Node width
//!
//! The width is a const parameter; the kernel uses 16. Measured on the host
//! (`cargo bench -p vm --bench radix`, against BTreeMap in the same run, 64k
//! keys, each lookup reading the page it finds): 64-wide nodes look up dense
//! keys a little faster (4.8–6.0× BTreeMap against 3.9–4.6× for 16-wide:
//! fewer levels) and cost the same on dense objects (9.3 against 9.8 bytes per
//! page), but on sparse keys they cost three times the memory (168 against 51
//! bytes per page: a 528-byte node at every divergence), look up slower
//! (1.6× against 2.0–2.2×), and make `lookup_ge` scan 64 slots when backing
//! up. 16 wins everywhere but dense lookups, which is why FreeBSD chose it too.
//!
//! ## Where a walk starts
//!
//! Faults and reads go through an object's pages mostly in order, so a walk
//! for a key usually passes the same nodes as the one before. The trie keeps
//! the deepest node of the last `lookup` or `entry` walk as a hint and starts
//! there when the hint node covers the key. That is exact, not a guess: a
//! node that covers a key lies on that key's path from the root (every node
//! above it covers a superset and branches towards it at the digits they
//! share), so the walk from the hint ends where the walk from the root would.
//! For an object's sequential pages this skips all but the last level (a
//! 64 MiB object is four levels deep). The hint is cleared when any node is
//! freed, so it never names a dead node. (FreeBSD's `pctrie` iterators keep
//! a whole path for the same reason.)
//!
//! ## Synchronisation, now and later
//!
//! Slots are atomics: loads are Acquire and stores Release, so a node is
//! fully built before it is published. Today every operation runs with the
//! object lock held. Lock-free lookups (FreeBSD's SMR lookups) would need two
//! more things: freed nodes must not be reused while a reader may still hold
//! a pointer (defer `NodeZone::free` to an SMR/epoch grace period), and a
//! reader must re-check a leaf it found (its key, and the page's object)
//! because the page can be removed and reused concurrently (and the walk hint
//! would have to go, or be kept per reader). Insertion and removal already
//! change each slot with a single store, so readers see either the old or the
//! new subtree.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::zone::NodeZone;

/// A value the trie can store: a non-null, 2-aligned word that knows its key.
///
/// # Safety
/// `to_raw` must return a value with the low bit clear and not zero, and
/// `from_raw(to_raw(x))` must give back `x`; `key` must not change while the
/// value is in a trie.
pub unsafe trait Leaf: Copy {
    fn to_raw(self) -> usize;
    /// # Safety
    /// `raw` came from `to_raw`.
    unsafe fn from_raw(raw: usize) -> Self;
    fn key(self) -> u64;
}

// SAFETY: page records are 8-aligned statics (the page array), so the address
// is non-zero with a clear low bit; the pindex does not change while the page
// is in an object (it changes only in set_owner/clear_owner, around insertion).
unsafe impl Leaf for &'static crate::page::Page {
    fn to_raw(self) -> usize {
        self as *const crate::page::Page as usize
    }
    unsafe fn from_raw(raw: usize) -> Self {
        // SAFETY: `raw` is the address of a `&'static Page` (to_raw).
        unsafe { &*(raw as *const crate::page::Page) }
    }
    fn key(self) -> u64 {
        self.pindex()
    }
}

const LEAF: usize = 1;

/// The leaf tag of a child slot, for debuggers that walk a trie
/// ([`crate::DebugConstant`]); the node width is in the debug information.
#[used]
pub static DEBUG_CONSTANTS: [crate::DebugConstant; 1] = [("LEAF", LEAF as u64)];

/// One interior node. (O) every field, through the owning trie.
#[repr(C)]
pub struct Node<const W: usize> {
    /// A key under this node with the digits at and below `clev` cleared.
    owner: u64,
    /// Non-empty children.
    count: u16,
    /// The digit this node branches on.
    clev: u8,
    child: [AtomicUsize; W],
}

/// Why an insertion did not happen.
#[derive(Debug, PartialEq, Eq)]
pub enum InsertError<L> {
    /// The key is already present, with this value (rule 15).
    Exists(L),
    /// No node could be allocated; the trie is unchanged.
    NoMemory,
}

/// A broken structural invariant (see [`Radix::check`]).
#[derive(Debug, PartialEq, Eq)]
pub enum TrieError {
    BadCount { owner: u64, clev: u8 },
    UselessNode { owner: u64, clev: u8 },
    LevelNotDecreasing { owner: u64, clev: u8 },
    ChildOutsideParent { owner: u64, clev: u8, slot: usize },
    NodeCount { counted: usize, recorded: usize },
    LeafCount { counted: usize, recorded: usize },
}

/// What [`Radix::entry`] found.
pub enum Entry<'a, L: Leaf, const W: usize> {
    /// The value with the key.
    Occupied(L),
    /// No value with the key; the place to insert one.
    Vacant(VacantEntry<'a, L, W>),
}

/// The place for a key that is not in the trie: the slot where the walk
/// ended (empty, or holding a leaf or node that the key diverges from) and
/// the node that owns it. The trie stays borrowed, so nothing can change it
/// in between.
pub struct VacantEntry<'a, L: Leaf, const W: usize> {
    trie: &'a mut Radix<L, W>,
    key: u64,
    /// A child slot of `parent`; null for the root, which is reached
    /// through `trie` (a pointer taken from the trie before the entry
    /// borrowed it would not be valid under the entry's borrow).
    slot: *const AtomicUsize,
    /// The node owning `slot`; null for the root.
    parent: *mut Node<W>,
}

impl<L: Leaf, const W: usize> VacantEntry<'_, L, W> {
    /// Inserts `value`, whose key must be the entry's. At most one node is
    /// allocated; on failure the trie is unchanged.
    #[inline(always)]
    pub fn insert(self, value: L) -> Result<(), InsertError<L>> {
        let key = self.key;
        assert!(value.key() == key, "radix: inserting key {:#x} at the entry for {key:#x}", value.key());
        let new = value.to_raw() | LEAF;
        debug_assert!(value.to_raw() & LEAF == 0 && value.to_raw() != 0);
        let trie = self.trie;
        let slot = self.slot;
        let at = |trie: &Radix<L, W>| -> *const AtomicUsize { if slot.is_null() { &trie.root } else { slot } };
        // SAFETY: the root, or a child slot of a live node of the trie,
        // which the entry still borrows mutably (nothing moved it).
        let v = unsafe { &*at(trie) }.load(Ordering::Acquire);
        if v == 0 {
            // SAFETY: as above.
            unsafe { &*at(trie) }.store(new, Ordering::Release);
            if !self.parent.is_null() {
                // SAFETY: `parent` is the live node owning `slot`; `&mut` trie.
                unsafe { (*self.parent).count += 1 };
            }
            trie.len += 1;
            return Ok(());
        }
        // A leaf with another key, or a node the key lies outside of: a new
        // node over both, at the level where they first differ.
        let other = if Radix::<L, W>::is_leaf(v) { Radix::<L, W>::leaf(v).key() } else { Radix::<L, W>::node(v).owner };
        let clev = Radix::<L, W>::split_level(key, other);
        let node = trie
            .new_node(
                clev,
                Radix::<L, W>::prefix(key, clev),
                (Radix::<L, W>::digit(key, clev), new),
                (Radix::<L, W>::digit(other, clev), v),
            )
            .ok_or(InsertError::NoMemory)?;
        // SAFETY: as above (a new node is elsewhere: the slot is unmoved).
        unsafe { &*at(trie) }.store(node, Ordering::Release);
        trie.len += 1;
        Ok(())
    }
}

/// The trie. `W` is the node width (a power of two, 2..=64).
///
/// A trie has no lock of its own: it is its owner's, and every field is
/// under the owner's lock — the object lock (O) for an object's pages, the
/// metadata lock (W) for a swap pager's blocks. The atomics are read with
/// Relaxed under that lock (lock-free readers are for later).
pub struct Radix<L: Leaf, const W: usize = 16> {
    /// The root node or leaf, tagged (0: empty). (owner's lock)
    root: AtomicUsize,
    /// The deepest node the last `lookup` or `entry` went through, or 0: a
    /// key it covers is looked up from there, not from the root (see
    /// "Where a walk starts"). Cleared whenever a node is freed. (Relaxed:
    /// used under the owner's lock, like everything else.)
    hint: AtomicUsize,
    /// Where the nodes come from. (C)
    zone: &'static NodeZone,
    /// Nodes and leaves in the trie. (owner's lock)
    nodes: usize,
    len: usize,
    _leaf: PhantomData<L>,
}

// SAFETY: the trie owns its nodes exclusively; leaves are `Leaf` values that
// the caller already shares as it sees fit (pages are Sync).
unsafe impl<L: Leaf + Send, const W: usize> Send for Radix<L, W> {}
// SAFETY: shared access only reads (Acquire loads) nodes that stay valid for
// the borrow, since changes need `&mut self`.
unsafe impl<L: Leaf + Sync, const W: usize> Sync for Radix<L, W> {}

impl<L: Leaf, const W: usize> Radix<L, W> {
    const BITS: u32 = W.trailing_zeros();
    const MASK: u64 = W as u64 - 1;

    /// Bytes of one node, for the zone.
    pub const NODE_SIZE: usize = core::mem::size_of::<Node<W>>();

    /// An empty trie taking its nodes from `zone` (whose items must hold a
    /// node: `zone.item_size() >= NODE_SIZE`).
    pub fn new(zone: &'static NodeZone) -> Self {
        assert!(W.is_power_of_two() && (2..=64).contains(&W), "node width must be a power of two in 2..=64");
        assert!(zone.item_size() >= Self::NODE_SIZE, "zone items too small for a node");
        Radix { root: AtomicUsize::new(0), hint: AtomicUsize::new(0), zone, nodes: 0, len: 0, _leaf: PhantomData }
    }

    /// Leaves in the trie.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Interior nodes in the trie.
    pub fn node_count(&self) -> usize {
        self.nodes
    }

    /// Bytes of nodes (not counting the zone's slab headers).
    pub fn memory(&self) -> usize {
        self.nodes * self.zone.item_size()
    }

    // ---- slot helpers -----------------------------------------------------

    fn is_leaf(v: usize) -> bool {
        v & LEAF != 0
    }

    fn leaf(v: usize) -> L {
        // SAFETY: leaf slots hold `to_raw() | LEAF` of a value inserted by us.
        unsafe { L::from_raw(v & !LEAF) }
    }

    fn node<'a>(v: usize) -> &'a Node<W> {
        // SAFETY: non-leaf, non-zero slots hold pointers to live nodes of this
        // trie (initialised before being stored with Release); nodes are only
        // freed after being unlinked, by `&mut self` methods.
        unsafe { &*(v as *const Node<W>) }
    }

    fn digit(key: u64, clev: u8) -> usize {
        ((key >> (clev as u32 * Self::BITS)) & Self::MASK) as usize
    }

    /// True if `key` lies under `node` (same digits above its level).
    fn covers(node: &Node<W>, key: u64) -> bool {
        let shift = (node.clev as u32 + 1) * Self::BITS;
        shift >= 64 || (key >> shift) == (node.owner >> shift)
    }

    /// The level at which two different keys first differ.
    fn split_level(a: u64, b: u64) -> u8 {
        ((63 - (a ^ b).leading_zeros()) / Self::BITS) as u8
    }

    /// `key` with the digits at and below `clev` cleared.
    fn prefix(key: u64, clev: u8) -> u64 {
        let shift = (clev as u32 + 1) * Self::BITS;
        if shift >= 64 { 0 } else { key & !((1u64 << shift) - 1) }
    }

    /// A new node with two children; `None` if the zone is empty.
    fn new_node(&mut self, clev: u8, owner: u64, a: (usize, usize), b: (usize, usize)) -> Option<usize> {
        let mem = self.zone.alloc()?;
        let node = mem.as_ptr() as *mut Node<W>;
        // SAFETY: the zone item is at least NODE_SIZE bytes, 16-aligned, and
        // ours; it is fully written here before anyone can see it.
        unsafe {
            node.write(Node { owner, count: 2, clev, child: core::array::from_fn(|_| AtomicUsize::new(0)) });
            (*node).child[a.0].store(a.1, Ordering::Relaxed);
            (*node).child[b.0].store(b.1, Ordering::Relaxed);
        }
        self.nodes += 1;
        Some(node as usize)
    }

    fn free_node(&mut self, v: usize) {
        self.nodes -= 1;
        self.hint.store(0, Ordering::Relaxed);
        // SAFETY: `v` is a node of this trie that has just been unlinked, so
        // nothing refers to it; it came from this trie's zone.
        unsafe { self.zone.free(NonNull::new_unchecked(v as *mut u8)) };
    }

    // ---- operations ----------------------------------------------------------

    /// The value with `key`.
    pub fn lookup(&self, key: u64) -> Option<L> {
        let mut v = self.start(key);
        let mut last = 0;
        let found = loop {
            if v == 0 {
                break None;
            }
            if Self::is_leaf(v) {
                let l = Self::leaf(v);
                break (l.key() == key).then_some(l);
            }
            let n = Self::node(v);
            if !Self::covers(n, key) {
                break None;
            }
            last = v;
            v = n.child[Self::digit(key, n.clev)].load(Ordering::Acquire);
        };
        if last != 0 {
            self.hint.store(last, Ordering::Relaxed);
        }
        found
    }

    /// Where a walk for `key` starts: the hint node if it covers `key`,
    /// else the root.
    #[inline]
    fn start(&self, key: u64) -> usize {
        let h = self.hint.load(Ordering::Relaxed);
        if h != 0 && Self::covers(Self::node(h), key) { h } else { self.root.load(Ordering::Acquire) }
    }

    /// Inserts `value` under its key. At most one node is allocated; on any
    /// error the trie is unchanged.
    pub fn insert(&mut self, value: L) -> Result<(), InsertError<L>> {
        match self.entry(value.key()) {
            Entry::Occupied(old) => Err(InsertError::Exists(old)),
            Entry::Vacant(v) => v.insert(value),
        }
    }

    /// The value with `key`, or the place where a value with that key
    /// would go: one walk for a lookup that may be followed by an insertion
    /// (a fault that finds no page allocates one for the same index).
    pub fn entry(&mut self, key: u64) -> Entry<'_, L, W> {
        let mut slot: *const AtomicUsize = &self.root;
        let mut parent: *mut Node<W> = core::ptr::null_mut();
        let h = self.hint.load(Ordering::Relaxed);
        if h != 0 && Self::covers(Self::node(h), key) {
            let n = Self::node(h);
            parent = h as *mut Node<W>;
            slot = &n.child[Self::digit(key, n.clev)];
        }
        let found = loop {
            // SAFETY: `slot` is the root or a child slot of a live node.
            let v = unsafe { &*slot }.load(Ordering::Acquire);
            if v == 0 {
                break None;
            }
            if Self::is_leaf(v) {
                let old = Self::leaf(v);
                break (old.key() == key).then_some(old);
            }
            let n = Self::node(v);
            if !Self::covers(n, key) {
                break None;
            }
            parent = v as *mut Node<W>;
            slot = &n.child[Self::digit(key, n.clev)];
        };
        if !parent.is_null() {
            self.hint.store(parent as usize, Ordering::Relaxed);
        }
        match found {
            Some(old) => Entry::Occupied(old),
            None => {
                let slot = if core::ptr::eq(slot, &self.root) { core::ptr::null() } else { slot };
                Entry::Vacant(VacantEntry { trie: self, key, slot, parent })
            }
        }
    }

    /// Removes and returns the value with `key`. Never allocates.
    pub fn remove(&mut self, key: u64) -> Option<L> {
        let mut slot: *const AtomicUsize = &self.root;
        // The slot holding the current node, and the node.
        let mut node_slot: *const AtomicUsize = core::ptr::null();
        let mut node: usize = 0;
        loop {
            // SAFETY: `slot` is the root or a child slot of a live node.
            let s = unsafe { &*slot };
            let v = s.load(Ordering::Acquire);
            if v == 0 {
                return None;
            }
            if Self::is_leaf(v) {
                let l = Self::leaf(v);
                if l.key() != key {
                    return None;
                }
                s.store(0, Ordering::Release);
                self.len -= 1;
                if node != 0 {
                    let n = node as *mut Node<W>;
                    // SAFETY: `n` is the live node owning `slot`; `&mut self`.
                    let count = unsafe {
                        (*n).count -= 1;
                        (*n).count
                    };
                    if count == 1 {
                        // One child left: put it in the node's place.
                        let only = Self::node(node).child.iter().map(|c| c.load(Ordering::Acquire)).find(|&c| c != 0);
                        // SAFETY: `node_slot` is the slot that holds `node`.
                        unsafe { (*node_slot).store(only.unwrap_or(0), Ordering::Release) };
                        self.free_node(node);
                    }
                }
                return Some(l);
            }
            let n = Self::node(v);
            if !Self::covers(n, key) {
                return None;
            }
            node_slot = slot;
            node = v;
            slot = &n.child[Self::digit(key, n.clev)];
        }
    }

    /// Puts `value` in the place of the value with the same key and returns
    /// the old one. No allocation, no failure path (rule 7). Panics if the key
    /// is absent: replacing nothing is a caller bug.
    pub fn replace(&mut self, value: L) -> L {
        let key = value.key();
        let mut v = self.root.load(Ordering::Acquire);
        let mut slot: &AtomicUsize = &self.root;
        loop {
            assert!(v != 0, "radix replace: no value at key {key:#x}");
            if Self::is_leaf(v) {
                let old = Self::leaf(v);
                assert!(old.key() == key, "radix replace: no value at key {key:#x}");
                slot.store(value.to_raw() | LEAF, Ordering::Release);
                return old;
            }
            let n = Self::node(v);
            assert!(Self::covers(n, key), "radix replace: no value at key {key:#x}");
            slot = &n.child[Self::digit(key, n.clev)];
            v = slot.load(Ordering::Acquire);
        }
    }

    /// The leftmost (`first`) or rightmost leaf under slot value `v`.
    fn edge_leaf(mut v: usize, first: bool) -> Option<L> {
        loop {
            if v == 0 {
                return None;
            }
            if Self::is_leaf(v) {
                return Some(Self::leaf(v));
            }
            let n = Self::node(v);
            let mut children = n.child.iter().map(|c| c.load(Ordering::Acquire));
            v = if first { children.find(|&c| c != 0) } else { children.rev().find(|&c| c != 0) }?;
        }
    }

    /// The value with the smallest key `>= key`.
    pub fn lookup_ge(&self, key: u64) -> Option<L> {
        self.nearest(key, true)
    }

    /// The value with the largest key `<= key`.
    pub fn lookup_le(&self, key: u64) -> Option<L> {
        self.nearest(key, false)
    }

    fn nearest(&self, key: u64, ge: bool) -> Option<L> {
        // The answer within the hint node's subtree, if there is one there,
        // is the answer: the subtree's keys form one interval around `key`,
        // and every key outside it lies beyond all of them on one side.
        let h = self.hint.load(Ordering::Relaxed);
        if h != 0
            && Self::covers(Self::node(h), key)
            && let Some(l) = Self::nearest_under(h, key, ge)
        {
            return Some(l);
        }
        Self::nearest_under(self.root.load(Ordering::Acquire), key, ge)
    }

    /// [`Radix::nearest`] among the leaves under slot value `v`.
    fn nearest_under(mut v: usize, key: u64, ge: bool) -> Option<L> {
        // Nodes passed on the way down, with the digit taken, for backing
        // up; entries below `depth` are written before they are read (not
        // zeroed first: that was a 1 KiB memset per lookup).
        let mut stack = [core::mem::MaybeUninit::<(usize, usize)>::uninit(); 64];
        let mut depth = 0;
        loop {
            if v == 0 {
                break;
            }
            if Self::is_leaf(v) {
                let l = Self::leaf(v);
                let k = l.key();
                if (ge && k >= key) || (!ge && k <= key) {
                    return Some(l);
                }
                break;
            }
            let n = Self::node(v);
            if !Self::covers(n, key) {
                // The whole subtree lies on one side of `key`.
                if (n.owner > key) == ge {
                    return Self::edge_leaf(v, ge);
                }
                break;
            }
            let d = Self::digit(key, n.clev);
            stack[depth].write((v, d));
            depth += 1;
            v = n.child[d].load(Ordering::Acquire);
        }
        // Back up: the nearest non-empty sibling beyond the digit taken.
        while depth > 0 {
            depth -= 1;
            // SAFETY: entries below the depth reached were written on the
            // way down.
            let (nv, d) = unsafe { stack[depth].assume_init() };
            let n = Self::node(nv);
            let next = if ge {
                n.child[d + 1..].iter().map(|c| c.load(Ordering::Acquire)).find(|&c| c != 0)
            } else {
                n.child[..d].iter().rev().map(|c| c.load(Ordering::Acquire)).find(|&c| c != 0)
            };
            if let Some(c) = next {
                return Self::edge_leaf(c, ge);
            }
        }
        None
    }

    /// The values with keys in `[start, end)`, in key order.
    pub fn range(&self, start: u64, end: u64) -> Range<'_, L, W> {
        Range { trie: self, next: Some(start), end }
    }

    /// Frees every node; the leaves are forgotten (their owner deals with
    /// them). Never fails.
    pub fn reclaim_all_nodes(&mut self) {
        self.hint.store(0, Ordering::Relaxed);
        let root = self.root.swap(0, Ordering::AcqRel);
        let mut stack: [usize; 64 * 2] = [0; 128];
        let mut depth = 0;
        if root != 0 && !Self::is_leaf(root) {
            stack[0] = root;
            depth = 1;
        }
        // Depth-first, one child node at a time (unlinked as it is pushed),
        // so the stack never holds more than one path: at most 64 levels.
        while depth > 0 {
            let v = stack[depth - 1];
            let n = Self::node(v);
            match n.child.iter().find(|c| {
                let c = c.load(Ordering::Relaxed);
                c != 0 && !Self::is_leaf(c)
            }) {
                Some(c) => {
                    stack[depth] = c.swap(0, Ordering::Relaxed);
                    depth += 1;
                }
                None => {
                    depth -= 1;
                    self.free_node(v);
                }
            }
        }
        self.len = 0;
    }

    /// Checks the structure: child counts, at least two children per node,
    /// levels decreasing downwards, every child inside its parent's range at
    /// its digit, and the node and leaf counts.
    pub fn check(&self) -> Result<(), TrieError> {
        let (mut nodes, mut leaves) = (0, 0);
        let root = self.root.load(Ordering::Acquire);
        if root != 0 {
            self.check_slot(root, None, &mut nodes, &mut leaves)?;
        }
        if nodes != self.nodes {
            return Err(TrieError::NodeCount { counted: nodes, recorded: self.nodes });
        }
        if leaves != self.len {
            return Err(TrieError::LeafCount { counted: leaves, recorded: self.len });
        }
        Ok(())
    }

    fn check_slot(
        &self,
        v: usize,
        parent: Option<(&Node<W>, usize)>,
        nodes: &mut usize,
        leaves: &mut usize,
    ) -> Result<(), TrieError> {
        let key = if Self::is_leaf(v) { Self::leaf(v).key() } else { Self::node(v).owner };
        if let Some((p, slot)) = parent
            && (!Self::covers(p, key) || Self::digit(key, p.clev) != slot)
        {
            return Err(TrieError::ChildOutsideParent { owner: p.owner, clev: p.clev, slot });
        }
        if Self::is_leaf(v) {
            *leaves += 1;
            return Ok(());
        }
        let n = Self::node(v);
        *nodes += 1;
        if let Some((p, _)) = parent
            && n.clev >= p.clev
        {
            return Err(TrieError::LevelNotDecreasing { owner: n.owner, clev: n.clev });
        }
        if n.owner != Self::prefix(n.owner, n.clev) {
            return Err(TrieError::ChildOutsideParent { owner: n.owner, clev: n.clev, slot: usize::MAX });
        }
        let mut count = 0;
        for (i, c) in n.child.iter().enumerate() {
            let c = c.load(Ordering::Acquire);
            if c != 0 {
                count += 1;
                self.check_slot(c, Some((n, i)), nodes, leaves)?;
            }
        }
        if count != n.count as usize {
            return Err(TrieError::BadCount { owner: n.owner, clev: n.clev });
        }
        if count < 2 {
            return Err(TrieError::UselessNode { owner: n.owner, clev: n.clev });
        }
        Ok(())
    }
}

impl<L: Leaf, const W: usize> Drop for Radix<L, W> {
    fn drop(&mut self) {
        self.reclaim_all_nodes();
    }
}

/// Iterator over a key range, by repeated [`Radix::lookup_ge`].
pub struct Range<'a, L: Leaf, const W: usize> {
    trie: &'a Radix<L, W>,
    next: Option<u64>,
    end: u64,
}

impl<L: Leaf, const W: usize> Iterator for Range<'_, L, W> {
    type Item = L;

    fn next(&mut self) -> Option<L> {
        let from = self.next?;
        let v = self.trie.lookup_ge(from).filter(|v| v.key() < self.end);
        self.next = v.and_then(|v| v.key().checked_add(1));
        v
    }
}

#[cfg(test)]
mod tests;
