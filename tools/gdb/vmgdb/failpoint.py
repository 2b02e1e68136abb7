"""`vm failpoint`: the kernel's fail points (vm/src/failpoint.rs), listed or
set in a stopped kernel, as `FailPoint::set` sets them."""

import re

import gdb

from . import rust

USAGE = "vm failpoint [NAME ACTION]   (ACTION: off, always, nth:N, P% or P%@SEED; no arguments: list them)"


def failpoints():
    """[(name, FailPoint value)] of vm::failpoint::ALL."""
    table = rust.symbol("vm::failpoint::ALL")
    lo, hi = table.type.range()
    out = []
    for i in range(lo, hi + 1):
        fp = table[i].dereference()
        out.append((rust.string(fp["name"]), fp))
    return out


def describe(fp):
    c = rust.constants("vm::failpoint")
    mode, param = rust.scalar(fp["mode"]), rust.scalar(fp["param"])
    if mode == c["MODE_OFF"]:
        action = "off"
    elif mode == c["MODE_ALWAYS"]:
        action = "always"
    elif mode == c["MODE_NTH"]:
        action = f"nth:{param}"
    else:
        action = f"{param / 10000:g}%"
    return f"{action:<12} calls {rust.scalar(fp['calls'])}, fired {rust.scalar(fp['fired'])}"


def parse_action(text):
    """(mode name, param, seed) as vm::failpoint::parse_action reads `text`."""
    if text in ("off", "always"):
        return text, 0, None
    if text.startswith("nth:"):
        if not text[4:].isdigit():
            raise gdb.GdbError(f"bad action {text!r}: nth:N takes a number")
        return "nth", max(int(text[4:]), 1), None
    m = re.fullmatch(r"(\d+)(?:\.(\d{1,4}))?%(?:@(\d+))?", text)
    if not m or int(m.group(1)) > 100:
        raise gdb.GdbError(f"bad action {text!r}: off, always, nth:N, P% or P%@SEED")
    frac = m.group(2) or ""
    ppm = int(m.group(1)) * 10_000 + (int(frac) * 10 ** (4 - len(frac)) if frac else 0)
    return "prob", min(ppm, 1_000_000), int(m.group(3)) if m.group(3) else 1


def store(field, value):
    """Writes `value` into a field (an atomic), at its size."""
    rust.write(int(field.address), (value & ((1 << (8 * field.type.sizeof)) - 1)).to_bytes(field.type.sizeof, "little"))


def failpoint_lines(_kernel, argv):
    if not argv:
        return ["fail points:"] + [f"  {name:<18} {describe(fp)}" for name, fp in failpoints()]
    if len(argv) != 2:
        raise gdb.GdbError(f"usage: {USAGE}")
    name, text = argv
    found = dict(failpoints())
    if name not in found:
        raise gdb.GdbError(f"no fail point {name!r} (there are: {', '.join(found)})")
    fp = found[name]
    before = describe(fp)
    mode, param, seed = parse_action(text)
    c = rust.constants("vm::failpoint")
    # As FailPoint::set: counters cleared, the generator seeded, the mode last.
    store(fp["calls"], 0)
    store(fp["fired"], 0)
    if seed is not None:
        store(fp["rng"], (seed ^ c["SEED_MIX"]) | 1)
    store(fp["param"], param)
    store(fp["mode"], c[f"MODE_{ {'off': 'OFF', 'always': 'ALWAYS', 'nth': 'NTH', 'prob': 'PROB'}[mode] }"])
    return [f"{name}: {describe(fp)} (was {before.split()[0]})"]
