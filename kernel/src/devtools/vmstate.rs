//! `mode=vmstate`: a known VM state, the kernel's own view of it, and a
//! place where a debugger stops to look at the same state.
//!
//! A process that runs no program ([`proc::spawn_kernel`]) sets up its
//! address space through real page faults:
//!
//! ```text
//!  FILE_VA    private mapping of /data/seq32, two pages:
//!               page 1 read     a pager read (the vnode pager, with read-ahead)
//!               page 0 written  a copy-on-write fault (the copy goes to a new
//!                               shadow object; the file's page stays behind it)
//!  WIRED_VA   an anonymous page, written, then wired (as mlock does)
//!  LIMBO_VA   an anonymous object with one page left in limbo: in the object,
//!             invalid, unbusied, unwired, on no queue (the bug of rule 4)
//!  SWAP_VA    two anonymous pages, written, paged out to swap by the laundry's
//!             own code and read back in (a swap pager read); then the second
//!             one's swap slot is dropped while it stays clean (the bug of rule
//!             14). Skipped when there is no swap disk.
//! ```
//!
//! It then prints the kernel's view of that state as `vmstate: <what>
//! key=value ...` lines: the page records with their PV entries, the objects
//! with their shadow chains and resident pages, the map, the page-table walk
//! of each address, the free counts, swap, and what the invariant checker
//! finds (the limbo page, the clean page without a slot). It records where things are in [`SHOWN`] and
//! calls [`stop_here`] with interrupts off and the other CPUs parked, so a
//! debugger stopped there sees exactly the state printed. The host test `gdb::vm_commands_match_the_kernel`
//! (tests/tests/kernel.rs) runs the gdb commands of `tools/gdb/` there and
//! compares their output with these lines, field by field.
//!
//! After the stop, two pages are allocated through the `page.alloc` fail
//! point and the outcome is printed (a debugger may have set the fail point
//! meanwhile), the limbo page is freed (rule 5), the page without a slot is
//! dirtied (so that it needs none), the process ends, and the invariants
//! must hold again.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use vm::map::Inherit;
use vm::object::{ObjectKind, VmObject};
use vm::page::Page;
use vm::phys::AllocFlags;
use vm::pmap::{Pmap, Prot};
use x86_64::instructions::interrupts::without_interrupts;

use crate::kprintln;
use crate::mm::vmspace::AddressSpace;
use crate::proc::{self, Process, Status};

const PAGE: u64 = vm::PAGE_SIZE as u64;
/// The private file mapping (two pages).
pub const FILE_VA: u64 = 0x4000_0000;
/// The wired anonymous page.
pub const WIRED_VA: u64 = 0x4010_0000;
/// The object with the page in limbo (the page itself is not mapped).
pub const LIMBO_VA: u64 = 0x4020_0000;
/// The two pages paged out and in (with swap).
pub const SWAP_VA: u64 = 0x4030_0000;
/// The mapped file (made by `boot`, in the root filesystem).
const FILE: &[u8] = b"/data/seq32";

/// Where the scenario's things are, for a debugger stopped at
/// [`stop_here`]: `vm map kernel::vmstate::SHOWN.pid`, `vm object
/// kernel::vmstate::SHOWN.shadow`. Objects are their addresses (the
/// handles their pages record); pages are frame numbers. (A) written
/// before the stop.
pub struct Shown {
    pub pid: AtomicU64,
    /// The shadow object made by the copy-on-write fault.
    pub shadow: AtomicU64,
    /// The file's object.
    pub vnode: AtomicU64,
    /// The anonymous object of the wired page.
    pub wired_object: AtomicU64,
    /// The object holding the limbo page.
    pub limbo_object: AtomicU64,
    /// The swap object of SWAP_VA (0 without swap).
    pub swap_object: AtomicU64,
    /// The file's page 0, behind the copy.
    pub original_pfn: AtomicU64,
    /// The page in limbo.
    pub limbo_pfn: AtomicU64,
}

pub static SHOWN: Shown = Shown {
    pid: AtomicU64::new(0),
    shadow: AtomicU64::new(0),
    vnode: AtomicU64::new(0),
    wired_object: AtomicU64::new(0),
    limbo_object: AtomicU64::new(0),
    swap_object: AtomicU64::new(0),
    original_pfn: AtomicU64::new(0),
    limbo_pfn: AtomicU64::new(0),
};

