"""`vm check`: the invariant checker's rules (vm/src/invariants.rs: `check`
over the page array and its lists, `check_object` for rule 14) evaluated
from gdb on a stopped kernel, one violation per line, named as the
checker's `Violation` variants are.

Kept in step with invariants.rs by hand: each block below says which part
of `check` it is.
"""

import gdb

from . import rust
from .objects import resident, state_of
from .pages import QUEUE_PENDING
from .phys import cache, queues, zero_pool


def violation(name, **fields):
    """`Name { field: value, ... }`: addresses in hex, counts in decimal."""
    def show(key, value):
        if isinstance(value, str):
            return value
        return f"{value:#x}" if key == "page" or key == "word" else str(value)
    inner = ", ".join(f"{key}: {show(key, value)}" for key, value in fields.items())
    return f"{name} {{ {inner} }}"


def check(k):
    """Every violation, as text lines (empty: all is well)."""
    c = k.page_consts
    nil, not_head = c["NIL"], c["NOT_FREE_HEAD"]
    records = k.all_pages()
    n = len(records)
    out = []
    # Which list each page is on: 0 none, 1 free block, 2 cache, 3.. queue,
    # ZERO_POOL the zero pool.
    ZERO_POOL = 255
    on = bytearray(n)

    def mark(idx, tag):
        if on[idx] != 0:
            out.append(violation("OnTwoLists", page=records[idx].phys))
        on[idx] = tag

    # The cache, then the free lists.
    cached, _, _ = cache(k)
    for idx in cached:
        if idx >= n:
            out.append(f"a per-CPU cache holds index {idx}, past the page array")
            continue
        mark(idx, 2)
    fl, _ = rust.mutex(k.pm["free"])
    lo, hi = fl["heads"].type.range()
    listed_pages = 0
    for order in range(lo, hi + 1):
        blocks, prev, idx = 0, nil, int(fl["heads"][order])
        while idx != nil and blocks <= n:
            if idx >= n:
                out.append(f"free list {order} runs off the page array (index {idx})")
                break
            head = records[idx]
            if head.order != order:
                got = "None" if head.order == not_head else f"Some({head.order})"
                out.append(violation("BadOrder", page=head.phys, list=order, order=got))
            if head.prev != prev:
                out.append(violation("BadLink", page=head.phys))
            for i in range(1 << order):
                if idx + i >= n:
                    break
                mark(idx + i, 1)
            blocks += 1
            prev, idx = idx, head.next
        listed_pages += blocks << order
        recorded = int(fl["blocks"][order])
        if blocks != recorded:
            out.append(violation("FreeBlockCount", order=order, listed=blocks, recorded=recorded))
    if listed_pages != int(fl["pages"]):
        out.append(violation("FreePageTotal", listed=listed_pages, recorded=int(fl["pages"])))
    pooled, pool_len = zero_pool(k, records)
    for idx in pooled:
        mark(idx, ZERO_POOL)
        if not records[idx].flags & c["PageFlags::ZERO"]:
            out.append(violation("ZeroPoolNotZero", page=records[idx].phys))
    if len(pooled) != pool_len:
        out.append(violation("ZeroPoolCount", listed=len(pooled), recorded=pool_len))

    # The paging queues.
    queue_names = {v: name for name, v in rust.enumerators("vm::page::Queue").items()}
    for name, (head, tail, recorded) in queues(k).items():
        which = rust.enumerators("vm::page::Queue")[name]
        count, prev, idx = 0, nil, head
        while idx != nil and count <= n:
            if idx >= n:
                out.append(f"queue {name} runs off the page array (index {idx})")
                prev = nil
                break
            p = records[idx]
            mark(idx, 3 + which)
            if p.queue != which:
                out.append(violation("WrongQueueField", page=p.phys, list=name, field=queue_names.get(p.queue, "None")))
            if p.prev != prev:
                out.append(violation("BadLink", page=p.phys))
            count += 1
            prev, idx = idx, p.next
        if prev != tail:
            out.append(violation("BadLink", page=0 if prev == nil else records[prev].phys))
        if count != recorded:
            out.append(violation("QueueCount", queue=name, listed=count, recorded=recorded))

    # Every page.
    free, free_after_write = c["PageFlags::FREE"], c["PageFlags::FREE_AFTER_WRITE"]
    unmanaged = c["PageFlags::UNMANAGED"]
    for i, p in enumerate(records):
        xbusy = p.busy & c["BUSY_EXCLUSIVE"]
        busied = p.busy & ~c["BUSY_WAITERS"] != 0
        # A page waiting in a CPU's batch for its queue counts as queued.
        bound = p.queue & ~QUEUE_PENDING
        queued = bound in queue_names and queue_names[bound] != "None"
        if xbusy and p.busy // c["BUSY_SHARER"] > 0:
            out.append(violation("BadBusyWord", page=p.phys, word=p.busy))
        listed_free = on[i] in (1, 2, ZERO_POOL)
        if p.flags & free:
            if not listed_free:
                out.append(violation("FreeFlagNotOnList", page=p.phys))
            what = None
            if p.object:
                what = "owned by an object"
            elif p.wire_count:
                what = "wired"
            elif queued or 3 <= on[i] < ZERO_POOL:
                what = "queued"
            elif p.mappings:
                what = "mapped"
            elif busied:
                what = "busy"
            if what:
                out.append(violation("FreeButInUse", page=p.phys, what=f'"{what}"'))
        else:
            if listed_free:
                out.append(violation("OnFreeListNotFree", page=p.phys))
            if not p.flags & unmanaged and p.object and not busied and not p.wire_count and not queued:
                out.append(violation("Limbo", page=p.phys))
            if p.flags & free_after_write and not busied:
                out.append(violation("FreeAfterWriteIdle", page=p.phys))

    out.extend(check_swap_objects(k, records))
    return out, n


