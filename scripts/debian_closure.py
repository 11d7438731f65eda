#!/usr/bin/env python3
"""Print the .deb files (pool path, SHA-256) that the named packages need, from a Debian
`Packages.xz` index: the packages and, transitively, their Depends/Pre-Depends (first
alternative; virtual names through Provides). Used by services.sh to unpack a server from a
newer Debian suite into a private prefix, next to the machine's own libraries.

    debian_closure.py Packages.xz PACKAGE... > list
"""
import lzma
import re
import sys

# Needed only by maintainer scripts, which are never run: the files are unpacked, not installed.
SKIP = {"perl", "perl-base", "debconf", "adduser", "lsb-base", "passwd", "init-system-helpers",
        "mysql-common", "psmisc", "libc-bin", "tzdata"}


def read_index(path):
    packages, provides, fields = {}, {}, {}

    def flush():
        name = fields.get("Package")
        if name:
            packages[name] = dict(fields)
            for p in re.split(r",\s*", fields.get("Provides", "")):
                if p:
                    provides.setdefault(p.split()[0], name)

    with lzma.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                flush()
                fields = {}
            elif line[0] not in " \t":
                key, _, value = line.partition(":")
                fields[key] = value.strip()
    flush()
    return packages, provides


def closure(packages, provides, wanted):
    seen, todo = [], list(reversed(wanted))
    while todo:
        name = todo.pop()
        if name in SKIP or name in seen:
            continue
        if name not in packages:
            if name not in provides:
                sys.exit(f"debian_closure: no package provides {name}")
            name = provides[name]
            if name in seen:
                continue
        seen.append(name)
        fields = packages[name]
        for dep in re.split(r",\s*", fields.get("Depends", "") + ", " + fields.get("Pre-Depends", "")):
            if dep:
                todo.append(dep.split("|")[0].split()[0].split(":")[0])
    return [packages[n] for n in seen]


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    pkgs, prov = read_index(sys.argv[1])
    for p in closure(pkgs, prov, sys.argv[2:]):
        print(p["Filename"], p["SHA256"], p["Package"], p["Version"])
