#!/usr/bin/env python3
"""Compares two JSON documents the way the reference fixtures are checked: strings,
labels and structure exactly, numbers within a tolerance (default 1e-4).

usage: jsoncmp.py GOT EXPECTED [TOL]   (GOT/EXPECTED: a file, or '-' for stdin, or
       a literal JSON text when it starts with '[' or '{' or '"')
Exit 0 when equal; else prints the first difference (with its path) and exits 1.
"""
import json
import sys


def load(arg):
    if arg == "-":
        return json.load(sys.stdin)
    if arg[:1] in "[{\"":
        return json.loads(arg)
    with open(arg, encoding="utf-8") as f:
        return json.load(f)


def diff(got, exp, tol, path="$"):
    if isinstance(exp, bool) or isinstance(got, bool):
        return None if got is exp else f"{path}: got {got!r}, expected {exp!r}"
    if isinstance(exp, (int, float)) and isinstance(got, (int, float)):
        d = abs(got - exp)
        return None if d <= tol else f"{path}: got {got!r}, expected {exp!r} (|diff| {d:.3g} > {tol})"
    if type(got) is not type(exp):
        return f"{path}: got {type(got).__name__} {json.dumps(got)[:120]}, expected {type(exp).__name__} {json.dumps(exp)[:120]}"
    if isinstance(exp, list):
        if len(got) != len(exp):
            return f"{path}: got {len(got)} items, expected {len(exp)}: {json.dumps(got)[:200]}"
        for i, (g, e) in enumerate(zip(got, exp)):
            r = diff(g, e, tol, f"{path}[{i}]")
            if r:
                return r
        return None
    if isinstance(exp, dict):
        if set(got) != set(exp):
            return f"{path}: got keys {sorted(got)}, expected {sorted(exp)}"
        for k in exp:
            r = diff(got[k], exp[k], tol, f"{path}.{k}")
            if r:
                return r
        return None
    return None if got == exp else f"{path}: got {got!r}, expected {exp!r}"


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    tol = float(sys.argv[3]) if len(sys.argv) == 4 else 1e-4
    try:
        got = load(sys.argv[1])
    except (ValueError, OSError) as e:
        print(f"output is not JSON: {e}")
        sys.exit(1)
    r = diff(got, load(sys.argv[2]), tol)
    if r:
        print(r)
        sys.exit(1)


if __name__ == "__main__":
    main()
