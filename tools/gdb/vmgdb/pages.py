"""`vm page`: a page record decoded, with every mapping on its PV list."""

import gdb

from . import rust
from .kernel import parse_int, pfn_text

USAGE = "vm page pfn N | pa ADDRESS | va ADDRESS [PID] | RECORD (an expression: &Page, or a record's address)"


def busy_text(k, rec):
    """`unbusied`, `exclusive` (with where the holder took it, in debug
    builds) or `shared:N`, and whether anyone waits."""
    c = k.page_consts
    word = rec.busy
    if word & c["BUSY_EXCLUSIVE"]:
        text = "exclusive"
        owner = getattr(rec, "busy_owner", 0)
        if owner:
            text += f", taken at {location(owner)}"
    elif word // c["BUSY_SHARER"]:
        text = f"shared:{word // c['BUSY_SHARER']}"
    else:
        text = "unbusied"
    if word & c["BUSY_WAITERS"]:
        text += ", with waiters"
    return text


def location(address):
    """`file:line:col` of the core::panic::Location at `address` (its layout
    from vm::page::DEBUG_LOCATION)."""
    t = rust.symbol("vm::page::DEBUG_LOCATION").type
    try:
        loc = gdb.Value(address).cast(t.pointer()).dereference()
        return f"{rust.string(loc['filename'])}:{int(loc['line'])}:{int(loc['col'])}"
    except (gdb.error, gdb.GdbError):
        return f"(location {address:#x} unreadable)"


# The bit of a page's queue field set while the page waits in a CPU's batch
# for that queue (vm/src/queue/batch.rs, PENDING).
QUEUE_PENDING = 0x80


def queue_name(rec):
    name = rust.enumerator("vm::page::Queue", rec.queue & ~QUEUE_PENDING)
    return f"{name} (waiting in a CPU's batch)" if rec.queue & QUEUE_PENDING else name


def flags_text(k, rec):
    return "|".join(rust.flag_names(rec.flags, k.page_consts, "PageFlags")) or "-"


def resolve(k, argv):
    """The page-array index the arguments name, and how it was reached."""
    if not argv:
        raise gdb.GdbError(f"usage: {USAGE}")
    how = argv[0]
    if how in ("pfn", "pa", "va"):
        if len(argv) < 2:
            raise gdb.GdbError(f"usage: {USAGE}")
        n = parse_int(argv[1])
        if how == "va":
            pa, reached = translate(k, n, parse_int(argv[2]) if len(argv) > 2 else None)
        else:
            pa = n << k.page_shift if how == "pfn" else n
            reached = None
        index = k.index_of_pa(pa)
        if index is None:
            segs = ", ".join(f"{s:#x}-{e:#x}" for s, e, _ in k.segments)
            raise gdb.GdbError(f"{pfn_text(k, pa)} is in no segment of the page array ({segs})")
        return index, reached
    v = gdb.parse_and_eval(" ".join(argv))
    t = v.type.strip_typedefs()
    if t.code in (gdb.TYPE_CODE_PTR, gdb.TYPE_CODE_REF) and t.target().strip_typedefs().name == "vm::page::Page":
        address = int(v)
    elif t.name == "vm::page::Page" and v.address is not None:
        address = int(v.address)
    else:
        address = rust.to_int(v)
    index = k.index_of_record(address)
    if index is None:
        raise gdb.GdbError(f"{address:#x} is not a page record; usage: {USAGE}")
    return index, None


def translate(k, va, pid):
    """The physical address behind virtual address `va`: through the direct
    map, the kernel's tables, or the tables of process `pid` (by default the
    address space being run). Returns (pa, how it was reached)."""
    if va >= k.pte_consts["USER_END"]:
        pa = va - k.phys_offset
        if va >= k.phys_offset and k.index_of_pa(pa) is not None:
            return pa, f"va {va:#x}, in the direct map"
        pa, walk = k.translate(k.kernel_pml4(), va)
        where = "the kernel's page tables"
    else:
        label, space = k.space_of(pid)
        pa, walk = k.translate(k.pmap_of(space)[1], va)
        where = label
    if pa is None:
        level, i, e = walk[-1]
        raise gdb.GdbError(f"{va:#x} is not mapped in {where}: the walk stops at {level}[{i}] = {e:#x}")
    return pa, f"va {va:#x} in {where}"


def page_lines(k, index, reached=None):
    rec = k.page(index)
    c = k.page_consts
    out = [f"page {pfn_text(k, rec.phys)}: record {rec.address:#x}, index {index}, segment {rec.segment}"]
    if reached:
        out.append(f"  reached   {reached}")
    if rec.object:
        out.append(f"  object    {rec.object:#x} ({k.object_kind(rec.object)}), pindex {rec.pindex}")
    else:
        out.append("  object    none")
    out.append(f"  busy      {busy_text(k, rec)}")
    out.append(f"  wired     {rec.wire_count}")
    out.append(f"  valid     {rec.valid:#04x}")
    out.append(f"  dirty     {rec.dirty:#04x}")
    out.append(f"  queue     {queue_name(rec)}")
    out.append(f"  flags     {flags_text(k, rec)}")
    if rec.order != c["NOT_FREE_HEAD"]:
        out.append(f"  order     {rec.order} (heads a free block of {1 << rec.order} pages)")
    pv = k.pv_entries(index)
    note = "" if len(pv) == rec.mappings else f" (but {len(pv)} on the PV list)"
    out.append(f"  mappings  {rec.mappings}{note}")
    for pmap, va in pv:
        out.append(f"    {k.owner_of_pmap(pmap)}  va {va:#x}  pmap {pmap:#x}")
    return out
