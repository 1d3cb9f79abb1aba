"""Where the firmware, board definitions and bundled scenarios live (source tree or install)."""

import hashlib
import importlib.util
import json
import pathlib


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


def firmware_files():
    """(local path, board path) pairs that make up the firmware image."""
    fw = firmware_dir()
    files = [(fw / "main.py", "main.py")]
    for p in sorted((fw / "tpfw").glob("*.py")):
        files.append((p, "lib/tpfw/" + p.name))
    return files


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


_MKDIRS = (
    "import os\nfor d in ('lib', 'lib/tpfw'):\n"
    "    try:\n        os.mkdir(d)\n    except OSError:\n        pass\n"
)


def _remove(*paths):
    return "".join("try:\n    os.remove(%r)\nexcept OSError:\n    pass\n" % p for p in paths)


def deploy_args(board, native=True):
    """mpremote arguments (after ``connect PORT resume``) that install the firmware and the
    board definition: make lib/tpfw if missing, then copy every file, and the C core built
    for the board's architecture if there is one and ``native`` is true.

    The module's stamp goes first out and last in, so a copy cut short leaves a module the
    firmware does not import; without a module to copy, one left by an earlier deploy is
    removed: what runs is what deploy said."""
    module = native_module(load_board(board))[0] if native else None
    stamp = NATIVE_REMOTE[:-4] + ".sha256"
    args = ["exec", _MKDIRS + _remove(stamp) + ("" if module else _remove(NATIVE_REMOTE))]
    for local, remote in firmware_files():
        args += ["+", "fs", "cp", str(local), ":" + remote]
    if module:
        args += ["+", "fs", "cp", str(module), ":" + NATIVE_REMOTE]
        write = "with open(%r, 'w') as f:\n    f.write(%r)\n" % (stamp, native_stamp(module))
        args += ["+", "exec", write]
    args += ["+", "fs", "cp", str(board_path(board)), ":board.json"]
    return args
