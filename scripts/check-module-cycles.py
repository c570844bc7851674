#!/usr/bin/env python3
"""Fail if modules of a crate import each other in a cycle.

For each crate root given (default: core/src, core/proto/src and core/tls/src), the modules that share a
parent (the top-level modules of the crate; the files of `work/`; ...) form a graph: an
edge A -> B is a path into B written anywhere in A's non-test code (`use crate::B::...`,
`use super::B`, `crate::B::f()`, ...), B's own submodules and ancestors aside (a module
may use its parent's items and its children).
Comments, string literals and `#[cfg(test)]` items are ignored, as are unit-test files
(`tests.rs`, `tests_*.rs`, `*_tests.rs`, `tests/` folders): tests may reach across
modules. A strongly connected component of more than one module is a cycle; each is
printed with one import per edge (file and line) so it can be cut, and the exit status
is 1. Nothing is allow-listed.

Usage: scripts/check-module-cycles.py [CRATE_SRC ...]
       scripts/check-module-cycles.py --self-test   (the checker finds known cycles)
Python 3 standard library only.
"""

import os
import re
import sys



def is_test_file(rel):
    parts = rel.split(os.sep)
    name = parts[-1]
    return (
        name == "tests.rs"
        or name.startswith("tests_")
        or name.endswith("_tests.rs")
        or "tests" in parts[:-1]
        or "testdata" in parts[:-1]
    )


