#!/usr/bin/env python3
"""Finds import cycles between the modules (files) of a Rust crate.

Every `use` and every inline `crate::`/`super::`/`self::` path outside test code is resolved to
the file that *defines* the item, following `pub use` re-exports, so a parent that re-exports its
children (a module's table of contents) is not a dependency, and a child using an item defined in
its parent is. Then strongly connected components of the file graph are reported.

usage: modcycles.py CRATE_SRC_DIR [CRATE_SRC_DIR...]
"""
import os
import re
import sys

DEF_RE = re.compile(
    r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:unsafe\s+)?(?:async\s+)?(?:const\s+)?"
    r"(?:struct|enum|trait|type|fn|const|static|union|mod)\s+([A-Za-z_][A-Za-z0-9_]*)"
)
MACRO_RE = re.compile(r"^\s*macro_rules!\s*([A-Za-z_][A-Za-z0-9_]*)")
MOD_RE = re.compile(r"(?m)^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+([A-Za-z_][A-Za-z0-9_]*)\s*;")
PATH_RE = re.compile(r"\b((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+)")


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    out = []
    for line in text.split("\n"):
        # Drop // comments (not inside strings: good enough for this code base).
        i = line.find("//")
        if i >= 0 and line[:i].count('"') % 2 == 0:
            line = line[:i]
        out.append(line)
    return "\n".join(out)


