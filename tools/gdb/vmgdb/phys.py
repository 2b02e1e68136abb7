"""`vm phys`: the page allocator (free pages per order and per segment, the
per-CPU order-0 caches, the zero pool), the paging queues and swap."""

import gdb

from . import rust


def free_lists(k, records):
    """Walks the free lists: [(order, blocks counted, blocks recorded)], the
    free pages counted per segment, and the pages on the lists."""
    c = k.page_consts
    fl, _ = rust.mutex(k.pm["free"])
    lo, hi = fl["heads"].type.range()
    per_segment = [0] * len(k.segments)
    orders, listed = [], 0
    for order in range(lo, hi + 1):
        idx, blocks = int(fl["heads"][order]), 0
        while idx != c["NIL"] and idx < len(records) and blocks <= len(records):
            per_segment[records[idx].segment] += 1 << order
            blocks += 1
            idx = records[idx].next
        orders.append((order, blocks, int(fl["blocks"][order])))
        listed += blocks << order
    return orders, per_segment, listed, int(fl["pages"])


def cache(k):
    """The per-CPU order-0 caches: (page-array indices in them, each
    cache's capacity, the count in each CPU's)."""
    caches = k.pm["caches"]
    lo, hi = caches.type.range()
    out, counts, capacity = [], [], 0
    for cpu in range(lo, hi + 1):
        cache, _ = rust.mutex(caches[cpu]["cache"])
        plo, phi = cache["pages"].type.range()
        capacity = phi - plo + 1
        n = int(cache["len"])
        out += [int(cache["pages"][i]) for i in range(n)]
        counts.append(n)
    return out, capacity, counts


def zero_pool(k, records):
    """The zero pool: (page-array indices on it, recorded length)."""
    pool, _ = rust.mutex(k.pm["zeroed"])
    out, idx = [], int(pool["head"])
    while idx != k.page_consts["NIL"] and idx < len(records) and len(out) <= len(records):
        out.append(idx)
        idx = records[idx].next
    return out, int(pool["len"])


def queues(k):
    """{queue name: (head, tail, recorded count)} of the paging queues."""
    q, _ = rust.mutex(k.pm["queues"])
    out = {}
    for name, value in rust.enumerators("vm::page::Queue").items():
        if name != "None":
            lst = q["lists"][value]
            out[name] = (int(lst["head"]), int(lst["tail"]), int(lst["count"]))
    return out


# The kernel's swap space: pager's, with the kernel's interrupt-safe lock
# around its blist.
SWAP_SPACE = "pager::swap::space::SwapSpace<kernel::kern::sync::IrqMutex<pager::blist::Blist>>"


def swap(k):
    """(pages, free pages) of the swap space, or None without one."""
    arc = rust.once(rust.symbol("kernel::mm::swap::SWAP"), f"alloc::sync::Arc<{SWAP_SPACE}, alloc::alloc::Global>")
    if arc is None:
        return None
    sp = rust.arc(arc)
    blist, _ = rust.mutex(sp["map"])
    return int(sp["pages"]), int(blist["avail"])


def phys_lines(k, argv):
    if argv:
        raise gdb.GdbError("usage: vm phys")
    records = k.all_pages()
    orders, per_segment, listed, recorded = free_lists(k, records)
    cached, capacity, counts = cache(k)
    pooled, pool_len = zero_pool(k, records)
    for i in cached + pooled:
        if i < len(records):
            per_segment[records[i].segment] += 1
    nseg = len(k.segments)
    out = [
        f"vm phys: {k.npages} pages in {nseg} segment{'s' if nseg != 1 else ''}, page array at {k.pages_base:#x}, "
        f"direct map at {k.phys_offset:#x}"
    ]
    note = "" if listed == recorded else f" (the lists record {recorded})"
    pool_note = "" if len(pooled) == pool_len else f" (the pool records {pool_len})"
    out.append(f"free      {listed + len(cached) + len(pooled)} pages: {listed} on the free lists{note}, "
               f"{len(cached)} in the per-CPU caches (of {capacity} each), {len(pooled)} in the zero pool{pool_note}")
    busy = [f"CPU {i}: {n}" for i, n in enumerate(counts) if n]
    if busy:
        out.append(f"caches    {', '.join(busy)}")
    levels = k.pm["levels"]
    out.append(f"levels    reserve {rust.scalar(levels['reserve'])}, target {rust.scalar(levels['target'])}")
    for order, blocks, rec in orders:
        note = "" if blocks == rec else f" (recorded {rec})"
        out.append(f"  order {order:<2} blocks {blocks:<6} pages {blocks << order:<7}{note}")
    for i, (start, end, _) in enumerate(k.segments):
        out.append(f"segment {i}  {start:#x}-{end:#x}  pages {(end - start) >> k.page_shift}  free {per_segment[i]}")
    q = queues(k)
    out.append("queues    " + ", ".join(f"{name.lower()} {count}" for name, (_, _, count) in q.items()))
    sw = swap(k)
    if sw is None:
        out.append("swap      none")
    else:
        out.append(f"swap      {sw[0]} pages, {sw[0] - sw[1]} used, {sw[1]} free")
    stats = k.pm["stats"]
    out.append("stats     " + ", ".join(f"{n} {rust.counter(stats[n])}" for n in ("allocs", "frees", "failures")))
    return out