def strip_comments_and_strings(text):
    """Blank out comments, string and char literals, keeping line breaks."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = len(re.match(r"r(#*)", text[i:]).group(1))
            close = '"' + "#" * hashes
            j = text.find(close, i + 2 + hashes)
            j = n if j < 0 else j + len(close)
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]):
            m = re.match(r"'(\\.|[^\\'])'", text[i:i + 4])
            i += len(m.group(0))
        elif c == "'" and re.match(r"'\\(x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\})'", text[i:i + 12]):
            m = re.match(r"'\\(x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\})'", text[i:i + 12])
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


CFG_TEST = re.compile(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?(mod|fn|use|impl)\b")


def strip_cfg_test(text):
    """Blank out `#[cfg(test)]` items (a `mod`/`fn`/`impl` block or a `use` line)."""
    while True:
        m = CFG_TEST.search(text)
        if not m:
            return text
        j = m.end()
        while j < len(text) and text[j] not in "{;":
            j += 1
        if j < len(text) and text[j] == "{":
            depth = 0
            while j < len(text):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
        end = min(j + 1, len(text))
        text = text[: m.start()] + "\n" * text.count("\n", m.start(), end) + text[end:]


USE_STMT = re.compile(r"\buse\s+((?:crate|super|self)\b[^;]*);")
REL_PATH = re.compile(r"(?<![A-Za-z0-9_:])((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+)")


def expand_use_tree(tree):
    """`a::{b, c::{d, e}}` -> [["a","b"], ["a","c","d"], ["a","c","e"]]."""
    tree = re.sub(r"\s+as\s+[A-Za-z_][A-Za-z0-9_]*", "", tree)
    tree = re.sub(r"\s+", "", tree)

    def parse(s, i, prefix):
        paths, seg = [], ""
        while i < len(s):
            ch = s[i]
            if s.startswith("::{", i):
                sub, i = parse(s, i + 3, prefix + split(seg))
                paths += sub
                seg = None
                continue
            if ch == "{":  # a group without a prefix, e.g. `use {a, b}`
                sub, i = parse(s, i + 1, prefix)
                paths += sub
                seg = None
                continue
            if ch == ",":
                if seg:
                    paths.append(prefix + split(seg))
                seg = ""
            elif ch == "}":
                if seg:
                    paths.append(prefix + split(seg))
                return paths, i + 1
            else:
                seg = (seg or "") + ch
            i += 1
        if seg:
            paths.append(prefix + split(seg))
        return paths, i

    def split(seg):
        return [p for p in (seg or "").split("::") if p]

    return parse(tree, 0, [])[0]


def module_path(src, path):
    rel = os.path.relpath(path, src)
    parts = rel[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib", "main") and (parts[-1] == "mod" or len(parts) == 1):
        parts = parts[:-1]
    return tuple(parts), rel


def resolve(segments, here, modules):
    """The deepest module a path names, or None if it leaves the crate."""
    base = list(here)
    i = 0
    if segments[0] == "crate":
        base, i = [], 1
    while i < len(segments) and segments[i] in ("super", "self"):
        if segments[i] == "super":
            if not base:
                return None
            base = base[:-1]
        i += 1
    for seg in segments[i:]:
        if tuple(base + [seg]) in modules:
            base.append(seg)
        else:
            break
    return tuple(base)


def edges_of_crate(src):
    files = {}
    for root, _dirs, names in os.walk(src):
        for name in sorted(names):
            if name.endswith(".rs"):
                path = os.path.join(root, name)
                mod, rel = module_path(src, path)
                files[path] = (mod, rel)
    modules = {mod for mod, _ in files.values()}
    # Every ancestor folder of a module is a module too (`node.rs` + `node/tests.rs`).
    for mod in list(modules):
        for k in range(len(mod)):
            modules.add(mod[:k])
    edges = {}  # (parent, a, b) -> first "file:line"
    for path, (here, rel) in sorted(files.items()):
        if is_test_file(rel):
            continue
        with open(path, encoding="utf-8") as f:
            text = strip_cfg_test(strip_comments_and_strings(f.read()))
        refs = []
        for m in USE_STMT.finditer(text):
            refs += [(segs, m.start()) for segs in expand_use_tree(m.group(1)) if segs]
        blanked = USE_STMT.sub(lambda m: "\n" * m.group(0).count("\n"), text)
        refs += [(m.group(1).split("::"), m.start()) for m in REL_PATH.finditer(blanked)]
        for segs, pos in refs:
            target = resolve(segs, here, modules)
            if target is None:
                continue
            k = 0
            while k < min(len(here), len(target)) and here[k] == target[k]:
                k += 1
            if k == len(here) or k == len(target):
                continue  # a module and its own ancestor or descendant
            parent, a, b = here[:k], here[k], target[k]
            line = text.count("\n", 0, pos) + 1
            edges.setdefault((parent, a, b), f"{os.path.join(src, rel)}:{line}")
    return edges


def strongly_connected(nodes, edges):
    graph = {n: sorted(b for (a, b) in edges if a == n) for n in nodes}
    index, low, stack, on_stack, comps = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            comps.append(sorted(comp))

    for n in sorted(nodes):
        if n not in index:
            visit(n)
    return [c for c in comps if len(c) > 1]


def self_test():
    """Builds small crates in a temporary folder and checks what is reported."""
    import tempfile

    def crate(files):
        root = tempfile.mkdtemp(prefix="cycles-")
        for rel, text in files.items():
            path = os.path.join(root, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return root

    def cycles(files):
        edges = edges_of_crate(crate(files))
        found = []
        for parent in sorted({p for (p, _, _) in edges}):
            local = {(a, b) for (p, a, b) in edges if p == parent}
            nodes = {a for a, _ in local} | {b for _, b in local}
            found += [(parent, tuple(c)) for c in strongly_connected(nodes, local)]
        return found

    checks = [
        # Two top-level modules using each other, one through a `use` group.
        ({"lib.rs": "mod a; mod b;", "a.rs": "use crate::{b::B, x};",
          "b.rs": "fn f() { crate::a::g() }"}, [((), ("a", "b"))]),
        # Siblings inside a folder, through `super::`.
        ({"lib.rs": "mod w;", "w/mod.rs": "mod s; mod r;", "w/s.rs": "use super::r::X;",
          "w/r.rs": "use super::s::{self, Y as Z};"}, [(("w",), ("r", "s"))]),
        # A module and its parent, comments, strings, cfg(test) items and test files.
        ({"lib.rs": "mod a; mod b;", "a/mod.rs": "mod c; use self::c::C;",
          "a/c.rs": "use super::A; // crate::b\nconst S: &str = \"crate::b::x\";",
          "b.rs": "use crate::a::A;\n#[cfg(test)]\nmod tests { use crate::b; }",
          "a/tests.rs": "use crate::b::B;"}, []),
        # A longer circle.
        ({"lib.rs": "", "a.rs": "use crate::b::X;", "b.rs": "use crate::c::X;",
          "c.rs": "use crate::a::X;"}, [((), ("a", "b", "c"))]),
    ]
    failed = 0
    for files, want in checks:
        got = cycles(files)
        if got != want:
            failed += 1
            print(f"self-test: for {sorted(files)} expected {want}, found {got}")
    print("self-test: " + ("failed" if failed else "ok"))
    return 1 if failed else 0


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    crates = argv[1:] or [os.path.join(repo, d) for d in ("core/src", "core/proto/src", "core/tls/src")]
    failed = False
    for src in crates:
        edges = edges_of_crate(src)
        for parent in sorted({p for (p, _, _) in edges}):
            local = {(a, b) for (p, a, b) in edges if p == parent}
            nodes = {a for a, _ in local} | {b for _, b in local}
            for comp in strongly_connected(nodes, local):
                failed = True
                where = "::".join(("crate",) + parent)
                print(f"import cycle in {src}, inside {where}, between: {', '.join(comp)}")
                for (p, a, b), at in sorted(edges.items()):
                    if p == parent and a in comp and b in comp:
                        print(f"  {a} -> {b}  ({at})")
    if not failed:
        print("no import cycles between the modules of: " + ", ".join(crates))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
