#!/usr/bin/env python3
"""The images' root file system, for their `FROM scratch` final stage (docs/images.md, Sizes).

Run as root inside the full Debian build stage; it copies into OUT only what the image runs: the
PATHs given (the venv, the code, tini, /bin/sh, ...), the Python interpreter of /opt/venv and its
standard library (without the parts no server imports), Debian's python3 packages where the venv
sees them (arm/v7's numpy and PyYAML), CA certificates and OpenSSL's configuration, the users, the
licences, and every shared library those ELF files need (their `ldd` closure), with a fresh ld.so
cache. Left behind: apt, dpkg, perl, glibc's gconv modules, coreutils, bash and the rest of Debian's
base system. Debian's package database is kept for the packages whose files were copied, so image
scanners still see what is inside.

    usage: slim_root.py OUT PATH...

Only the standard library (it runs with the stage's own python3); ldd runs under qemu for foreign arches.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

VENV = Path("/opt/venv")
# What every image keeps of the system, when it exists (directories with everything below them).
SYSTEM = [
    Path("/etc/passwd"),
    Path("/etc/group"),
    Path("/etc/nsswitch.conf"),
    Path("/etc/os-release"),
    Path("/etc/ssl"),
    Path("/usr/lib/ssl"),
    Path("/usr/share/ca-certificates"),
    Path("/etc/ld.so.conf"),
    Path("/etc/ld.so.conf.d"),
    Path("/usr/share/licenses"),
    Path("/usr/share/common-licenses"),
]
# Merged /usr: top-level symlinks (/lib -> usr/lib, ...) are recreated first, so a library that ldd
# names by /lib/... is copied once, to its /usr/lib/... place.
TOP_LINKS = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"]
# Standard-library parts no server imports (IDLE, Tk, the test suite, 2to3, the bundled pip wheels).
STDLIB_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "__phello__"}
# Extension modules whose libraries cost more than they serve: NIS (deprecated, pulls in Kerberos and
# libtirpc) and Berkeley DB (`dbm` falls back to dbm.dumb).
DYNLOAD_SKIP = ("nis.", "_dbm.")
ELF_MAGIC = b"\x7fELF"


def canonical(path: Path) -> Path:
    """PATH with its directories resolved (the last part may be a link): where merged /usr keeps it."""
    return Path(os.path.realpath(path.parent)) / path.name


def copy(path: Path, out: Path, done: set[Path]) -> None:
    """Copy PATH into OUT at the same place (`cp -a`: owner, mode, links kept); a link brings what it names."""
    path = canonical(path)
    if path in done or not (path.exists() or path.is_symlink()):
        return
    done.add(path)
    dest = out / path.relative_to("/")
    if not (dest.exists() or dest.is_symlink()):
        dest.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", "--no-dereference", str(path), str(dest)], check=True)
    if path.is_symlink():  # one step at a time, so every link on the way is there too
        copy(path.parent / os.readlink(path), out, done)


def elf_files(out: Path) -> list[Path]:
    """Every regular ELF file copied so far, by its path in the image."""
    found = []
    for root, _dirs, files in os.walk(out):
        for name in files:
            p = Path(root, name)
            if p.is_symlink() or not p.is_file():
                continue
            with open(p, "rb") as f:
                if f.read(4) == ELF_MAGIC:
                    found.append(Path("/") / p.relative_to(out))
    return found


def needed(files: list[Path]) -> tuple[set[Path], list[str]]:
    """The shared libraries FILES load (ldd, in batches), and the 'not found' lines."""
    libs: set[Path] = set()
    missing: list[str] = []
    for i in range(0, len(files), 50):
        batch = [str(f) for f in files[i : i + 50]]
        run = subprocess.run(["ldd", *batch], capture_output=True, text=True)
        current = ""
        for line in run.stdout.splitlines():
            if not line.startswith(("\t", " ")):
                current = line.rstrip(":")
                continue
            line = line.strip()
            if "not found" in line:
                missing.append(f"{current}: {line}")
                continue
            target = line.split("=>", 1)[1] if "=>" in line else line
            target = target.split("(", 1)[0].strip()
            if target.startswith("/"):
                libs.add(Path(target))
    return libs, missing


def stdlib_paths() -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    dynload = stdlib / "lib-dynload"
    paths = [p for p in stdlib.iterdir() if p.name not in STDLIB_SKIP and p != dynload]
    return paths + [p for p in dynload.iterdir() if not p.name.startswith(DYNLOAD_SKIP)]


def python_paths() -> list[Path]:
    """The venv's interpreter (through its symlink chain), its stdlib and the site directories it sees."""
    paths = [VENV / "bin" / "python"] + stdlib_paths()
    cfg = (VENV / "pyvenv.cfg").read_text()
    if "include-system-site-packages = true" in cfg:
        paths += [Path(p) for p in sys.path if p.endswith("dist-packages") and Path(p).is_dir()]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    paths.append(Path("/etc") / version)  # Debian's sitecustomize.py lives there (a link from the stdlib)
    return paths