def strip_strings(text):
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def drop_test_modules(text):
    """Removes `#[cfg(test)] mod x { ... }` blocks (brace matched)."""
    out = []
    i = 0
    pat = re.compile(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{")
    while True:
        m = pat.search(text, i)
        if not m:
            out.append(text[i:])
            break
        out.append(text[i : m.start()])
        depth = 0
        j = m.end() - 1
        while j < len(text):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        i = j + 1
    return "".join(out)


def test_mod_files(text):
    return set(re.findall(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text))


def expand_use(body):
    """`a::{b, c::{d, e}}` -> [['a','b'], ['a','c','d'], ['a','c','e']]; `as` renames kept as
    (path, alias)."""
    body = body.strip()
    res = []

    def split_top(s):
        parts, depth, cur = [], 0, ""
        for ch in s:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        if cur.strip():
            parts.append(cur)
        return parts

    def rec(prefix, s):
        s = s.strip()
        if not s:
            return
        i = s.find("{")
        if i >= 0 and s.endswith("}"):
            head = s[:i].rstrip(":").strip()
            new = prefix + ([p for p in head.split("::") if p] if head else [])
            for part in split_top(s[i + 1 : -1]):
                rec(new, part)
        else:
            alias = None
            if " as " in s:
                s, alias = [x.strip() for x in s.split(" as ")]
            segs = [p.strip() for p in s.split("::") if p.strip()]
            if segs == ["self"]:
                segs = []
            res.append((prefix + segs, alias))

    rec([], body)
    return res


class Crate:
    def __init__(self, src):
        self.src = os.path.abspath(src)
        root = "lib.rs" if os.path.exists(os.path.join(src, "lib.rs")) else "main.rs"
        self.files = {}  # module path tuple -> file
        self.children = {}  # module path -> set of child names
        self.defs = {}  # module path -> set of names
        self.reexports = {}  # module path -> list of (name or '*', absolute target segments)
        self.uses_code = {}  # module path -> absolute paths used (not re-exported)
        self.tests = set()
        self.load((), os.path.join(src, root))

    def load(self, mpath, path):
        self.files[mpath] = path
        raw = open(path).read()
        tests = test_mod_files(raw)
        text = drop_test_modules(strip_strings(strip_comments(raw)))
        self.children[mpath] = set()
        self.defs[mpath] = set()
        base = os.path.dirname(path)
        if not (path.endswith("mod.rs") or path.endswith("lib.rs") or path.endswith("main.rs")):
            base = path[:-3]
        for m in MOD_RE.finditer(text):
            name = m.group(1)
            if name in tests:
                continue
            self.children[mpath].add(name)
            for cand in (os.path.join(base, name + ".rs"), os.path.join(base, name, "mod.rs")):
                if os.path.exists(cand):
                    self.load(mpath + (name,), cand)
                    break
        for line in text.split("\n"):
            m = DEF_RE.match(line) or MACRO_RE.match(line)
            if m and line.startswith(("pub", "fn", "struct", "enum", "trait", "type", "const",
                                      "static", "mod", "macro_rules", "union", "unsafe", "async")):
                self.defs[mpath].add(m.group(1))
        self.text_of = getattr(self, "text_of", {})
        self.text_of[mpath] = text

    def absolute(self, mpath, segs):
        """Makes a path absolute from module `mpath`, or None for another crate's."""
        if not segs:
            return None
        segs = list(segs)
        if segs[0] == "crate":
            return segs[1:]
        cur = list(mpath)
        if segs[0] in ("self", "super"):
            while segs and segs[0] in ("self", "super"):
                if segs[0] == "super":
                    if not cur:
                        return None
                    cur.pop()
                segs.pop(0)
            return cur + segs
        if segs[0] in self.children.get(mpath, ()):  # a child module, 2018-style
            return cur + segs
        return None

    def parse_uses(self):
        """Collects, per module, its `pub use` re-exports and every path it uses in code."""
        for mpath, text in self.text_of.items():
            self.reexports[mpath] = []
            self.uses_code[mpath] = []
            for m in re.finditer(r"(?m)^\s*(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", text):
                public = m.group(1) is not None
                for segs, alias in expand_use(m.group(2)):
                    a = self.absolute(mpath, segs)
                    if a is None:
                        continue
                    if public:
                        name = alias or segs[-1]
                        self.reexports[mpath].append((name, a))
                    else:
                        self.uses_code[mpath].append([s for s in a if s != "*"])
            # Inline paths outside `use` lines.
            body = re.sub(r"(?m)^\s*(pub(?:\([^)]*\))?\s+)?use\s+[^;]+;", "", text)
            for m in PATH_RE.finditer(body):
                a = self.absolute(mpath, m.group(1).split("::"))
                if a is not None:
                    self.uses_code[mpath].append(a)

    def resolve(self, segs, depth=0):
        """The module (path tuple) that defines what `segs` names."""
        if depth > 20:
            return None
        mod = ()
        for i, s in enumerate(segs):
            last = i == len(segs) - 1
            if s in self.children.get(mod, ()):
                mod = mod + (s,)
                if last:
                    return mod
                continue
            if s in self.defs.get(mod, ()):
                return mod
            for name, target in self.reexports.get(mod, []):
                if name == s:
                    r = self.resolve(target + segs[i + 1 :], depth + 1)
                    if r is not None:
                        return r
            for name, target in self.reexports.get(mod, []):
                if name == "*":
                    r = self.resolve(target[:-1] + [s] + segs[i + 1 :], depth + 1)
                    if r is not None:
                        return r
            return mod
        return mod

    def edges(self):
        out = {m: set() for m in self.files}
        for mpath in self.files:
            for a in self.uses_code[mpath]:
                t = self.resolve(a)
                if t is not None and t != mpath:
                    out[mpath].add(t)
            # A `pub use` of the module's own descendants is its table of contents, not a
            # dependency; re-exporting anything else is.
            for _, tgt in self.reexports[mpath]:
                t = self.resolve([s for s in tgt if s != "*"])
                if t is not None and t != mpath and t[: len(mpath)] != mpath:
                    out[mpath].add(t)
        return out


def sccs(graph):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
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
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            strong(v)
    return out


def main():
    bad = 0
    for src in sys.argv[1:]:
        c = Crate(src)
        c.parse_uses()
        g = c.edges()
        name = lambda m: os.path.relpath(c.files[m], c.src)
        n_edges = sum(len(v) for v in g.values())
        cycles = [comp for comp in sccs(g) if len(comp) > 1]
        print(f"{src}: {len(g)} modules, {n_edges} edges, {len(cycles)} cycles")
        for comp in cycles:
            bad += 1
            members = sorted(comp)
            print("  cycle:", ", ".join(name(m) for m in members))
            for m in members:
                for t in sorted(g[m]):
                    if t in comp:
                        print(f"    {name(m)} -> {name(t)}")
        if "-v" in os.environ.get("MODCYCLES", ""):
            for m in sorted(g):
                for t in sorted(g[m]):
                    print(f"  {name(m)} -> {name(t)}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
