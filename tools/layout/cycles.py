#!/usr/bin/env python3
"""The kernel's files import one another without a cycle: checks it.

Builds the graph of `crate::` (and `super::`) paths between the files of
kernel/src, one node per file (a module's `tests.rs` is a node of its own),
and prints each strongly connected component of more than one file with
the edges that close it. Exit status 1 if there is one. `mod` declarations
are not edges: a parent declaring its children is not an import. Nor is a
file's use of its parent module's items (`super::`, or `crate::` paths to
an ancestor): the parent is the room its files share, and it may gather
their public items (`pub use`). Between siblings and across subsystems,
every edge counts.

    tools/layout/cycles.py [kernel/src]
"""
import os, re, sys
args = [a for a in sys.argv[1:] if not a.startswith('--')]
root = args[0] if args else os.path.join(os.path.dirname(__file__), '..', '..', 'kernel', 'src')
skip_tests = '--no-tests' in sys.argv
mods = {}
for d, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs'): continue
        p = os.path.join(d, f)
        rel = os.path.relpath(p, root)[:-3].split('/')
        if rel[-1] == 'mod': rel = rel[:-1]
        if rel == ['main']: rel = []
        mods['::'.join(rel)] = p
def resolve(segs):
    for k in range(len(segs), -1, -1):
        m = '::'.join(segs[:k])
        if m in mods: return m
    return None
def strip_tests(src):
    # drop inline `mod tests { ... }` blocks (brace matched)
    res = src
    while True:
        m = re.search(r'\n(\s*)(#\[cfg\(test\)\]\s*)?(pub(\(crate\))? )?mod tests \{', res)
        if not m: break
        j = m.end(); depth = 1
        while depth and j < len(res):
            if res[j] == '{': depth += 1
            elif res[j] == '}': depth -= 1
            j += 1
        res = res[:m.start()] + res[j:]
    return res
def expand_use(body, prefix):
    # body: contents of braces possibly nested
    items = []; depth = 0; cur = ''
    for ch in body:
        if ch == '{': depth += 1
        if ch == '}': depth -= 1
        if ch == ',' and depth == 0: items.append(cur.strip()); cur = ''
        else: cur += ch
    if cur.strip(): items.append(cur.strip())
    out = []
    for it in items:
        m = re.match(r'([\w:]*?)::\{(.*)\}$', it, re.S)
        if m: out += expand_use(m.group(2), prefix + [s for s in m.group(1).split('::') if s])
        else: out.append(prefix + [s for s in it.split(' as ')[0].split('::') if s])
    return out
edges = {m: set() for m in mods}
for m, p in mods.items():
    if skip_tests and (m.endswith('tests') or m.split('::')[-1] == 'tests'): continue
    src = open(p).read()
    src = re.sub(r'//[^\n]*', '', src)
    if skip_tests: src = strip_tests(src)
    me = m.split('::') if m else []
    paths = []
    for u in re.finditer(r'use (crate|super)::\{(.*?)\};', src, re.S):
        base = [] if u.group(1) == 'crate' else me[:-1]
        paths += expand_use(u.group(2), base)
    for u in re.finditer(r'\bcrate::((?:\w+::)*\w+)', src):
        paths.append(u.group(1).split('::'))
    for u in re.finditer(r'\bsuper::((?:\w+::)*\w+)', src):
        paths.append(me[:-1] + u.group(1).split('::'))
    for segs in paths:
        t = resolve(segs)
        if t is not None and t != m and not m.startswith(t + '::') and t != '':
            edges[m].add(t)
# Tarjan
idx = {}; low = {}; st = []; on = set(); sccs = []; c = [0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        sccs.append(comp)
for v in edges:
    if v not in idx: sc(v)
big = [s for s in sccs if len(s) > 1]
for s in big:
    print(len(s), 'in a cycle:', ' '.join(sorted(s)))
    ss = set(s)
    for v in sorted(s):
        print('  ', v or 'main', '->', ' '.join(sorted(w for w in edges[v] if w in ss)))
if not big:
    print(f'{root}: {len(mods)} files, no import cycle')
sys.exit(1 if big else 0)