def check_swap_objects(k, records):
    """Rule 14 (`check_object`) for every swap object that owns a page: a
    clean, fully valid, unbusied page must have a block in its swap pager."""
    c = k.page_consts
    out = []
    for handle in sorted({p.object for p in records if p.object}):
        try:
            o = k.vm_object(handle)
        except gdb.GdbError:
            continue
        if rust.enumerator("vm::object::ObjectKind", rust.scalar(o["kind"])) != "Swap":
            continue
        st, _ = state_of(o)
        pager = k.pager(st)
        if pager is None or not pager[1].startswith("pager::swap::pager::SwapPager<"):
            continue
        blocks = swap_blocks(*pager)
        for pindex, index, _ in resident(k, st)[0]:
            if index is None:
                continue
            p = records[index]
            if p.busy & ~c["BUSY_WAITERS"]:
                continue
            # Given up with MADV_FREE: clean with no slot, and allowed.
            if p.flags & c["PageFlags::DISCARDABLE"]:
                continue
            if p.dirty == 0 and p.valid == c["ALL_BLOCKS"] and not blocks(pindex):
                out.append(violation("CleanWithoutSlot", page=p.phys, pindex=pindex))
    return out


def swap_blocks(pager, type_name):
    """has_page of the SwapPager at `pager` (of type `type_name`, generic
    over its swap space's lock): whether a page index has a block.
    The metadata is a radix trie whose leaves are SwBlk records (a run's
    number and a slot per page of the run)."""
    from .objects import Trie
    sp = rust.at(pager, type_name)
    trie, _ = rust.mutex(sp["meta"])
    none = rust.constants("pager::swap::pager")["NONE"]
    chunks = {}
    leaves, _ = Trie(trie.type).leaves(rust.scalar(trie["root"]))
    for address in leaves:
        blk = rust.at(address, "pager::swap::pager::SwBlk")
        slots = blk["blocks"]
        lo, hi = slots.type.range()
        chunks[int(blk["chunk"])] = [int(slots[i]) for i in range(lo, hi + 1)]
    per_chunk = None if not chunks else len(next(iter(chunks.values())))

    def has(pindex):
        if per_chunk is None:
            return False
        chunk = chunks.get(pindex // per_chunk)
        return chunk is not None and chunk[pindex % per_chunk] != none
    return has


def check_lines(k, argv):
    if argv:
        raise gdb.GdbError("usage: vm check")
    found, n = check(k)
    out = [f"vm check: {n} pages: {len(found)} violation{'s' if len(found) != 1 else ''}"]
    out += [f"  {v}" for v in found]
    return out
