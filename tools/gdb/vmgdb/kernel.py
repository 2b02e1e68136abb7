"""The stopped kernel as the commands see it.

Where each thing is found (statics the kernel keeps for itself):

- the page allocator: `vm::GLOBAL` (a spin::Once<PhysMem>): the page array,
  its segments, the free lists, the per-CPU order-0 caches and the paging queues;
- the direct map: `kernel::arch::direct_map::PHYS_OFFSET`, the virtual address of
  physical address 0 (the bootloader chooses it; BIOS and UEFI boots may
  differ): every physical read goes through it;
- PV lists: `kernel::arch::pmap::GLOBALS`, one list head per page-array index
  (`heads.pages`: pages of them, 512 to a page);
- processes: `kernel::proc::TABLE` (its `processes`, by pid); the address space being run
  on the selected CPU: the `space` word of its per-CPU block
  (`kernel::arch::percpu::PerCpu`), found through its GS base (or, when the
  CPU stopped in user mode, the kernel GS base that `swapgs` will bring in);
- swap: `kernel::mm::swap::SWAP` (an Arc of `pager::swap::SwapSpace`); fail points: `vm::failpoint::ALL`;
- bits and sentinels: the modules' `DEBUG_CONSTANTS` (vm::DebugConstant).

Build a new `Kernel` for each command: the kernel moves on between stops.
"""

import struct

import gdb

from . import rust

LEVELS = ("PML4", "PDPT", "PD", "PT")


class PageRecord:
    """One decoded page record (vm::page::Page): an attribute per field,
    plus `index` (in the page array) and `address` (of the record)."""

    def __init__(self, fields, values, index, address):
        for name, value in zip(fields, values):
            setattr(self, name, value)
        self.index = index
        self.address = address
        # The wire word holds the count and, in its top bit, "in an
        # object" (vm::page::WIRE_OBJREF).
        self.wire_count = self.wire_word & 0x7FFF_FFFF


