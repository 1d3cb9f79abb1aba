"""Where the firmware, board definitions and bundled scenarios live (source tree or install)."""

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


_MKDIRS = (
    "import os\nfor d in ('lib', 'lib/tpfw'):\n"
    "    try:\n        os.mkdir(d)\n    except OSError:\n        pass\n"
)


def deploy_args(board):
    """mpremote arguments (after ``connect PORT resume``) that install the firmware and the
    board definition: make lib/tpfw if missing, then copy every file."""
    args = ["exec", _MKDIRS]
    for local, remote in firmware_files():
        args += ["+", "fs", "cp", str(local), ":" + remote]
    args += ["+", "fs", "cp", str(board_path(board)), ":board.json"]
    return args
