"""`vm steps`: single-steps the stopped kernel until the current function
returns, and says what ran: instructions in all, calls by their target, and
instructions by function. Under emulation a page fault's time follows what
it executes more than anything a profiler samples (kernel/src/devtools/profile.rs);
this is how a fault's instruction count is read, e.g. with a breakpoint in
`kernel::mm::vmspace::page_fault`."""

import collections
import re

import gdb

USAGE = "vm steps [LIMIT]   (from a breakpoint: to the current function's return, at most LIMIT instructions)"

# The crate hashes gdb prints in symbol names: vm[6295bd281ce362d9]::map.
HASH = re.compile(r"\[[0-9a-f]{6,16}\]")


def symbol_at(pc):
    """The ELF symbol holding `pc` (the function, not an inlined callee)."""
    text = gdb.execute(f"info symbol {pc:#x}", to_string=True).strip()
    if text.startswith("No symbol"):
        return f"{pc:#x}"
    name = text.split(" in section ")[0]
    name = name.rsplit(" + ", 1)[0]
    return HASH.sub("", name)


def step_to_return(arch, limit, per_fn, calls):
    """Steps until a `ret` at the starting depth has run, or `limit`
    instructions; counts into `per_fn` and `calls`. Returns (instructions,
    deepest call depth, whether it returned)."""
    depth = deepest = n = stalls = 0
    while n < limit:
        pc = int(gdb.parse_and_eval("$pc"))
        asm = arch.disassemble(pc)[0]["asm"].split()
        op = asm[0] if asm else ""
        gdb.execute("stepi", to_string=True)
        # QEMU may report a step done before the instruction ran (with an
        # interrupt pending, say): the pc has not moved. Step it again; only
        # a repeated string instruction (one iteration a step) stays put.
        if int(gdb.parse_and_eval("$pc")) == pc and not op.startswith("rep"):
            stalls += 1
            if stalls > 1000:
                raise gdb.GdbError(f"the step at {pc:#x} does not move")
            continue
        stalls = 0
        per_fn[symbol_at(pc)] += 1
        n += 1
        if op.startswith("call"):
            depth += 1
            deepest = max(deepest, depth)
            calls[symbol_at(int(gdb.parse_and_eval("$pc")))] += 1
        elif op.startswith("ret"):
            if depth == 0:
                return n, deepest, True
            depth -= 1
    return n, deepest, False


def steps_lines(_kernel, argv):
    if len(argv) > 1:
        raise gdb.GdbError(f"usage: {USAGE}")
    try:
        limit = int(gdb.parse_and_eval(argv[0])) if argv else 200000
    except gdb.error as e:
        raise gdb.GdbError(f"{argv[0]}: not a number ({e})")
    if limit <= 0:
        raise gdb.GdbError(f"usage: {USAGE}")
    arch = gdb.selected_frame().architecture()
    start = symbol_at(int(gdb.parse_and_eval("$pc")))
    per_fn = collections.Counter()
    calls = collections.Counter()
    # Each stepi would print where it stopped, whatever to_string says.
    was = gdb.parameter("suppress-cli-notifications")
    gdb.execute("set suppress-cli-notifications on", to_string=True)
    # Only the selected CPU runs while it steps: another one hitting a
    # breakpoint, or taking the thread over, would end the walk elsewhere.
    locking = gdb.parameter("scheduler-locking")
    gdb.execute("set scheduler-locking on", to_string=True)
    try:
        n, deepest, returned = step_to_return(arch, limit, per_fn, calls)
    finally:
        gdb.execute(f"set scheduler-locking {locking}", to_string=True)
        gdb.execute(f"set suppress-cli-notifications {'on' if was else 'off'}", to_string=True)
    end = int(gdb.parse_and_eval("$pc"))
    where = f"{end:#x} <{symbol_at(end)}>"
    how = f"returned to {where}" if returned else f"stopped after {limit} at {where}"
    out = [f"steps from {start}: {n} instructions, {sum(calls.values())} calls, {deepest} deep; {how}", "  calls:"]
    out += [f"    {c:5}  {name}" for name, c in sorted(calls.items(), key=lambda kv: (-kv[1], kv[0]))]
    out.append("  instructions by function:")
    out += [f"    {c:5}  {name}" for name, c in sorted(per_fn.items(), key=lambda kv: (-kv[1], kv[0]))]
    return out