def keep_package_records(out: Path) -> None:
    """Debian's status file, only for the packages whose files are in the image (scanners read it)."""
    status = Path("/var/lib/dpkg/status")
    if not status.exists():
        return
    queries = set()
    for root, _dirs, files in os.walk(out):
        for name in files:
            path = Path(root, name)
            s = "/" + str(path.relative_to(out))
            if path.is_symlink() or s.startswith("/opt/") or s.endswith(".pyc"):
                continue
            queries.add(s)
            for top in ("/usr/lib/", "/usr/bin/", "/usr/sbin/"):  # dpkg knows /lib/... as shipped
                if s.startswith(top):
                    queries.add(s[len("/usr") :])
    run = subprocess.run(["dpkg-query", "-S", *sorted(queries)], capture_output=True, text=True)
    packages = set()
    for line in run.stdout.splitlines():  # "pkg:arch, pkg2:arch: /path"; directories and diversions aside
        owners, _, owned = line.partition(": ")
        if owned in queries and not line.startswith("diversion by"):
            packages.update(pkg.split(":")[0].strip() for pkg in owners.split(", "))
    kept = [
        para
        for para in status.read_text().split("\n\n")
        if para.strip() and para.split("\n", 1)[0].removeprefix("Package: ").strip() in packages
    ]
    dest = out / "var/lib/dpkg/status"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("\n\n".join(kept) + "\n")
    print(f"slim_root: dpkg records kept for {len(kept)} packages: {' '.join(sorted(packages))}")


def main(out: Path, paths: list[Path]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    done: set[Path] = set()
    for name in TOP_LINKS:  # the links themselves, not the directories they name
        if Path("/", name).is_symlink():
            subprocess.run(["cp", "-a", "--no-dereference", f"/{name}", str(out / name)], check=True)
    for path in paths + SYSTEM + python_paths():
        copy(path, out, done)
    for doc in Path("/usr/share/doc").glob("*/copyright"):
        copy(doc, out, done)
    seen: set[Path] = set()
    while True:  # libraries need libraries
        files = [f for f in elf_files(out) if f not in seen]
        if not files:
            break
        seen.update(files)
        libs, missing = needed(files)
        for line in missing:
            print(f"slim_root: WARNING {line}", file=sys.stderr)
        for lib in libs:
            copy(lib, out, done)
    for name in TOP_LINKS:  # e.g. /sbin: nothing was copied under /usr/sbin
        link = out / name
        if link.is_symlink() and not link.exists():
            link.unlink()
    subprocess.run(["ldconfig", "-r", str(out)], check=True)
    keep_package_records(out)
    for d in ("proc", "sys", "dev", "run", "root", "tmp"):
        (out / d).mkdir(exist_ok=True)
    (out / "tmp").chmod(0o1777)


if __name__ == "__main__":
    main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
