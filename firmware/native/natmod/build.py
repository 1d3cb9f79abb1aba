"""Build the `tpcore` dynamic native module for each board architecture and record it.

Run through ``make natmod MPY_DIR=/path/to/micropython`` (a MicroPython source tree: the
public micropython/micropython repository). For each architecture this runs the Makefile
beside this file (MicroPython's py/dynruntime.mk), checks the .mpy header, copies the file to
``firmware/tpcore_mpy/tpcore-ARCH.mpy`` and writes ``firmware/tpcore_mpy/manifest.json``:
architecture, .mpy version, SHA-256 of every C source and of the .mpy, compiler, build
command and the MicroPython commit. The test suite checks the committed files against it,
so a change to the C core fails the tests until this is run again.

An architecture whose tool chain is missing is skipped with the exact package to install;
its previous entry stays in the manifest (and fails the tests if the sources changed).
Exit status 1 if any requested architecture was not built.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
NATIVE = HERE.parent
OUT = ROOT / "firmware" / "tpcore_mpy"
DEFAULT_ARCHS = ("x64", "armv6m", "armv7emsp", "rv32imc")
# built too when its tool chain is on PATH, else only noted in the manifest
OPTIONAL_ARCHS = ("xtensawin",)

# .mpy header byte 2: sub-version in bits 0-1, architecture in bits 2-7 (py/persistentcode.h)
ARCH_CODES = {
    "x86": 1,
    "x64": 2,
    "armv6": 3,
    "armv6m": 4,
    "armv7m": 5,
    "armv7em": 6,
    "armv7emsp": 7,
    "armv7emdp": 8,
    "xtensa": 9,
    "xtensawin": 10,
    "rv32imc": 11,
    "rv64imc": 12,
}
# compiler per architecture (py/dynruntime.mk) and what to install when it is missing
TOOLCHAINS = {
    "x64": ("x86_64-linux-gnu-gcc", "apt-get install gcc (an x86-64 Linux host)"),
    "armv6m": ("arm-none-eabi-gcc", "apt-get install gcc-arm-none-eabi"),
    "armv7emsp": ("arm-none-eabi-gcc", "apt-get install gcc-arm-none-eabi"),
    "rv32imc": (
        "riscv64-unknown-elf-gcc",
        "apt-get install gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf",
    ),
    "xtensawin": (
        "xtensa-esp32-elf-gcc",
        "Espressif's toolchain: install ESP-IDF (./install.sh esp32) and run its export.sh",
    ),
}
BOARDS = {
    "x64": "virtual board (MicroPython unix port)",
    "armv6m": "RP2040 (Raspberry Pi Pico)",
    "armv7emsp": "RP2350 Arm cores (Raspberry Pi Pico 2)",
    "rv32imc": "ESP32-C3 (and the RP2350 RISC-V cores)",
    "xtensawin": "ESP32, ESP32-S2, ESP32-S3",
}


def module_sources(root=ROOT):
    """Files the module is built from, repo-relative: the C core and the binding."""
    native = root / "firmware" / "native"
    files = sorted(native.glob("*.c")) + sorted(native.glob("*.h"))
    files += [native / "natmod" / "tpcore_natmod.c", native / "natmod" / "Makefile"]
    return [p.relative_to(root).as_posix() for p in files]


def file_sha256(path):
    # line endings normalised, so a checkout with CRLF conversion hashes the same
    return hashlib.sha256(Path(path).read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def source_hashes(root=ROOT):
    hashes = {rel: file_sha256(root / rel) for rel in module_sources(root)}
    combined = hashlib.sha256(
        "".join("%s %s\n" % (h, rel) for rel, h in sorted(hashes.items())).encode()
    ).hexdigest()
    return hashes, combined


def mpy_header(data):
    """(version, sub_version, arch name) from the first bytes of a native .mpy."""
    if len(data) < 4 or data[0:1] != b"M":
        raise ValueError("not a .mpy file (first byte %r, expected b'M')" % data[0:1])
    code = (data[2] >> 2) & 0x2F
    names = {v: k for k, v in ARCH_CODES.items()}
    return data[1], data[2] & 3, names.get(code, "arch code %d" % code)


def tree_version(mpy_dir):
    text = (mpy_dir / "py" / "persistentcode.h").read_text()
    version = int(re.search(r"#define MPY_VERSION (\d+)", text).group(1))
    sub = int(re.search(r"#define MPY_SUB_VERSION (\d+)", text).group(1))
    info = {"mpy_version": version, "mpy_sub_version": sub}
    for key, args in (("commit", ["rev-parse", "HEAD"]), ("describe", ["describe", "--tags"])):
        res = subprocess.run(["git", "-C", str(mpy_dir)] + args, capture_output=True, text=True)
        info[key] = res.stdout.strip() if res.returncode == 0 else "unknown (not a git checkout)"
    return info


def missing_tools(arch):
    """What is missing to build `arch`, or None."""
    if arch not in TOOLCHAINS:
        return "no known tool chain for %r (supported: %s)" % (arch, ", ".join(TOOLCHAINS))
    cc, install = TOOLCHAINS[arch]
    if shutil.which(cc) is None:
        return "%s not found: %s" % (cc, install)
    if arch == "rv32imc":
        # the MicroPython headers need a C library's headers for the target
        res = subprocess.run([cc, "--print-file-name=picolibc.specs"], capture_output=True)
        if res.stdout.strip() == b"picolibc.specs":
            return "no C library for %s: %s" % (cc, install)
    return None


def compiler_version(arch):
    cc = TOOLCHAINS[arch][0]
    out = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else cc


def build_arch(arch, mpy_dir, combined, python):
    """Run the module Makefile for one architecture; return (mpy bytes, text size, log)."""
    with tempfile.TemporaryDirectory(prefix="tpcore-natmod-") as tmp:
        make = [
            "make",
            "-C",
            str(HERE),
            "ARCH=" + arch,
            "MPY_DIR=" + str(mpy_dir),
            "BUILD=" + tmp + "/build",
            "PYTHON=" + python,
            "TPCORE_SOURCE_SHA256=" + combined,
        ]
        # mpy_ld places library objects in set order: a fixed hash seed makes the output
        # byte-identical from one build to the next
        env = dict(os.environ, PYTHONHASHSEED="0")
        res = subprocess.run(make, capture_output=True, text=True, env=env)
        log = res.stdout + res.stderr
        built = HERE / "tpcore.mpy"
        if res.returncode != 0 or not built.exists():
            built.unlink(missing_ok=True)
            raise RuntimeError("make failed for %s:\n%s" % (arch, log.strip()))
        data = built.read_bytes()
        built.unlink()
        # mpy_ld's archive cache lands in the Makefile's folder; keep the tree clean
        for cache in HERE.glob(".mpy_ld_cache-*"):
            shutil.rmtree(cache, ignore_errors=True)
    m = re.search(r"text size:\s+(\d+)", log)
    return data, int(m.group(1)) if m else None, log


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mpy-dir", required=True, help="MicroPython source tree")
    ap.add_argument(
        "archs",
        nargs="*",
        help="architectures (default: %s, and %s where its tool chain is installed)"
        % (" ".join(DEFAULT_ARCHS), " ".join(OPTIONAL_ARCHS)),
    )
    args = ap.parse_args(argv)
    optional = () if args.archs else OPTIONAL_ARCHS
    archs = args.archs or list(DEFAULT_ARCHS) + list(OPTIONAL_ARCHS)
    mpy_dir = Path(args.mpy_dir).expanduser().resolve()
    if not (mpy_dir / "py" / "dynruntime.mk").exists():
        print(
            "natmod: MPY_DIR=%s is not a MicroPython source tree (no py/dynruntime.mk); get "
            "one with: git clone https://github.com/micropython/micropython" % args.mpy_dir,
            file=sys.stderr,
        )
        return 2
    try:
        import ar  # noqa: F401
        import elftools  # noqa: F401
    except ImportError as exc:
        print("natmod: %s; pip install pyelftools ar" % exc, file=sys.stderr)
        return 2

    hashes, combined = source_hashes()
    tree = tree_version(mpy_dir)
    manifest_path = OUT / "manifest.json"
    old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    modules = old.get("modules", {})
    failed, skipped = {}, {}
    for arch in archs:
        why = missing_tools(arch)
        if why is not None and arch in optional:
            skipped[arch] = why
            print("natmod: %-9s skipped: %s" % (arch, why))
            continue
        if why is None:
            try:
                data, text_bytes, _ = build_arch(arch, mpy_dir, combined, sys.executable)
            except RuntimeError as exc:
                why = str(exc)
        if why is not None:
            failed[arch] = why
            print("natmod: %-9s NOT BUILT: %s" % (arch, why), file=sys.stderr)
            continue
        version, sub, got_arch = mpy_header(data)
        want = (tree["mpy_version"], tree["mpy_sub_version"], arch)
        if (version, sub, got_arch) != want:
            raise SystemExit(
                "natmod: %s built a .mpy v%d.%d for %s, expected v%d.%d for %s"
                % ((arch, version, sub, got_arch) + want)
            )
        dest = OUT / ("tpcore-%s.mpy" % arch)
        OUT.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        modules[arch] = {
            "file": dest.name,
            "boards": BOARDS.get(arch, ""),
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "text_bytes": text_bytes,
            "mpy_version": version,
            "mpy_sub_version": sub,
            "source_sha256": combined,
            "compiler": compiler_version(arch),
            "command": "make -C firmware/native/natmod ARCH=%s MPY_DIR=$MPY_DIR "
            "TPCORE_SOURCE_SHA256=%s" % (arch, combined),
            "micropython_commit": tree["commit"],
        }
        print(
            "natmod: %-9s %6d bytes (text %s) v%d.%d -> %s"
            % (arch, len(data), text_bytes, version, sub, dest.relative_to(ROOT))
        )
    # what this run did not build, and earlier notes on architectures it did not try
    not_built = {a: w for a, w in old.get("not_built", {}).items() if a not in archs}
    not_built.update((a, w.splitlines()[0]) for a, w in dict(skipped, **failed).items())
    manifest = {
        "what": "tpcore: the ThermoPilot C core as MicroPython dynamic native modules, one "
        "per CPU architecture; generated by make natmod, do not edit",
        "rebuild": "make natmod MPY_DIR=/path/to/micropython",
        "micropython": {
            "source": "https://github.com/micropython/micropython",
            "commit": tree["commit"],
            "describe": tree["describe"],
            "mpy_version": tree["mpy_version"],
            "mpy_sub_version": tree["mpy_sub_version"],
        },
        "source_sha256": combined,
        "sources": dict(sorted(hashes.items())),
        "modules": dict(sorted(modules.items())),
        "not_built": dict(sorted(not_built.items())),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print("natmod: wrote %s" % manifest_path.relative_to(ROOT))
    return 1 if failed else 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