/// The debugger's breakpoint: reached once the state is printed, with
/// interrupts off (nothing else runs until it returns).
#[inline(never)]
pub fn stop_here() {
    core::hint::black_box(&SHOWN);
}

/// `mode=vmstate`: runs the scenario in its process and waits for it; the
/// page invariants must hold once it is gone.
pub fn run() {
    let p = proc::spawn_kernel("vmstate", scenario).expect("vmstate: cannot start the process");
    let status = p.wait();
    assert!(status == Status::Exited(0), "vmstate: the process ended with {status:?}");
    vm::drain_caches();
    let v = crate::kern::sched::with_other_cpus_parked(|| vm::invariants::check(vm::global()));
    assert!(v.is_empty(), "vmstate: invariants broken after the scenario: {v:x?}");
    kprintln!("vmstate: done: the invariants hold again");
}

/// The scenario, in the process's thread (its address space loaded).
fn scenario(me: &Arc<Process>) {
    let space = me.space().expect("vmstate: the process has no address space");
    let m = crate::fs::root().expect("vmstate needs the root filesystem (for /data/seq32)");
    let (ino, size) = {
        let mut fs = m.fs.lock();
        let ino = fs.lookup(FILE).expect("vmstate: /data/seq32 is missing");
        (ino, fs.stat(ino).expect("vmstate: cannot stat /data/seq32").size)
    };
    let vnode = m.vnode(ino, size).expect("vmstate: no vnode for /data/seq32");
    let map =
        |at, pages, object, cow| space.map.lock().map(Some(at), pages * PAGE, Prot::RW, Prot::ALL, Inherit::Copy, object, cow);
    // The mapping's reference, as mmap takes it.
    vnode.object.reference();
    map(FILE_VA, 2, Some((vnode.object.clone(), 0)), true).expect("vmstate: cannot map the file");
    map(WIRED_VA, 1, None, false).expect("vmstate: cannot map the wired page");
    // The new object's reference goes to its mapping. Index 0 is for the
    // page in limbo, 1 and 2 for the allocations after the stop.
    let limbo_object = VmObject::new(ObjectKind::Anonymous, 3, vm::kernel_env());
    map(LIMBO_VA, 1, Some((limbo_object.clone(), 0)), false).expect("vmstate: cannot map the limbo object");
    map(SWAP_VA, 2, None, false).expect("vmstate: cannot map the pages for swap");

    // SAFETY: the addresses are mapped read-write in this process's address
    // space, which is loaded, and spawn_kernel allows kernel access to user
    // pages; each access faults its page in.
    unsafe {
        ((FILE_VA + PAGE) as *const u8).read_volatile();
        let b = (FILE_VA as *const u8).read_volatile();
        (FILE_VA as *mut u8).write_volatile(!b);
        (WIRED_VA as *mut u64).write_volatile(0x5747_e000);
        (SWAP_VA as *mut u64).write_volatile(0x5a5a_0000);
        ((SWAP_VA + PAGE) as *mut u64).write_volatile(0x5a5a_0001);
    }
    vm::fault::wire(&space.map, WIRED_VA, WIRED_VA + PAGE).expect("vmstate: cannot wire the page");
    let limbo = limbo_object.lock().alloc_page(0, AllocFlags::empty()).expect("vmstate: no page for limbo");
    // Allocated exclusively busy and invalid; unbusied on no queue, it is
    // in limbo.
    limbo.xunbusy();
    let no_slot = without_slot(&space);

    // Every page on the queue it is bound for, as the debugger reads the
    // queues' lists.
    vm::global().flush_queue_batches();
    let shown = Scene::new(me, &space, &vnode.object, &limbo_object, limbo, no_slot.as_ref());
    let lines = shown.lines();
    for line in &lines {
        kprintln!("vmstate: {line}");
    }
    // The allocator's figures last, with nothing allocated or freed
    // between them and the stop: not by this thread, and not by another
    // CPU (parked meanwhile: its idle thread would zero pages).
    crate::kern::sched::with_other_cpus_parked(|| {
        print_phys();
        kprintln!("vmstate: stopping at kernel::vmstate::stop_here");
        without_interrupts(stop_here);
    });
    drop(lines);

    // A debugger may have set the fail point at the stop: two allocations
    // through it say what it does now.
    let outcome: Vec<&str> = (1..=2)
        .map(|i| {
            let mut l = limbo_object.lock();
            match l.alloc_page(i, AllocFlags::empty()) {
                Ok(p) => {
                    l.free_invalid(p);
                    "ok"
                }
                Err(_) => "failed",
            }
        })
        .collect();
    kprintln!("vmstate: page.alloc after the stop: {}", outcome.join(","));
    vm::failpoint::PAGE_ALLOC.set(vm::failpoint::Action::Off);
    limbo.xbusy();
    limbo_object.lock().free_invalid(limbo);
    if let Some((_, page)) = no_slot {
        // Dirty, it needs no slot (rule 14 holds again).
        page.xbusy();
        page.set_all_dirty();
        page.xunbusy();
    }
}

