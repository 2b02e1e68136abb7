"""`vm object`: a VM object, its shadow chain, pager, and the resident pages
found by walking its radix trie."""

import re
import struct

import gdb

from . import rust
from .kernel import parse_int
from .pages import busy_text, queue_name

USAGE = "vm object ADDRESS (a VmObject: the object a page names, or a map entry's)"


class Trie:
    """The node layout of vm::radix::Radix<_, W>, from the debug information."""

    def __init__(self, radix_type):
        m = re.search(r",\s*(\d+)>$", str(radix_type))
        if not m:
            raise gdb.GdbError(f"cannot tell the node width of {radix_type}")
        node = rust.lookup_type(f"vm::radix::Node<{m.group(1)}>")
        self.size = node.sizeof
        self.child = rust.field_offset(node, "child")
        child = [f.type for f in node.fields() if f.name == "child"][0]
        lo, hi = child.range()
        self.width = hi - lo + 1
        self.slot = child.target().sizeof
        self.words = struct.Struct(f"<{self.width}{ {4: 'I', 8: 'Q'}[self.slot] }")
        self.leaf = rust.constants("vm::radix")["LEAF"]

    def leaves(self, root):
        """(leaf values in key order, interior nodes) of the trie at `root`."""
        out, nodes = [], 0
        stack = [root]
        while stack:
            slot = stack.pop()
            if slot == 0:
                continue
            if slot & self.leaf:
                out.append(slot & ~self.leaf)
                continue
            nodes += 1
            if nodes > 1 << 20:
                raise gdb.GdbError("the trie does not end: a loop?")
            data = rust.read(slot + self.child, self.width * self.slot)
            # Children in reverse so that the lowest key comes off the stack first.
            stack.extend(reversed(self.words.unpack(data)))
        return out, nodes


def state_of(o):
    st, locked = rust.mutex(o["state"])
    return st, locked


def resident(k, st):
    """[(pindex, page-array index or None, record address)] of an object's
    trie, and the number of interior nodes."""
    radix = st["pages"]
    leaves, nodes = Trie(radix.type).leaves(rust.scalar(radix["root"]))
    out = []
    for address in leaves:
        index = k.index_of_record(address)
        pindex = k.page(index).pindex if index is not None else None
        out.append((pindex, index, address))
    return out, nodes


def summary(k, address):
    """One line about the object at `address`."""
    o = k.vm_object(address)
    st, _ = state_of(o)
    kind = rust.enumerator("vm::object::ObjectKind", rust.scalar(o["kind"]))
    return (f"{kind}, size {int(st['size'])}, refs {rust.scalar(o['ref_count'])}, "
            f"{int(st['pages']['len'])} resident")


def chain(k, st):
    """[(object address, backing offset)] down the shadow chain from `st`."""
    out = []
    while True:
        b = rust.option(st["backing"])
        if b is None or len(out) > 4096:
            return out
        backing = rust.arc(b)
        out.append((int(backing.address), int(st["backing_offset"])))
        st, _ = state_of(k.vm_object(int(backing.address)))


def object_lines(k, argv):
    if len(argv) != 1:
        raise gdb.GdbError(f"usage: {USAGE}")
    address = parse_int(argv[0])
    o = k.vm_object(address)
    st, locked = state_of(o)
    kind = rust.enumerator("vm::object::ObjectKind", rust.scalar(o["kind"]))
    flags = rust.flag_names(rust.scalar(st["flags"]), rust.constants("vm::object"), "ObjectFlags")
    out = [f"object {address:#x}: {kind}"]
    out.append(f"  size      {int(st['size'])} pages")
    out.append(f"  refs      {rust.scalar(o['ref_count'])}")
    out.append(f"  shadows   {int(st['shadow_count'])}")
    out.append(f"  pip       {rust.scalar(o['paging_in_progress'])}")
    out.append(f"  flags     {'|'.join(flags) or '-'}")
    out.append(f"  lock      {'held' if locked else 'free'}")
    pager = k.pager(st)
    out.append(f"  pager     {pager[0]:#x} {pager[1]}" if pager else "  pager     none")
    links = chain(k, st)
    if not links:
        out.append("  backing   none")
    for depth, (b, offset) in enumerate(links):
        out.append(f"  backing   {b:#x} at offset {offset} (depth {depth + 1}): {summary(k, b)}")
    pages, nodes = resident(k, st)
    out.append(f"  resident  {len(pages)} pages, trie of {nodes} nodes")
    last = -1
    for pindex, index, record in pages:
        if index is None:
            out.append(f"    ! {record:#x} is not a page record")
            continue
        rec = k.page(index)
        notes = []
        if rec.object != address:
            notes.append(f"names object {rec.object:#x}")
        if pindex <= last:
            notes.append("out of order")
        last = pindex
        note = f"  ! {', '.join(notes)}" if notes else ""
        out.append(
            f"    pindex {pindex}  pfn {rec.phys >> k.page_shift:#x}  valid {rec.valid:#04x}  "
            f"dirty {rec.dirty:#04x}  {queue_name(rec)}  {busy_text(k, rec)}  wired {rec.wire_count}  "
            f"mappings {rec.mappings}{note}"
        )
    return out