class PageLayout:
    """vm::page::Page as the debug information lays it out: a struct format
    for bulk decoding, built from each field's offset and size."""

    CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}

    def __init__(self):
        t = rust.lookup_type("vm::page::Page")
        self.size = t.sizeof
        fields = sorted(((f.bitpos // 8, f.name, f.type.sizeof) for f in t.fields()), key=lambda x: x[0])
        fmt, pos, self.names = "<", 0, []
        for offset, name, size in fields:
            if size == 0:
                continue
            if size not in self.CODES:
                raise gdb.GdbError(f"vm::page::Page.{name} is {size} bytes: not a number")
            fmt += "x" * (offset - pos) + self.CODES[size]
            self.names.append(name)
            pos = offset + size
        fmt += "x" * (self.size - pos)
        self.struct = struct.Struct(fmt)


def attached():
    """Fails unless gdb is attached to a kernel (not just reading the ELF)."""
    if not gdb.selected_inferior().pid:
        raise gdb.GdbError("no kernel to look at: attach first (target remote ...)")


class Kernel:
    def __init__(self):
        attached()
        try:
            self.pm = rust.once(rust.symbol("vm::GLOBAL"), "vm::phys::PhysMem")
        except gdb.MemoryError:
            raise gdb.GdbError("the kernel is not in memory yet: stop it once it runs (hbreak kernel::kernel_main)")
        if self.pm is None:
            raise gdb.GdbError("the page allocator is not set up yet: stop the kernel after memory::init_page_allocator")
        self.phys_offset = rust.scalar(rust.symbol("kernel::arch::direct_map::PHYS_OFFSET"))
        direct = rust.option(self.pm["direct_map"])
        if direct is None or int(direct) != self.phys_offset:
            raise gdb.GdbError("the page allocator's direct map and kernel::arch::direct_map::PHYS_OFFSET disagree")
        self.layout = PageLayout()
        pages = self.pm["pages"]
        self.pages_base = int(pages["data_ptr"])
        self.npages = int(pages["length"])
        self.segments = []
        for i in range(int(self.pm["nsegments"])):
            s = self.pm["segments"][i]
            self.segments.append((int(s["range"]["start"]), int(s["range"]["end"]), int(s["first"])))
        self.page_consts = rust.constants("vm::page")
        self.pte_consts = rust.constants("kernel::arch::pmap")
        self.page_shift = rust.constants("vm")["PAGE_SHIFT"]
        self.page_bytes = 1 << self.page_shift
        self._processes = None
        self._vtables = {}

    # ---- physical memory, through the direct map --------------------------

    def read_phys(self, pa, size):
        return rust.read(self.phys_offset + pa, size)

    def u64_phys(self, pa):
        return int.from_bytes(self.read_phys(pa, 8), "little")

    # ---- the page array ------------------------------------------------------

    def index_of_pa(self, pa):
        """The page-array index of the frame holding `pa`, or None."""
        for start, end, first in self.segments:
            if start <= pa < end:
                return first + ((pa - start) >> self.page_shift)
        return None

    def index_of_record(self, address):
        """The index of the record at `address`, or None if it is not one."""
        off = address - self.pages_base
        if 0 <= off < self.npages * self.layout.size and off % self.layout.size == 0:
            return off // self.layout.size
        return None

    def record_address(self, index):
        return self.pages_base + index * self.layout.size

    def page(self, index):
        """The record at `index`, decoded."""
        address = self.record_address(index)
        values = self.layout.struct.unpack(rust.read(address, self.layout.size))
        return PageRecord(self.layout.names, values, index, address)

    def all_pages(self):
        """Every record, decoded from one read of the whole array."""
        data = rust.read(self.pages_base, self.npages * self.layout.size)
        names, size = self.layout.names, self.layout.size
        return [
            PageRecord(names, values, i, self.pages_base + i * size)
            for i, values in enumerate(self.layout.struct.iter_unpack(data))
        ]

    # ---- processes and address spaces --------------------------------------

    def processes(self):
        """[(pid, name, AddressSpace value or None)], in pid order."""
        if self._processes is None:
            table, _ = rust.mutex(rust.symbol("kernel::proc::TABLE"))
            out = []
            for _, proc_arc in rust.btree_map(table["processes"]):
                p = rust.arc(proc_arc)
                name, _ = rust.mutex(p["name"])
                space, _ = rust.mutex(p["space"])
                space = rust.option(space)
                out.append((int(p["pid"]), rust.string(name), rust.arc(space) if space is not None else None))
            self._processes = out
        return self._processes

    @staticmethod
    def current_space():
        """The address space the selected CPU runs (0: none), from its
        per-CPU block."""
        block = 0
        for reg in ("$gs_base", "$k_gs_base"):
            try:
                v = int(gdb.parse_and_eval(reg)) & ((1 << 64) - 1)
            except gdb.error:
                continue
            if v >> 63:
                block = v
                break
        if block == 0:
            raise gdb.GdbError("the selected CPU's per-CPU block is not known (no kernel GS base): give a pid")
        return rust.scalar(rust.at(block, "kernel::arch::percpu::PerCpu")["space"])

    def space_of(self, pid):
        """(label, AddressSpace value) of process `pid`, or of the address
        space being run when `pid` is None."""
        if pid is None:
            current = self.current_space()
            if current == 0:
                names = ", ".join(f"{p} ({n})" for p, n, s in self.processes() if s is not None) or "none"
                raise gdb.GdbError(f"no address space is being run here: give a pid (processes: {names})")
            space = rust.at(current, "kernel::mm::vmspace::AddressSpace")
            for p, n, s in self.processes():
                if s is not None and int(s.address) == current:
                    return f"pid {p} ({n})", space
            return f"address space {current:#x}", space
        for p, n, s in self.processes():
            if p == pid:
                if s is None:
                    raise gdb.GdbError(f"pid {pid} ({n}) has no address space any more")
                return f"pid {p} ({n})", s
        raise gdb.GdbError(f"no process with pid {pid}")

    @staticmethod
    def pmap_of(space):
        """(address of the X86Pmap, physical address of its PML4)."""
        pmap = rust.arc(space["pmap"])
        return int(pmap.address), int(pmap["pml4"])

    def owner_of_pmap(self, pmap):
        """Who runs in the pmap at `pmap`: `pid N (name)` if a process does."""
        for p, n, s in self.processes():
            if s is not None and self.pmap_of(s)[0] == pmap:
                return f"pid {p} ({n})"
        return "no process"

    # ---- PV lists and page tables -------------------------------------------

    def pv_entries(self, index):
        """[(pmap address, va)] of the page at `index`, most recent first."""
        gl = rust.once(rust.symbol("kernel::arch::pmap::GLOBALS"), "kernel::arch::pmap::Globals")
        if gl is None:
            return []
        # Heads: pages of one word per page-array index (`Heads::pages`,
        # their direct-map addresses).
        pages = gl["heads"]["pages"]
        per_page = self.page_bytes // 8
        if index // per_page >= rust.scalar(pages["len"]):
            return []
        data = rust.pointer(pages["buf"]["inner"]["ptr"]).cast(pages.type.template_argument(0).pointer())
        page = int((data + index // per_page).dereference())
        out = []
        pv = int.from_bytes(rust.read(page + 8 * (index % per_page), 8), "little")
        while pv and len(out) <= 4096:
            entry = rust.at(pv, "kernel::arch::pmap::Pv")
            out.append((int(entry["pmap"]), self.leaf_va(int(entry["leaf"]))))
            pv = int(entry["next"])
        return out

    def leaf_va(self, leaf):
        """The address a leaf entry maps, from the physical address of the
        entry (a PV entry's `leaf`): its table's base (the table page's
        record keeps it in `pindex`) plus its index."""
        table = self.index_of_pa(leaf & ~(self.page_bytes - 1))
        if table is None:
            return 0
        return self.page(table).pindex + (leaf & (self.page_bytes - 1)) // 8 * self.page_bytes

    def kernel_pml4(self):
        gl = rust.once(rust.symbol("kernel::arch::pmap::GLOBALS"), "kernel::arch::pmap::Globals")
        if gl is None:
            raise gdb.GdbError("the pmap is not set up yet")
        return int(gl["kernel_pml4"])

    def walk(self, pml4, va):
        """The entries the MMU reads for `va` from the table at `pml4`:
        [(level name, index, entry)], stopping at a non-present entry or a
        large-page leaf."""
        c = self.pte_consts
        out, table = [], pml4
        for depth, name in enumerate(LEVELS):
            shift = self.page_shift + 9 * (3 - depth)
            i = (va >> shift) & 0x1FF
            e = self.u64_phys(table + 8 * i)
            out.append((name, i, e))
            if not e & c["P"] or (depth in (1, 2) and e & c["PS"]):
                break
            table = e & c["ADDR"]
        return out

    def translate(self, pml4, va):
        """(physical address, walk) for `va`, or (None, walk)."""
        walk = self.walk(pml4, va)
        name, _, e = walk[-1]
        c = self.pte_consts
        if not e & c["P"]:
            return None, walk
        span = 1 << (self.page_shift + 9 * (3 - LEVELS.index(name)))
        return (e & c["ADDR"] & ~(span - 1)) | (va & (span - 1)), walk

    # ---- objects and pagers --------------------------------------------------

    def vm_object(self, address):
        """The VmObject at `address`, checked: it must be readable and use
        this kernel's page allocator (every object's env.pm does)."""
        o = rust.at(address, "vm::object::VmObject")
        try:
            pm = int(o["env"]["pm"])
            kind = rust.scalar(o["kind"])
        except gdb.MemoryError:
            raise gdb.GdbError(f"{address:#x}: cannot read a VmObject there")
        if pm != int(self.pm.address) or kind not in rust.enumerators("vm::object::ObjectKind").values():
            raise gdb.GdbError(f"{address:#x}: not a VM object (no object of this kernel has that layout there)")
        return o

    def object_kind(self, address):
        """`Anonymous`, `Vnode`, ... of the object at `address`, or why not."""
        try:
            o = self.vm_object(address)
        except gdb.GdbError:
            return "not an object"
        return rust.enumerator("vm::object::ObjectKind", rust.scalar(o["kind"]))

    def dyn_type(self, vtable, trait):
        """The type behind a `dyn trait` whose vtable is at `vtable`: the
        debug information names each vtable `<T as trait>::{vtable}`."""
        if trait not in self._vtables:
            found = {}
            short = trait.rsplit("::", 1)[-1]
            listing = gdb.execute(f"info variables -q {short}>::", to_string=True)
            for line in listing.splitlines():
                line = line.strip()
                if not line.startswith("static <") or f" as {trait}>::" not in line:
                    continue
                name = line[len("static "):].rstrip(";").replace("{vtable_type}", "{vtable}")
                sym = gdb.lookup_static_symbol(name) or gdb.lookup_global_symbol(name)
                if sym is not None and sym.value().address is not None:
                    found[int(sym.value().address)] = name[1:name.index(" as ")]
            self._vtables[trait] = found
        return self._vtables[trait].get(vtable)

    def pager(self, state):
        """An object state's pager: (address of the pager, its type), or None."""
        p = rust.option(state["pager"])
        if p is None:
            return None
        inner, vtable = rust.arc_dyn(p)
        concrete = self.dyn_type(vtable, "vm::object::Pager")
        if concrete is None:
            return inner, f"unknown pager (vtable {vtable:#x})"
        return rust.arc_dyn_data(inner, concrete), concrete


def parse_int(text):
    """A command argument: any gdb expression (a number, a register, a
    variable, `kernel::devtools::vmstate::SHOWN.pid`) as an integer."""
    try:
        v = gdb.parse_and_eval(text)
    except gdb.error as e:
        raise gdb.GdbError(f"{text}: {e}")
    return rust.to_int(v)


def pfn_text(k, pa):
    return f"pfn {pa >> k.page_shift:#x} (pa {pa:#x})"