/// Pages SWAP_VA's two pages out to swap and back in, then drops the
/// second one's slot while it stays clean: rule 14 broken on purpose.
/// Returns the swap object and that page; None without a swap disk.
fn without_slot(space: &AddressSpace) -> Option<(Arc<VmObject>, &'static Page)> {
    crate::mm::swap::swap()?;
    let pm = vm::global();
    let mappings = vm::kernel_env().mappings;
    let resident = |va: u64| space.pmap.extract(va).and_then(|(pa, _)| pm.page_of(pa));
    let object = space.map.lock().entry(SWAP_VA).and_then(|e| e.object.clone())?;
    let on_swap = || object.lock().pager().is_some_and(|p| p.has_page(0).is_some() && p.has_page(1).is_some());
    // Pages just written are referenced: a laundry pass only notes that
    // (and reactivates them); a later one writes them out.
    for _ in 0..4 {
        if on_swap() {
            break;
        }
        for va in [SWAP_VA, SWAP_VA + PAGE] {
            if let Some(p) = resident(va) {
                pm.launder(p);
            }
        }
        vm::pageout::scan_laundry(pm, mappings, 2, &crate::mm::swap::new_pager);
    }
    assert!(object.kind() == ObjectKind::Swap && on_swap(), "vmstate: the pages at SWAP_VA were not paged out");
    // Their data is on swap now: whatever the laundry left resident goes
    // (it is clean), and a read brings both back through the swap pager.
    object.remove_clean(0, 2);
    assert!(object.lock().resident() == 0, "vmstate: pages paged out are still resident");
    let pages_in = crate::mm::swap::pages_in_out().0;
    // SAFETY: both pages are mapped read-write in the loaded address space.
    unsafe {
        (SWAP_VA as *const u64).read_volatile();
        ((SWAP_VA + PAGE) as *const u64).read_volatile();
    }
    let read = crate::mm::swap::pages_in_out().0 - pages_in;
    assert!(read == 2, "vmstate: {read} pages read back from swap, not 2");
    let page = resident(SWAP_VA + PAGE)?;
    assert!(page.dirty() == 0, "vmstate: the page read back from swap is dirty");
    object.lock().pager()?.forget(1, 2);
    Some((object, page))
}

/// What the scenario set up, found the way the kernel finds it.
struct Scene<'a> {
    me: &'a Arc<Process>,
    space: &'a AddressSpace,
    pages: Vec<(&'static str, Option<u64>, &'static Page)>,
    objects: Vec<(&'static str, Arc<VmObject>)>,
}

impl<'a> Scene<'a> {
    fn new(
        me: &'a Arc<Process>,
        space: &'a AddressSpace,
        vnode: &Arc<VmObject>,
        limbo_object: &Arc<VmObject>,
        limbo: &'static Page,
        no_slot: Option<&(Arc<VmObject>, &'static Page)>,
    ) -> Scene<'a> {
        let pm = vm::global();
        let mapped = |va: u64| {
            let (pa, _) = space.pmap.extract(va).expect("vmstate: the address is not mapped");
            pm.page_of(pa).expect("vmstate: a mapped frame with no page record")
        };
        let original = vnode.lock().lookup(0).expect("vmstate: the file's page 0 is not resident");
        let entry_object = |va: u64| {
            let map = space.map.lock();
            map.entry(va).and_then(|e| e.object.clone()).expect("vmstate: a map entry with no object")
        };
        let shadow = entry_object(FILE_VA);
        let wired_object = entry_object(WIRED_VA);
        let pfn = |p: &Page| p.phys() / PAGE;
        SHOWN.pid.store(me.pid, Ordering::Relaxed);
        SHOWN.shadow.store(shadow.handle() as u64, Ordering::Relaxed);
        SHOWN.vnode.store(vnode.handle() as u64, Ordering::Relaxed);
        SHOWN.wired_object.store(wired_object.handle() as u64, Ordering::Relaxed);
        SHOWN.limbo_object.store(limbo_object.handle() as u64, Ordering::Relaxed);
        SHOWN.original_pfn.store(pfn(original), Ordering::Relaxed);
        SHOWN.limbo_pfn.store(pfn(limbo), Ordering::Relaxed);
        let mut scene = Scene {
            me,
            space,
            pages: alloc::vec![
                ("cow", Some(FILE_VA), mapped(FILE_VA)),
                ("file", Some(FILE_VA + PAGE), mapped(FILE_VA + PAGE)),
                ("original", None, original),
                ("wired", Some(WIRED_VA), mapped(WIRED_VA)),
                ("limbo", None, limbo),
            ],
            objects: alloc::vec![
                ("shadow", shadow),
                ("vnode", vnode.clone()),
                ("wired", wired_object),
                ("limbo", limbo_object.clone()),
            ],
        };
        if let Some((object, page)) = no_slot {
            SHOWN.swap_object.store(object.handle() as u64, Ordering::Relaxed);
            scene.pages.push(("swapped", Some(SWAP_VA), mapped(SWAP_VA)));
            scene.pages.push(("no_slot", Some(SWAP_VA + PAGE), page));
            scene.objects.push(("swap", object.clone()));
        }
        scene
    }

