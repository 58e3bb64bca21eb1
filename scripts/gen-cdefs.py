#!/usr/bin/env python3
"""Generates lua/resty/consul_kv/cdefs.lua from include/ckv.h.

The header is the single source of the C declarations: this script strips
comments and preprocessor lines, keeps the declarations for ffi.cdef, and turns
the numeric CKV_* #defines and the ckv_status enumerators into Lua constants
(`cdefs.MAX_NAME_BYTES`, `cdefs.OK`, `cdefs.ERR_NOT_FOUND`, ...): plain
numbers, which the JIT folds, and no second copy of the status table. `--check` exits 1 when the
committed file differs from what would be generated (CI runs it).
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = ROOT / "include" / "ckv.h"
OUT = ROOT / "lua" / "resty" / "consul_kv" / "cdefs.lua"


def generate() -> str:
    text = HEADER.read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    consts = []
    decls = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#"):
            m = re.match(r"#define\s+(CKV_\w+)\s+(.+)$", s)
            if m:
                consts.append((m.group(1)[4:], m.group(2)))
            continue
        if s.startswith("extern \"C\"") or s in ("}", "") or s.startswith("namespace"):
            if s == "":
                decls.append("")
            continue
        decls.append(line.rstrip())
    body = re.sub(r"\n{2,}", "\n", "\n".join(decls)).strip("\n")
    enum = re.search(r"typedef enum ckv_status \{(.*?)\} ckv_status;", body, flags=re.S)
    if not enum:
        raise SystemExit("gen-cdefs: no ckv_status enum in the header")
    statuses = re.findall(r"\b(CKV_\w+)\s*=\s*(\d+)", enum.group(1))
    if not statuses:
        raise SystemExit("gen-cdefs: the ckv_status enum has no values")
    for name, value in consts:
        if not re.fullmatch(r"[0-9()<>\s*+-]+", value):
            raise SystemExit(f"gen-cdefs: #define CKV_{name} {value} is not numeric")
    lines = [
        "-- Generated from include/ckv.h by scripts/gen-cdefs.py. Do NOT edit.",
        "-- The one place where the C declarations of libckv are given to LuaJIT.",
        "local ffi = require(\"ffi\")",
        "",
        "local bit = require(\"bit\")",
        "local lshift = bit.lshift",
        "",
        "local _M = {",
    ]
    for name, value in consts:
        lua_value = re.sub(r"\((\d+)\s*<<\s*(\d+)\)", r"lshift(\1, \2)", value)
        lua_value = re.sub(r"^(\d+)\s*<<\s*(\d+)$", r"lshift(\1, \2)", lua_value)
        lines.append(f"    {name} = {lua_value},")
    lines.append("    -- ckv_status")
    for name, value in statuses:
        lines.append(f"    {name[4:]} = {value},")
    lines += [
        "}",
        "",
        "-- Declared once per LuaJIT VM: the C namespace is shared by all modules.",
        "if not pcall(ffi.typeof, \"struct ckv_handle\") then",
        "    ffi.cdef[[",
    ]
    lines += ["    " + l if l else "" for l in body.splitlines()]
    lines += ["    ]]", "end", "", "return _M", ""]
    return "\n".join(lines)


def main() -> int:
    want = generate()
    if "--check" in sys.argv:
        have = OUT.read_text() if OUT.exists() else ""
        if have != want:
            print(f"gen-cdefs: {OUT.relative_to(ROOT)} is stale; run scripts/gen-cdefs.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(want)
    return 0


if __name__ == "__main__":
    sys.exit(main())
