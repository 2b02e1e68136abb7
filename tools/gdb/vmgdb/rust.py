"""Rust values through gdb's view of the kernel's debug information.

Every layout comes from the DWARF: fields by name, sizes and offsets from
gdb.Type. The standard types the kernel's structures are built of (Option,
Arc, Vec, BTreeMap, spin's Mutex and Once, &str) are read the way the
toolchain's pretty printers read them (lib/rustlib/etc/gdb_providers.py).

gdb resolves a Rust enum value to its active variant: the value's type then
has the variant as its one named field (next to an artificial
discriminant), which is what `variant` relies on.
"""

import gdb


def lookup_type(name):
    """The type `name`, or a clear error if the debug information lacks it."""
    try:
        return gdb.lookup_type(name)
    except gdb.error:
        raise gdb.GdbError(f"type {name} is not in the debug information: is the kernel's symbol file loaded?")


def symbol(name):
    """The static `name` (a Rust path) as a gdb.Value."""
    sym = gdb.lookup_global_symbol(name) or gdb.lookup_static_symbol(name)
    if sym is None:
        raise gdb.GdbError(f"no static {name} in the debug information: is the kernel's symbol file loaded?")
    return sym.value()


def read(address, size):
    """`size` bytes of kernel memory at `address`."""
    try:
        return bytes(gdb.selected_inferior().read_memory(address, size))
    except gdb.MemoryError:
        raise gdb.GdbError(f"cannot read {size} bytes of kernel memory at {address:#x}")


def write(address, data):
    try:
        gdb.selected_inferior().write_memory(address, data)
    except gdb.MemoryError:
        raise gdb.GdbError(f"cannot write {len(data)} bytes of kernel memory at {address:#x}")


def at(address, type_name):
    """The value of type `type_name` at `address`, read now (so that a bad
    address fails here, clearly)."""
    t = lookup_type(type_name)
    try:
        gdb.selected_inferior().read_memory(address, t.sizeof)
    except gdb.MemoryError:
        raise gdb.GdbError(f"{address:#x}: cannot read a {type_name} there (no memory)")
    return gdb.Value(address).cast(t.pointer()).dereference()


def scalar(v):
    """An integer inside any nest of one-field wrappers (atomics, cells,
    bitflags, NonZero): Atomic<u32> is {v: UnsafeCell {value: Align4 (u32)}}."""
    while not v.type.strip_typedefs().is_scalar:
        fields = [f for f in v.type.strip_typedefs().fields() if not f.artificial and f.type.sizeof > 0]
        if len(fields) != 1:
            raise gdb.GdbError(f"a {v.type} is not a number")
        v = v[fields[0]]
    return int(v) & ((1 << (8 * v.type.sizeof)) - 1)


def counter(v):
    """vm::counter::PerCpuCounter: the sum of its per-CPU slots."""
    slots = v["slots"]
    lo, hi = slots.type.strip_typedefs().range()
    return sum(scalar(slots[i]["__0"]) for i in range(lo, hi + 1)) & ((1 << 64) - 1)


def to_int(v):
    """A gdb.Value as an integer: numbers, pointers, atomics and other wrappers."""
    try:
        return scalar(v)
    except gdb.error as e:
        raise gdb.GdbError(f"not a number: {e}")


def variant(v):
    """The active variant of a Rust enum value: (name, the variant's value)."""
    fields = [f for f in v.type.fields() if not f.artificial]
    if len(fields) != 1:
        raise gdb.GdbError(f"{v.type}: cannot tell which variant is active")
    return fields[0].name, v[fields[0]]


def option(v):
    """Option<T>: the T inside, or None."""
    name, inner = variant(v)
    if name == "None":
        return None
    if name == "Some":
        return inner["__0"]
    raise gdb.GdbError(f"{v.type} is not an Option (variant {name})")


def enum_name(v):
    """The name of a C-like enum's value (`Active`, not `vm::page::Queue::Active`)."""
    return enumerator(v.type, int(v))


def enumerator(t, value):
    """The name of `value` among the enumerators of enum type `t` (a
    gdb.Type or a type name)."""
    if isinstance(t, str):
        t = lookup_type(t)
    for f in t.strip_typedefs().fields():
        if f.enumval == value:
            return f.name.rsplit("::", 1)[-1]
    return f"?{value}"


def enumerators(type_name):
    """{name: value} of a C-like enum."""
    return {f.name.rsplit("::", 1)[-1]: f.enumval for f in lookup_type(type_name).fields()}


def pointer(v):
    """The raw (thin) pointer inside NonNull, Unique and friends."""
    while v.type.strip_typedefs().code != gdb.TYPE_CODE_PTR:
        names = [f.name for f in v.type.strip_typedefs().fields()]
        v = v["pointer"] if "pointer" in names else v[names[0]]
    return v