    /// Every line of the report, without the `vmstate: ` prefix.
    fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let pmap = Arc::as_ptr(&self.space.pmap) as usize;
        out.push(format!(
            "process pid={} name={} pmap={pmap:#x} pml4={:#x}",
            self.me.pid,
            self.me.name.lock(),
            self.space.pmap.root()
        ));
        for (name, va, page) in &self.pages {
            out.push(page_line(name, *va, page));
        }
        for (name, object) in &self.objects {
            out.push(object_line(name, object));
        }
        for e in self.space.map.lock().entries() {
            out.push(format!(
                "entry start={:#x} end={:#x} prot={} max={} inherit={:?} wired={} object={} offset={} cow={} needs_copy={}",
                e.start,
                e.end,
                prot(e.prot),
                prot(e.max_prot),
                e.inherit,
                e.wired_count,
                e.object.as_ref().map_or("-".into(), |o| format!("{:#x}", o.handle())),
                e.offset,
                e.cow as u8,
                e.needs_copy as u8
            ));
        }
        for va in [FILE_VA, FILE_VA + PAGE, WIRED_VA, LIMBO_VA, SWAP_VA] {
            out.push(self.pte_line(va, pmap));
        }
        let mut v = crate::kern::sched::with_other_cpus_parked(|| vm::invariants::check(vm::global()));
        for (_, object) in &self.objects {
            v.extend(vm::invariants::check_object(object));
        }
        out.extend(v.iter().map(|v| format!("violation {v:x?}")));
        out.push(format!("violations count={}", v.len()));
        out
    }

    /// The walk of `va` and whether the page record agrees with a present
    /// leaf: valid (rule 2), and a PV entry of this pmap at `va`.
    fn pte_line(&self, va: u64, pmap: usize) -> String {
        let entries = self.space.pmap.walk_entries(va);
        let agrees = match self.space.pmap.extract(va).and_then(|(pa, _)| vm::global().page_of(pa)) {
            Some(p) => {
                let pv = crate::arch::pmap::MAPPINGS.mappings_of(p).contains(&(pmap, va));
                if p.valid() != 0 && pv { "yes" } else { "no" }
            }
            None => "-",
        };
        let entries: Vec<String> = entries.iter().map(|e| format!("{e:#x}")).collect();
        format!("pte va={va:#x} entries={} agrees={agrees}", entries.join(","))
    }
}

/// One page record, with its PV entries (`pmap@va`, most recent first).
fn page_line(name: &str, va: Option<u64>, p: &'static Page) -> String {
    let busy = if p.xbusied() {
        match p.busy_owner() {
            Some(at) => format!("exclusive@{}:{}", at.file(), at.line()),
            None => "exclusive".into(),
        }
    } else if p.sbusy_count() > 0 {
        format!("shared:{}", p.sbusy_count())
    } else {
        "unbusied".into()
    };
    let flags: Vec<&str> = p.flags().iter_names().map(|(n, _)| n).collect();
    let pv: Vec<String> = crate::arch::pmap::MAPPINGS.mappings_of(p).iter().map(|(m, va)| format!("{m:#x}@{va:#x}")).collect();
    format!(
        "page name={name} va={} pa={:#x} object={} pindex={} busy={busy} wire={} valid={:#04x} dirty={:#04x} queue={:?} flags={} mappings={} pv={}",
        va.map_or("-".into(), |v| format!("{v:#x}")),
        p.phys(),
        p.object().map_or("-".into(), |o| format!("{o:#x}")),
        p.pindex(),
        p.wire_count(),
        p.valid(),
        p.dirty(),
        p.queue(),
        or_dash(flags.join("|")),
        p.mapping_count(),
        or_dash(pv.join(","))
    )
}

