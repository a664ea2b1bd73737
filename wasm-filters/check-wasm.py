#!/usr/bin/env python3
"""Checks built filter modules against the filter ABI's import/export rules.

Usage: python3 wasm-filters/check-wasm.py [FILE.wasm ...]
(default: every .wasm under target/wasm-filters/wasm32-unknown-unknown/release
in the repository, where README.md's build command puts them). Prints each module's imports and
exports; exits 1 if a module imports anything but `matrixinfer.log`, or lacks
one of the ABI's exports with its signature (docs/wasm-abi.md). Python 3
standard library only.
"""
import glob
import os
import sys

EXPECTED_IMPORTS = {("matrixinfer", "log"): "(i32, i32, i32) -> ()"}
EXPECTED_EXPORTS = {
    "mi_abi_version": "() -> (i32)",
    "mi_alloc": "(i32) -> (i32)",
    "mi_init": "(i32, i32) -> (i32)",
    "mi_selectors": "() -> (i64)",
    "mi_filter": "(i32, i32) -> (i64)",
}
KINDS = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}
VALTYPES = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64"}


def leb(b, i):
    result = shift = 0
    while True:
        x = b[i]
        i += 1
        result |= (x & 0x7F) << shift
        shift += 7
        if x < 0x80:
            return result, i


def name(b, i):
    n, i = leb(b, i)
    return b[i:i + n].decode(), i + n


def signature(params, results):
    show = lambda ts: ", ".join(VALTYPES.get(t, hex(t)) for t in ts)
    return f"({show(params)}) -> ({show(results)})"


def read_module(path):
    """Returns ([(module, name, kind, signature)], {export: (kind, signature)})."""
    b = open(path, "rb").read()
    if b[:8] != b"\0asm\1\0\0\0":
        raise ValueError("not a core wasm module")
    types, imports, func_types, exports = [], [], [], {}
    imported_funcs = 0
    i = 8
    while i < len(b):
        section = b[i]
        size, i = leb(b, i + 1)
        end, j = i + size, i
        if section == 1:  # types
            n, j = leb(b, j)
            for _ in range(n):
                j += 1  # 0x60
                np, j = leb(b, j)
                params = b[j:j + np]
                j += np
                nr, j = leb(b, j)
                results = b[j:j + nr]
                j += nr
                types.append(signature(params, results))
        elif section == 2:  # imports
            n, j = leb(b, j)
            for _ in range(n):
                module, j = name(b, j)
                field, j = name(b, j)
                kind = b[j]
                j += 1
                if kind != 0:
                    imports.append((module, field, KINDS.get(kind, kind), ""))
                    break  # the rest of the entry is not parsed; it fails anyway
                t, j = leb(b, j)
                imports.append((module, field, "func", types[t]))
                imported_funcs += 1
        elif section == 3:  # functions
            n, j = leb(b, j)
            for _ in range(n):
                t, j = leb(b, j)
                func_types.append(types[t])
        elif section == 7:  # exports
            n, j = leb(b, j)
            for _ in range(n):
                field, j = name(b, j)
                kind = b[j]
                index, j = leb(b, j + 1)
                sig = ""
                if kind == 0 and index >= imported_funcs:
                    sig = func_types[index - imported_funcs]
                exports[field] = (KINDS.get(kind, kind), sig)
        i = end
    return imports, exports


def check(path):
    problems = []
    imports, exports = read_module(path)
    print(path)
    for module, field, kind, sig in imports:
        print(f"  import {module}.{field} {kind} {sig}")
        if EXPECTED_IMPORTS.get((module, field)) != sig:
            problems.append(f"imports {module}.{field} {kind} {sig}")
    for field, (kind, sig) in exports.items():
        print(f"  export {field} {kind} {sig}")
    if exports.get("memory", ("",))[0] != "memory":
        problems.append("does not export its memory")
    for field, sig in EXPECTED_EXPORTS.items():
        if exports.get(field) != ("func", sig):
            problems.append(f"does not export {field} {sig}")
    for p in problems:
        print(f"  PROBLEM: {p}")
    return not problems


def main():
    paths = sys.argv[1:]
    if not paths:
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        target = os.path.join(repo, "target", "wasm-filters")
        paths = sorted(glob.glob(f"{target}/wasm32-unknown-unknown/release/*.wasm"))
        if not paths:
            sys.exit(f"no .wasm files under {target}; build them first (see README.md)")
    ok = all([check(p) for p in paths])
    print("all modules follow the ABI's import/export rules" if ok else "ABI PROBLEMS FOUND")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
