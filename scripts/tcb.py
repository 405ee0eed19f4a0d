#!/usr/bin/env python3
"""`make tcb`: the guest's trusted code, i.e. what the static cvm-agent is built from.

Reads the agent's dependency graph from `cargo tree` (normal dependencies, the guest target),
then prints our crates with their lines of Rust (tests left out: `tests/` directories, test
modules in their own files, and a trailing `#[cfg(test)] mod …` block), the third-party crates
with their versions, the ones we patch (patches/), and the proc macros that generate code at
build time. Host-only crates (cvmctl, the dev KBS, the image builders) do not appear because
the agent does not depend on them; that is the point of the workspace layout.
"""

import os
import re
import subprocess
import sys

TARGET = "x86_64-unknown-linux-gnu"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Files compiled only with a feature; left out unless the agent's build enables it.
FEATURE_FILES = {
    os.path.join("crates", "kmod", "src", "subset.rs"): ("cvm-kmod", "host"),
    os.path.join("crates", "tpm", "src", "swtpm.rs"): ("cvm-tpm", "swtpm"),
}
TEST_FILE = re.compile(r"(^|/)(tests?|test_support|[a-z_]+_tests)\.rs$")


def tree():
    out = subprocess.run(
        ["cargo", "tree", "--locked", "-p", "cvm-agent", "-e", "normal", "--target", TARGET,
         "--prefix", "none", "-f", "{p}|{f}"],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout
    pkgs = {}
    for line in out.splitlines():
        if "|" not in line:
            continue
        spec, features = line.rsplit("|", 1)
        spec = spec.replace(" (*)", "").strip()
        m = re.match(r"^(\S+) v(\S+)(?: \((.*?)\))?(?: \((proc-macro)\))?$", spec)
        if not m:
            sys.exit(f"tcb: cannot read cargo tree line {line!r}")
        name, version, where, macro = m.groups()
        if where == "proc-macro":
            where, macro = None, "proc-macro"
        key = (name, version)
        entry = pkgs.setdefault(key, {"path": where, "macro": bool(macro), "features": set()})
        entry["features"].update(f for f in features.split(",") if f)
    return pkgs


def code_lines(path):
    """Lines of a file up to a trailing `#[cfg(test)]` module."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for i, line in enumerate(lines):
        if line.startswith("#[cfg(test)]") and i + 1 < len(lines) and lines[i + 1].startswith("mod "):
            if "{" in lines[i + 1]:
                return i
    return len(lines)


def count(crate_dir, name, features):
    total = tests = 0
    src = os.path.join(crate_dir, "src")
    for dirpath, dirs, files in os.walk(src):
        # A library crate's binaries (cvm-nvme's test probe) are not linked into the agent.
        if name != "cvm-agent" and dirpath == src and "bin" in dirs:
            dirs.remove("bin")
        for f in files:
            if not f.endswith(".rs"):
                continue
            p = os.path.join(dirpath, f)
            rel = os.path.relpath(p, ROOT)
            gate = FEATURE_FILES.get(rel)
            if gate and gate[0] == name and gate[1] not in features:
                continue
            with open(p, encoding="utf-8") as fh:
                n = fh.read().count("\n")
            if TEST_FILE.search(os.path.relpath(p, src)) or "/tests/" in p:
                tests += n
                continue
            code = code_lines(p)
            total += code
            tests += n - code
    return total, tests


def wrap(items, width=100):
    lines, line = [], "  "
    for item in items:
        if len(line) + len(item) + 2 > width and line.strip():
            lines.append(line.rstrip(", "))
            line = "  "
        line += item + ", "
    lines.append(line.rstrip(", "))
    return "\n".join(lines)


def main():
    pkgs = tree()
    ours, patched, third, macros = [], [], [], []
    for (name, version), e in sorted(pkgs.items()):
        path = e["path"]
        if path and os.path.join(ROOT, "patches") in path:
            patched.append((name, version, os.path.relpath(path, ROOT)))
        elif path and path.startswith(ROOT):
            lines, tests = count(path, name, e["features"])
            ours.append((name, os.path.relpath(path, ROOT) or ".", lines, tests))
        elif e["macro"]:
            macros.append((name, version))
        else:
            third.append((name, version))
    print(f"The static cvm-agent ({TARGET}) is built from:\n")
    total = sum(o[2] for o in ours)
    print(f"Our code: {len(ours)} crates, {total} lines of Rust (tests left out)")
    for name, path, lines, tests in ours:
        print(f"  {name:<20} {lines:>6}  {path}  (+{tests} test lines)")
    print(f"\nThird-party crates we patch ({len(patched)}; what changed: patches/*/README.md):")
    for name, version, path in patched:
        print(f"  {name} {version}  {path}")
    print(f"\nThird-party crates: {len(third)}")
    print(wrap([f"{n} {v}" for n, v in third]))
    print(f"\nProc macros (run at build time, generate code into the agent): {len(macros)}")
    print(wrap([f"{n} {v}" for n, v in macros]))
    print("\nPlus the Rust standard library and glibc, libseccomp, libbpf, libelf and zlib, linked"
          " statically (ldd: static-pie).")


if __name__ == "__main__":
    main()
