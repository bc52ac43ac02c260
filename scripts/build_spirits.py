"""Rebuild the test Spirits of ``tests/spirits/`` from their sources with pinned real toolchains.

Installs (unless ``--no-install``) Debian's clang/lld/wasi-libc at pinned versions through apt and
AssemblyScript at a pinned version through npm into ``tests/spirits/.toolchain/`` (ignored by
git), compiles every target, and writes ``tests/spirits/manifest.json`` with the SHA-256 of each
source and each output. The ``.wasm`` files are committed, so CI never needs the toolchains;
``tests/test_toolchain_spirits.py`` checks the committed files still match the manifest.

    python scripts/build_spirits.py            # install the toolchains, rebuild, write manifest
    python scripts/build_spirits.py --no-install
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "tests" / "spirits"
SRC = ROOT / "src"
OUT = ROOT / "wasm"
TOOLCHAIN = ROOT / ".toolchain"

#: Debian (bookworm) packages, pinned: clang 14, lld 14, wasi-libc of 2022-05.
APT_PACKAGES = {
    "clang-14": "1:14.0.6-12",
    "lld-14": "1:14.0.6-12",
    "libclang-rt-14-dev-wasm32": "1:14.0.6-12",
    "wasi-libc": "0.0~git20220510.9886d3d-2",
}
ASSEMBLYSCRIPT = "0.28.20"
CLANG = "clang-14"
SYSROOT = "/usr"

_C_BASE = ["--target=wasm32-wasi", f"--sysroot={SYSROOT}", "-O2", "-fuse-ld=lld"]
_C_REACTOR = [*_C_BASE, "-mexec-model=reactor"]
_EXPORT_MALLOC = ["-Wl,--export=malloc,--export=free"]

#: output name -> (compiler, sources relative to src/, flags)
TARGETS: dict[str, tuple[str, list[str], list[str]]] = {
    "as_default.wasm": ("asc", ["as/spirit.ts"], ["-O"]),
    "as_stub.wasm": ("asc", ["as/spirit.ts"], ["-O", "--runtime", "stub"]),
    "as_export.wasm": ("asc", ["as/spirit.ts"], ["-O", "--exportRuntime"]),
    "c_malloc.wasm": ("clang", ["c/spirit.c", "c/vudo.h"], [*_C_REACTOR, *_EXPORT_MALLOC]),
    "c_nomalloc.wasm": ("clang", ["c/spirit.c", "c/vudo.h"], _C_REACTOR),
    "c_command.wasm": ("clang", ["c/command.c"], _C_BASE),
    "c_reactor.wasm": ("clang", ["c/reactor.c"], _C_REACTOR),
    # The examples of docs/guide/other-languages.md (tests/test_other_languages_doc.py).
    "doc_greet_c.wasm": ("clang", ["docs/greet.c"], [*_C_REACTOR, *_EXPORT_MALLOC]),
    "doc_greet_as.wasm": ("asc", ["docs/greet.ts"], ["-O", "--exportRuntime"]),
    "doc_hello.wasm": ("clang", ["docs/hello.c"], _C_BASE),
}


def sha256(path: Path) -> str:
    """The hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def install() -> None:
    """Install the pinned toolchains (apt needs root; npm installs into .toolchain/)."""
    pins = [f"{name}={version}" for name, version in APT_PACKAGES.items()]
    subprocess.run(["apt-get", "install", "-y", "-q", *pins], check=True)
    TOOLCHAIN.mkdir(exist_ok=True)
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(TOOLCHAIN),
         f"assemblyscript@{ASSEMBLYSCRIPT}"],
        check=True,
    )


def versions() -> dict[str, str]:
    """The versions actually used, recorded in the manifest."""
    out = subprocess.run([CLANG, "--version"], check=True, capture_output=True, text=True)
    asc = subprocess.run([str(TOOLCHAIN / "node_modules/.bin/asc"), "--version"], check=True,
                         capture_output=True, text=True)
    return {"clang": out.stdout.splitlines()[0], "assemblyscript": asc.stdout.strip(),
            **{f"apt:{k}": v for k, v in APT_PACKAGES.items()}}


def build(name: str) -> None:
    """Compile one target into ``wasm/``."""
    compiler, sources, flags = TARGETS[name]
    out = OUT / name
    # Relative source paths, run from src/: the file names compiled into the module (e.g. in
    # AssemblyScript's abort messages) must not depend on where the checkout lives.
    main = sources[0]
    if compiler == "asc":
        cmd = [str(TOOLCHAIN / "node_modules/.bin/asc"), main, *flags, "-o", str(out)]
    else:
        cmd = [CLANG, *flags, "-o", str(out), main]
    print("+", " ".join(cmd))
    subprocess.run(cmd, check=True, cwd=SRC)


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-install", action="store_true", help="use installed toolchains")
    args = parser.parse_args()
    if not args.no_install:
        install()
    if shutil.which(CLANG) is None:
        print(f"{CLANG} not found: run without --no-install (as root)", file=sys.stderr)
        return 1
    OUT.mkdir(exist_ok=True)
    manifest: dict[str, object] = {"toolchains": versions(), "spirits": {}}
    entries: dict[str, object] = {}
    for name, (compiler, sources, flags) in TARGETS.items():
        build(name)
        entries[name] = {
            "compiler": compiler,
            "flags": flags,
            "sources": {s: sha256(SRC / s) for s in sources},
            "sha256": sha256(OUT / name),
        }
    manifest["spirits"] = entries
    (ROOT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {ROOT / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
