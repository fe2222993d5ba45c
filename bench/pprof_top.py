#!/usr/bin/env python3
"""Prints the top of a pprof CPU profile, like `go tool pprof -top`.

    python3 bench/pprof_top.py profile.pb.gz [--rows 25]

Reads the gzipped `profile.proto` that xtcp2's /debug/pprof/profile
serves, with a hand-written protobuf reader (no Go toolchain, no PyPI
package), and prints flat (the sampled function itself) and cumulative
(the function anywhere on the stack) shares. Inlined frames count as their
own functions, as in pprof.
"""

import argparse
import gzip
import sys
from collections import Counter


def varint(data, pos):
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def fields(data):
    """Yields (field number, wire type, value) of one message; value is an
    int for varints and fixed ints, bytes for length-delimited fields."""
    pos = 0
    while pos < len(data):
        key, pos = varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(data, pos)
        elif wire == 1:
            value, pos = int.from_bytes(data[pos:pos + 8], "little"), pos + 8
        elif wire == 2:
            size, pos = varint(data, pos)
            value, pos = data[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = int.from_bytes(data[pos:pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


def ints(wire, value):
    """A repeated integer field, packed or not."""
    if wire == 2:
        out, pos = [], 0
        while pos < len(value):
            v, pos = varint(value, pos)
            out.append(v)
        return out
    return [value]


def signed(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def load(path):
    raw = open(path, "rb").read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    strings, samples, locations, functions, sample_types = [], [], {}, {}, []
    for number, wire, value in fields(raw):
        if number == 1:  # sample_type
            vt = dict((n, v) for n, _, v in fields(value))
            sample_types.append((vt.get(1, 0), vt.get(2, 0)))
        elif number == 2:  # sample
            locs, vals = [], []
            for n, w, v in fields(value):
                if n == 1:
                    locs += ints(w, v)
                elif n == 2:
                    vals += [signed(x) for x in ints(w, v)]
            samples.append((locs, vals))
        elif number == 4:  # location
            loc_id, funcs = 0, []
            for n, w, v in fields(value):
                if n == 1:
                    loc_id = v
                elif n == 4:
                    line = dict((ln, lv) for ln, _, lv in fields(v))
                    funcs.append(line.get(1, 0))
            locations[loc_id] = funcs
        elif number == 5:  # function
            f = dict((n, v) for n, _, v in fields(value))
            functions[f.get(1, 0)] = f.get(2, 0)
        elif number == 6:  # string_table
            strings.append(value.decode(errors="replace"))
    return strings, samples, locations, functions, sample_types


def top(path, rows):
    strings, samples, locations, functions, sample_types = load(path)
    # The last sample type is the one pprof shows by default (cpu nanoseconds).
    index = len(sample_types) - 1
    unit = strings[sample_types[index][1]] if sample_types else ""
    flat, cumulative = Counter(), Counter()
    total = 0
    for locs, vals in samples:
        value = vals[index] if vals else 0
        total += value
        names = []
        for loc in locs:
            # Lines of one location: innermost (inlined) function first.
            for fid in locations.get(loc, []):
                names.append(strings[functions.get(fid, 0)] if functions.get(fid, 0) < len(strings) else "?")
        if not names:
            continue
        flat[names[0]] += value
        for name in set(names):
            cumulative[name] += value
    if total == 0:
        print("empty profile")
        return
    scale, label = (1e-6, "ms") if unit == "nanoseconds" else (1, unit)
    print(f"total {total * scale:.0f} {label} in {len(samples)} stacks")
    print(f"{'flat':>10} {'flat%':>6} {'cum':>10} {'cum%':>6}  function")
    for name, value in flat.most_common(rows):
        print(f"{value * scale:>10.0f} {100 * value / total:>5.1f}% {cumulative[name] * scale:>10.0f} {100 * cumulative[name] / total:>5.1f}%  {name}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("profile")
    p.add_argument("--rows", type=int, default=25)
    args = p.parse_args()
    try:
        top(args.profile, args.rows)
    except (OSError, ValueError, IndexError) as e:
        sys.exit(f"pprof_top: {args.profile}: {e}")


if __name__ == "__main__":
    main()
