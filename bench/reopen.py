#!/usr/bin/env python3
"""Reopens the same files over and over, as a build does its tools and libraries.

    bench/reopen.py ROOT [FILES] [ROUNDS]

Takes the first FILES regular files (default 100) of ROOT's usr/lib/x86_64-linux-gnu, bin
and etc, and ROUNDS times (default 100) opens each, fstat()s it, reads its first 4 KiB and
closes it (os.open and os.read: no isatty() as Python's open() does). Prints the wall time
in milliseconds.
"""

import os
import sys
import time


def main():
    root = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    files = []
    for sub in ("usr/lib/x86_64-linux-gnu", "bin", "etc"):
        d = os.path.join(root, sub)
        for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            p = os.path.join(d, name)
            if os.path.isfile(p) and not os.path.islink(p):
                files.append(p)
    files = files[:count]
    if len(files) < count:
        sys.exit(f"{root}: only {len(files)} regular files, {count} wanted")
    start = time.perf_counter()
    for _ in range(rounds):
        for p in files:
            fd = os.open(p, os.O_RDONLY)
            os.fstat(fd)
            os.read(fd, 4096)
            os.close(fd)
    print(f"{(time.perf_counter() - start) * 1000:.0f}")


main()