/// One object: what it is, its pager (`kind@address`: the object's kind
/// names its pager, as FreeBSD's object types do), its shadow chain
/// (`object@backing offset`, nearest first) and its resident pages
/// (`pindex:physical address`).
fn object_line(name: &str, o: &Arc<VmObject>) -> String {
    let l = o.lock();
    let pager_kind = match o.kind() {
        ObjectKind::Vnode => "vnode",
        ObjectKind::Swap => "swap",
        ObjectKind::Anonymous | ObjectKind::Physical => "pager",
    };
    let pager = l.pager().map_or("-".into(), |p| format!("{pager_kind}@{:#x}", Arc::as_ptr(&p) as *const () as usize));
    let mut resident = Vec::new();
    l.for_each_in(0, u64::MAX, |p| resident.push(format!("{}:{:#x}", p.pindex(), p.phys())));
    let line = format!(
        "object name={name} addr={:#x} kind={:?} size={} refs={} shadows={} pip={} flags={:?} pager={pager} resident={}",
        o.handle(),
        o.kind(),
        l.size(),
        o.ref_count(),
        l.shadow_count(),
        o.paging_in_progress(),
        l.flags().bits(),
        or_dash(resident.join(","))
    );
    drop(l);
    // Each link's own offset: the difference of the offsets from `o`.
    let mut above = 0;
    let mut chain = Vec::new();
    for (b, offset) in vm::object::chain(o).skip(1) {
        chain.push(format!("{:#x}@{}", b.handle(), offset - above));
        above = offset;
    }
    format!("{line} chain={}", or_dash(chain.join(",")))
}

/// Prints the allocator's figures: free pages, the order-0 cache, the zero
/// pool, blocks per order, the queues, each segment's free pages, and swap.
/// Straight to the console, with no heap allocation: the heap takes its
/// pages from this allocator, so a string made between the count and the
/// stop could change what the debugger then reads.
fn print_phys() {
    use vm::page::{PageFlags, Queue};
    let pm = vm::global();
    let blocks = pm.free_blocks();
    let listed: u64 = blocks.iter().enumerate().map(|(o, b)| b << o).sum();
    let free = pm.free_count();
    let pooled = pm.zeroed_count();
    struct Blocks<'a>(&'a [u64]);
    impl core::fmt::Display for Blocks<'_> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            for (i, b) in self.0.iter().enumerate() {
                write!(f, "{}{b}", if i > 0 { "," } else { "" })?;
            }
            Ok(())
        }
    }
    kprintln!(
        "vmstate: phys free={free} cache={} zero_pool={pooled} blocks={} active={} inactive={} laundry={}",
        free - listed - pooled,
        Blocks(&blocks),
        pm.queue_count(Queue::Active),
        pm.queue_count(Queue::Inactive),
        pm.queue_count(Queue::Laundry)
    );
    for (i, s) in pm.segments().iter().enumerate() {
        let first = s.first as usize;
        let records = &pm.pages()[first..first + s.range.pages() as usize];
        kprintln!(
            "vmstate: segment index={i} start={:#x} end={:#x} pages={} free={}",
            s.range.start,
            s.range.end,
            s.range.pages(),
            records.iter().filter(|p| p.flags().contains(PageFlags::FREE)).count()
        );
    }
    match crate::mm::swap::swap() {
        Some(s) => kprintln!("vmstate: swap pages={} avail={}", s.pages(), s.avail()),
        None => kprintln!("vmstate: swap pages=0 avail=0"),
    }
}

/// `rwx` with dashes for what is missing.
fn prot(p: Prot) -> String {
    [(Prot::READ, 'r'), (Prot::WRITE, 'w'), (Prot::EXEC, 'x')]
        .iter()
        .map(|&(bit, c)| if p.contains(bit) { c } else { '-' })
        .collect()
}

fn or_dash(s: String) -> String {
    if s.is_empty() { "-".into() } else { s }
}
