"""The `vm` commands, registered with gdb."""

import gdb

from . import check, failpoint, maps, objects, pages, phys, steps
from .kernel import Kernel, attached


class Vm(gdb.Command):
    """Show the kernel's VM state (read from the stopped kernel's memory).

vm page pfn N | pa ADDRESS | va ADDRESS [PID] | RECORD
                        a page record: object and index, busy state and owner,
                        wirings, valid and dirty bits, queue, flags, mappings
vm object ADDRESS       a VM object: kind, size, references, shadow chain,
                        pager, resident pages (its radix trie walked)
vm map [PID]            the map entries of an address space
vm pte ADDRESS [PID]    the four-level walk of an address, and whether the
                        page record agrees with the leaf
vm phys                 free pages per order and per segment, the order-0
                        cache, the zero pool, the paging queues, swap
vm check                the invariant checker's rules, over every page
vm failpoint [NAME ACTION]
                        list the fail points, or set one
vm steps [LIMIT]        single-step to the current function's return: the
                        instructions, the calls, instructions by function

Arguments are gdb expressions: 0x40000000, $cr2, a variable, or
kernel::devtools::vmstate::SHOWN.pid. Without a PID, the address space being run."""

    def __init__(self):
        super().__init__("vm", gdb.COMMAND_DATA, gdb.COMPLETE_NONE, True)


class Sub(gdb.Command):
    """A `vm` subcommand: builds a fresh view of the kernel, prints lines."""

    def __init__(self, name, lines, doc, needs_allocator=True):
        self.__doc__ = doc
        super().__init__(f"vm {name}", gdb.COMMAND_DATA, gdb.COMPLETE_EXPRESSION)
        self.lines = lines
        self.needs_allocator = needs_allocator

    def invoke(self, arg, from_tty):
        argv = gdb.string_to_argv(arg)
        attached()
        try:
            out = self.lines(Kernel() if self.needs_allocator else None, argv)
        except gdb.MemoryError as e:
            raise gdb.GdbError(f"cannot read kernel memory ({e}): is the kernel loaded yet? (hbreak kernel::kernel_main)")
        gdb.write("\n".join(out) + "\n")


def register():
    Vm()
    Sub("page", lambda k, argv: pages.page_lines(k, *pages.resolve(k, argv)),
        f"Show a page record and its mappings.\nUsage: {pages.USAGE}")
    Sub("object", objects.object_lines, f"Show a VM object and its resident pages.\nUsage: {objects.USAGE}")
    Sub("map", maps.map_lines, f"Show an address space's map entries.\nUsage: {maps.MAP_USAGE}")
    Sub("pte", maps.pte_lines, f"Show the page-table walk of an address.\nUsage: {maps.PTE_USAGE}")
    Sub("phys", phys.phys_lines, "Show free pages per order and segment, the per-CPU caches, the zero pool, the queues and swap.\nUsage: vm phys")
    Sub("check", check.check_lines, "Evaluate the invariant checker's rules over every page.\nUsage: vm check")
    # Fail points are statics: they can be set before the allocator exists
    # (at kernel_main, for a failure during boot).
    Sub("failpoint", failpoint.failpoint_lines, f"List or set fail points.\nUsage: {failpoint.USAGE}", False)
    Sub("steps", steps.steps_lines, f"Single-step to the current function's return, counting what runs.\nUsage: {steps.USAGE}", False)
