#!/usr/bin/env python3
"""Prints the dependency graph between the runtime's top-level modules (src/<module>/ or
src/<module>.rs) and fails when two of them depend on each other, directly or through others.

A module depends on another when any of its files names `crate::<other>` (or `super::<other>`
from a top-level file). Tests inside a file count too: a cycle in test code is still a cycle.
Usage: scripts/module-cycles.py [SRC_DIR]   (default: src)
"""
import pathlib
import re
import sys

src = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "src")
top = {}
for p in sorted(src.iterdir()):
    if p.name in ("lib.rs", "bin", "main.rs"):
        continue
    name = p.stem if p.suffix == ".rs" else p.name
    files = [p] if p.is_file() else sorted(p.rglob("*.rs"))
    top[name] = files

ref = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
edges = {m: set() for m in top}
for m, files in top.items():
    for f in files:
        for line in f.read_text().splitlines():
            if line.lstrip().startswith("//"):
                continue
            for other in ref.findall(line):
                if other != m and other in top:
                    edges[m].add(other)

# Tarjan's strongly connected components: any component with more than one module is a cycle.
index, low, on, stack, comps, counter = {}, {}, set(), [], [], [0]


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in sorted(edges[v]):
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        comps.append(comp)


for v in sorted(edges):
    if v not in index:
        visit(v)

for m in sorted(edges):
    print(f"{m:10} -> {', '.join(sorted(edges[m])) or '(leaf)'}")
cycles = [sorted(c) for c in comps if len(c) > 1]
if cycles:
    for c in cycles:
        inner = [f"{a} -> {b}" for a in c for b in sorted(edges[a]) if b in c]
        print(f"cycle among {', '.join(c)}: {'; '.join(inner)}", file=sys.stderr)
    sys.exit(1)
print(f"no cycles among {len(edges)} modules")
