#!/usr/bin/env python3
"""No source file is over ~800 lines: checks it.

Counts the lines of each .rs file of kernel/, vm/ and pager/ without its
tests (an inline `mod tests { ... }` block; files named tests.rs or under
a tests/ or benches/ folder are not counted at all) and lists those over
the limit. Exit status 1 if there is one.

    tools/layout/sizes.py [--limit N]
"""
import os, re, sys

LIMIT = 800
if '--limit' in sys.argv:
    LIMIT = int(sys.argv[sys.argv.index('--limit') + 1])
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')


def without_tests(src):
    while True:
        m = re.search(r'^([ \t]*)(#\[cfg\(test\)\]\s*)?(pub(\(crate\))? )?mod tests \{', src, re.M)
        if not m:
            return src
        j = m.end()
        depth = 1
        while depth and j < len(src):
            depth += {'{': 1, '}': -1}.get(src[j], 0)
            j += 1
        src = src[:m.start()] + src[j:]


over = []
files = 0
for top in ('kernel', 'vm', 'pager'):
    for d, dirs, fs in os.walk(os.path.join(root, top)):
        parts = os.path.relpath(d, root).split(os.sep)
        if 'target' in parts or 'tests' in parts or 'benches' in parts:
            continue
        for f in fs:
            if not f.endswith('.rs') or f == 'tests.rs':
                continue
            p = os.path.join(d, f)
            files += 1
            n = without_tests(open(p).read()).count('\n')
            if n > LIMIT:
                over.append((n, os.path.relpath(p, root)))
for n, p in sorted(over, reverse=True):
    print(f'{p}: {n} lines without its tests (limit {LIMIT})')
if not over:
    print(f'{files} files, none over {LIMIT} lines')
sys.exit(1 if over else 0)
