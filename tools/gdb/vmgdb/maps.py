"""`vm map`: an address space's map entries; `vm pte`: the four-level walk of
an address, and whether the page record agrees with the leaf."""

import gdb

from . import rust
from .kernel import LEVELS, parse_int
from .pages import queue_name

MAP_USAGE = "vm map [PID]   (default: the address space being run)"
PTE_USAGE = "vm pte ADDRESS [PID]   (default: the address space being run; kernel addresses: the kernel's tables)"


def prot_text(bits):
    """`rwx` with dashes for what is missing."""
    c = rust.constants("vm::pmap")
    return "".join(ch if bits & c[f"Prot::{name}"] else "-" for name, ch in (("READ", "r"), ("WRITE", "w"), ("EXEC", "x")))


def map_lines(k, argv):
    if len(argv) > 1:
        raise gdb.GdbError(f"usage: {MAP_USAGE}")
    label, space = k.space_of(parse_int(argv[0]) if argv else None)
    pmap, pml4 = k.pmap_of(space)
    m, locked = rust.mutex(space["map"])
    entries = rust.btree_map(m["entries"])
    out = [
        f"map of {label}: pmap {pmap:#x}, PML4 at {pml4:#x}, {len(entries)} entries in "
        f"[{int(m['min']):#x}, {int(m['max']):#x}), timestamp {int(m['timestamp'])}, lock {'held' if locked else 'free'}",
        f"  {'start':<18} {'end':<18} prot max inherit wired {'object':<18} offset cow needs_copy",
    ]
    for _, e in entries:
        obj = rust.option(e["object"])
        obj = f"{int(rust.arc(obj).address):#x}" if obj is not None else "-"
        out.append(
            f"  {int(e['start']):<#18x} {int(e['end']):<#18x} {prot_text(rust.scalar(e['prot'])):<4} "
            f"{prot_text(rust.scalar(e['max_prot'])):<3} {rust.enum_name(e['inherit']):<7} {int(e['wired_count']):<5} "
            f"{obj:<18} {int(e['offset']):<6} {int(bool(e['cow'])):<3} {int(bool(e['needs_copy']))}"
        )
    return out


def entry_flags(k, e, depth):
    """The names of an entry's bits: the hardware's and the kernel's own."""
    c = k.pte_consts
    names = [n for n in ("P", "RW", "US", "A", "D") if e & c[n]]
    if depth in (1, 2) and e & c["PS"]:
        names.append("PS")
    if e & c["NX"]:
        names.append("NX")
    names += [n[3:] for n in ("SW_WIRED", "SW_MANAGED", "SW_ORPHAN") if e & c[n]]
    return " ".join(names)


def pte_lines(k, argv):
    if not argv or len(argv) > 2:
        raise gdb.GdbError(f"usage: {PTE_USAGE}")
    va = parse_int(argv[0])
    c = k.pte_consts
    if va >= c["USER_END"]:
        label, pmap, pml4 = "the kernel's tables", None, k.kernel_pml4()
    else:
        label, space = k.space_of(parse_int(argv[1]) if len(argv) > 1 else None)
        pmap, pml4 = k.pmap_of(space)
    walk = k.walk(pml4, va)
    out = [f"pte {va:#x} in {label}, PML4 at {pml4:#x}:"]
    for depth, (level, i, e) in enumerate(walk):
        leaf = depth == 3 or (depth in (1, 2) and e & c["PS"])
        what = ("frame" if leaf else "table") if e & c["P"] else "not present"
        target = f" {e & c['ADDR']:#x}" if e & c["P"] or e & c["SW_ORPHAN"] else ""
        if not e & c["P"] and e & c["SW_ORPHAN"]:
            what = "orphaned wiring of frame"
        out.append(f"  {level + '[' + str(i) + ']':<10} {e:#018x}  {entry_flags(k, e, depth):<28} {what}{target}")
    level, _, e = walk[-1]
    if not e & c["P"]:
        out.append(f"  agrees    - (not mapped: the walk stops at the {level} entry)")
        return out
    span = 1 << (k.page_shift + 9 * (3 - LEVELS.index(level)))
    pa = (e & c["ADDR"] & ~(span - 1)) | (va & (span - 1))
    index = k.index_of_pa(pa)
    if index is None:
        out.append(f"  agrees    - (frame {pa & ~(k.page_bytes - 1):#x} is not in the page array)")
        return out
    rec = k.page(index)
    if pmap is None:
        out.append(f"  page      pfn {rec.phys >> k.page_shift:#x}")
        out.append("  agrees    - (a kernel mapping: the kernel's tables have no PV entries)")
        return out
    out.append(
        f"  page      pfn {rec.phys >> k.page_shift:#x}: valid {rec.valid:#04x}, dirty {rec.dirty:#04x}, "
        f"wired {rec.wire_count}, {rec.mappings} mappings, {queue_name(rec)}"
    )
    out.append("  agrees    " + agreement(k, rec, e, pmap, va & ~(k.page_bytes - 1)))
    return out


def agreement(k, rec, e, pmap, va):
    """Whether the record agrees with the leaf `e` mapping it at `va` in
    `pmap`: `yes`, or `no: ` and what does not."""
    c, pc = k.pte_consts, k.page_consts
    unmanaged = rec.flags & pc["PageFlags::UNMANAGED"]
    wrong = []
    if bool(e & c["SW_MANAGED"]) == bool(unmanaged):
        wrong.append("the entry's managed bit and the page's UNMANAGED flag disagree")
    if not unmanaged:
        if rec.valid == 0:
            wrong.append("an invalid page is mapped (rule 2)")
        if (pmap, va) not in k.pv_entries(rec.index):
            wrong.append(f"no PV entry for pmap {pmap:#x} at {va:#x}")
        if rec.mappings == 0:
            wrong.append("the page counts no mapping")
        if rec.flags & pc["PageFlags::FREE"]:
            wrong.append("the page is free")
    if e & c["SW_WIRED"] and rec.wire_count == 0:
        wrong.append("a wired mapping of a page that is not wired")
    return "no: " + "; ".join(wrong) if wrong else "yes"