def field_offset(t, name):
    """Byte offset of field `name` in type `t`."""
    for f in t.strip_typedefs().fields():
        if f.name == name:
            return f.bitpos // 8
    raise gdb.GdbError(f"{t} has no field {name}")


def arc(v):
    """Arc<T> (T sized): the T inside."""
    return pointer(v["ptr"]).dereference()["data"]


def arc_dyn(v):
    """Arc<dyn Trait>: (address of the ArcInner, address of the vtable)."""
    fat = v["ptr"]["pointer"]
    return int(fat["pointer"]), int(fat["vtable"])


def arc_dyn_data(inner, concrete):
    """Address of the value in the ArcInner at `inner` when its type is
    `concrete` (a type name): the field `data` of ArcInner<concrete>, or
    after the two counts at the type's alignment when the debug
    information has no ArcInner of that type."""
    try:
        return inner + field_offset(gdb.lookup_type(f"alloc::sync::ArcInner<{concrete}>"), "data")
    except (gdb.error, gdb.GdbError):
        counts = 2 * lookup_type("usize").sizeof
        align = lookup_type(concrete).alignof
        return inner + (counts + align - 1) // align * align


def vec(v):
    """Vec<T>: its elements, as gdb.Values."""
    t = v.type.template_argument(0)
    data = pointer(v["buf"]["inner"]["ptr"]).cast(t.pointer())
    return [(data + i).dereference() for i in range(scalar(v["len"]))]


def btree_map(m):
    """BTreeMap<K, V>: its (key, value) pairs in key order, as gdb.Values."""
    root = option(m["root"])
    if root is None or scalar(m["length"]) == 0:
        return []
    out = []

    def walk(node, height):
        leaf = node.dereference()
        keys_t = leaf["keys"].type.target().template_argument(0)
        vals_t = leaf["vals"].type.target().template_argument(0)
        # MaybeUninit<T> is laid out as T.
        keys = leaf["keys"].address.cast(keys_t.pointer())
        vals = leaf["vals"].address.cast(vals_t.pointer())
        n = int(leaf["len"])
        edges = None
        if height > 0:
            internal = lookup_type(str(leaf.type).replace("LeafNode", "InternalNode", 1))
            edges = node.cast(internal.pointer()).dereference()["edges"]
            # MaybeUninit<BoxedNode> is laid out as a node pointer.
            edges = edges.address.cast(node.type.pointer())
        for i in range(n + 1):
            if edges is not None:
                walk((edges + i).dereference(), height - 1)
            if i < n:
                out.append(((keys + i).dereference(), (vals + i).dereference()))

    walk(pointer(root["node"]), int(root["height"]))
    return out


def mutex(v):
    """A spin lock: spin::Mutex<T>, vm::sync::Mutex<T> (which wraps a
    vm::sync::raw::RawLock<T>) or kernel::kern::sync::IrqMutex<T>: (the T,
    whether the lock is held)."""
    while True:
        names = [f.name for f in v.type.strip_typedefs().fields()]
        if "raw" in names:
            return v["data"]["value"], scalar(v["raw"]["locked"]) != 0
        if "data" in names and "locked" in names:
            return v["data"]["value"], scalar(v["locked"]) != 0
        if "data" in names and "lock" in names:
            return v["data"]["value"], scalar(v["lock"]) != 0
        v = v["inner"]


def once(v, type_name):
    """spin::Once<T>: the T, or None before it is set."""
    complete = enumerators("spin::once::status::Status").get("Complete")
    if scalar(v["status"]) != complete:
        return None
    return v["data"].address.cast(lookup_type(type_name).pointer()).dereference()


def string(v):
    """&str (or NonNull<str>, String): its text."""
    t = v.type.strip_typedefs()
    names = [f.name for f in t.fields()]
    if "vec" in names:
        items = v["vec"]
        ptr = int(pointer(items["buf"]["inner"]["ptr"]))
        n = scalar(items["len"])
    else:
        if "pointer" in names and "data_ptr" not in names:
            v = v["pointer"]
        ptr, n = int(v["data_ptr"]), int(v["length"])
    if n == 0:
        return ""
    return read(ptr, min(n, 4096)).decode("utf-8", "replace")


def constants(module):
    """The `DEBUG_CONSTANTS` table of a kernel module (see vm::DebugConstant):
    {name: value}."""
    table = symbol(f"{module}::DEBUG_CONSTANTS")
    lo, hi = table.type.range()
    return {string(table[i]["__0"]): int(table[i]["__1"]) for i in range(lo, hi + 1)}


def flag_names(value, consts, prefix):
    """The names of the bits of `value` among the constants `prefix::NAME`,
    in bit order; bits without a name as hex."""
    names = []
    known = 0
    for name, bit in sorted(((n, b) for n, b in consts.items() if n.startswith(prefix + "::")), key=lambda x: x[1]):
        if value & bit:
            names.append(name.split("::", 1)[1])
        known |= bit
    if value & ~known:
        names.append(f"{value & ~known:#x}")
    return names
