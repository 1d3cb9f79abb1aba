"""The MPC model blob: its layout, written once, and the generator of its firmware copies.

The host builds the blob (:func:`thermopilot.host.control.design.mpc_precompute`), the C core
(``firmware/native/tp_mpc.c``) and the MicroPython firmware (``firmware/tpfw/mpc.py``) read
it. The layout below is the single source: ``python -m thermopilot.host.control.blob``
writes ``firmware/native/tp_mpc_blob.h`` and ``firmware/tpfw/mpc_blob.py`` from it, and
``--check`` (run by the tests) fails when either file is out of date.

Layout, version 2: a 20-byte header, then little-endian float32 values.

header
    ``<4sHBBBBBBII``: magic ``TPMC``, version, nx, nu, nd, ny, N (horizon), nb (move blocks
    of the MicroPython formulation), payload length in bytes, CRC-32 (zlib) of the first 16
    header bytes followed by the payload.
model (``ARRAYS``, then ``SETTINGS``)
    The plant, weights, terminal cost and limits of the QP that the C core solves.
fallback (``FALLBACK``)
    The move-blocked condensed QP that the MicroPython firmware solves on a board without
    the C module (see :mod:`thermopilot.host.control.design`).

Counts are written as products and sums of the dimensions, in a syntax that C and Python
both read.
"""

import argparse
import pathlib
import struct
import zlib

import numpy as np

MAGIC = b"TPMC"
VERSION = 2
HEADER = struct.Struct("<4sHBBBBBBII")  # magic, version, nx, nu, nd, ny, n, nb, length, crc
HEADER_BYTES = HEADER.size
# shorthand used in the counts below (expanded before evaluation / code generation)
_MACROS = {"nxa": "(nx + nu)", "nv": "(nb * nu)", "nth": "(2 * nx + 2 * nu + nd)"}

# (name, count, meaning); row-major matrices
ARRAYS = (
    ("A", "nx * nx", "plant state matrix, x+ = A x + B u + E d"),
    ("B", "nx * nu", "plant input matrix"),
    ("E", "nx * nd", "measured-disturbance matrix"),
    ("C", "ny * nx", "soft-limited outputs y = C x"),
    ("Q", "nx * nx", "state weight (on x - x_ref)"),
    ("R", "nu * nu", "input weight (on u - u_ref)"),
    ("S", "nu * nu", "move weight (on u_k - u_{k-1})"),
    ("PN", "nxa * nxa", "terminal cost on [x; u] - [x_ref; u_ref]"),
    ("u_min", "nu", "hard input limits"),
    ("u_max", "nu", ""),
    ("du_min", "nu", "hard move limits per control step"),
    ("du_max", "nu", ""),
    ("y_min", "ny", "soft output limits (+-1e30: none)"),
    ("y_max", "ny", ""),
    ("w_lin", "ny", "slack penalty w_lin * s + w_quad * s^2 / 2 (w_lin >= 1e30: hard limit)"),
    ("w_quad", "ny", ""),
)
SETTINGS = (
    ("max_iter", "iteration budget per step of the C core's interior-point solver"),
    ("tol", "stopping tolerance of the C core (scaled residuals and complementarity)"),
)
FALLBACK = (
    ("fb_len", "nb", "steps in each move block; they add up to N"),
    ("fb_kinv", "nv * nv", "(H + M' diag(rho) M)^-1 of the condensed QP"),
    ("fb_f", "nv * nth", "linear term q = F [x0; u_prev; d; x_ref; u_ref]"),
    ("fb_gy", "nb * ny * nv", "outputs at the block ends: Y = Gy U + Phi [x0; ...]"),
    ("fb_phi", "nb * ny * nth", ""),
    ("fb_rho", "2 * nv + nb * ny", "ADMM penalty per row: inputs, moves, outputs"),
    ("fb_iter", "1", "iteration budget per step"),
    ("fb_alpha", "1", "ADMM over-relaxation"),
)

_ROOT = pathlib.Path(__file__).resolve().parents[2]
C_HEADER = _ROOT / "firmware" / "native" / "tp_mpc_blob.h"
FIRMWARE = _ROOT / "firmware" / "tpfw" / "mpc_blob.py"


def _expand(expr):
    for key, value in _MACROS.items():
        expr = expr.replace(key, value)
    return expr


def _count(expr, dims):
    # the counts are fixed strings of this module: products and sums of dimension names
    return int(eval(_expand(expr), {"__builtins__": {}}, dict(dims)))  # noqa: S307


def fields(nx, nu, nd, ny, n, nb):
    """The payload in order: a list of (name, number of float32 values)."""
    dims = {"nx": nx, "nu": nu, "nd": nd, "ny": ny, "n": n, "nb": nb}
    out = [(name, _count(expr, dims)) for name, expr, _ in ARRAYS]
    out += [(name, 1) for name, _ in SETTINGS]
    out += [(name, _count(expr, dims)) for name, expr, _ in FALLBACK]
    return out


def pack(dims, values):
    """Build a blob: ``dims`` = (nx, nu, nd, ny, n, nb), ``values`` maps every field name to
    its values (any array-like; flattened row-major, stored as float32)."""
    parts = []
    for name, count in fields(*dims):
        a = np.asarray(values[name], dtype=float).reshape(-1)
        if a.size != count:
            raise ValueError("blob field %s has %d values, expected %d" % (name, a.size, count))
        parts.append(a)
    data = np.concatenate(parts).astype("<f4").tobytes()
    head = HEADER.pack(MAGIC, VERSION, *dims, len(data), 0)[:16]
    crc = zlib.crc32(data, zlib.crc32(head)) & 0xFFFFFFFF
    return head + struct.pack("<I", crc) + data


def unpack(blob):
    """Check a blob (magic, version, length, CRC) and return a dict: the dimensions
    ``nx, nu, nd, ny, n, nb, nxa`` and every field as float64 arrays (values as stored).

    Raises
    ------
    ValueError
        Wrong magic, version, length or CRC, with the value found and the one expected.
    """
    blob = bytes(blob)
    if len(blob) < HEADER_BYTES:
        raise ValueError(
            "MPC blob is %d bytes, shorter than its %d-byte header" % (len(blob), HEADER_BYTES)
        )
    magic, version, nx, nu, nd, ny, n, nb, plen, crc = HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise ValueError("not an MPC blob: magic %r, expected %r" % (magic, MAGIC))
    if version != VERSION:
        raise ValueError(
            "MPC blob version %d, this build reads version %d; rebuild the blob with "
            "'thermopilot mpc design'" % (version, VERSION)
        )
    if len(blob) != HEADER_BYTES + plen:
        raise ValueError("MPC blob is %d bytes, header says %d" % (len(blob), HEADER_BYTES + plen))
    if zlib.crc32(blob[HEADER_BYTES:], zlib.crc32(blob[:16])) & 0xFFFFFFFF != crc:
        raise ValueError("MPC blob CRC mismatch: the blob is corrupted")
    dims = (nx, nu, nd, ny, n, nb)
    layout = fields(*dims)
    total = sum(c for _, c in layout)
    if plen != 4 * total:
        raise ValueError("MPC blob payload has %d bytes, expected %d" % (plen, 4 * total))
    f = np.frombuffer(blob, dtype="<f4", offset=HEADER_BYTES).astype(float)
    out = dict(zip(("nx", "nu", "nd", "ny", "n", "nb"), dims, strict=True))
    out["nxa"] = nx + nu
    pos = 0
    for name, count in layout:
        out[name] = f[pos : pos + count].copy()
        pos += count
    shapes = {
        "A": (nx, nx),
        "B": (nx, nu),
        "E": (nx, nd),
        "C": (ny, nx),
        "Q": (nx, nx),
        "R": (nu, nu),
        "S": (nu, nu),
        "PN": (nx + nu, nx + nu),
        "fb_kinv": (nb * nu, nb * nu),
        "fb_f": (nb * nu, 2 * nx + 2 * nu + nd),
        "fb_gy": (nb * ny, nb * nu),
        "fb_phi": (nb * ny, 2 * nx + 2 * nu + nd),
    }
    for name, shape in shapes.items():
        out[name] = out[name].reshape(shape)
    for name, _ in SETTINGS:
        out[name] = float(out[name][0])
    out["max_iter"] = int(out["max_iter"])
    out["fb_iter"] = int(out["fb_iter"][0])
    out["fb_alpha"] = float(out["fb_alpha"][0])
    return out


# ---------------------------------------------------------------------------- generators

_BANNER = "Generated by host/control/blob.py -- do not edit."
_REGEN = "Regenerate with: python -m thermopilot.host.control.blob"


def generate_c_header():
    """Text of ``firmware/native/tp_mpc_blob.h``."""

    def xlist(macro, items, with_count=True):
        lines = ["#define %s(X) \\" % macro]
        for i, item in enumerate(items):
            name, expr = item[0], item[1] if with_count else None
            end = " \\" if i < len(items) - 1 else ""
            if with_count:
                lines.append("    X(%s, %s)%s" % (name, _expand(expr), end))
            else:
                lines.append("    X(%s)%s" % (name, end))
        return lines

    magic = struct.unpack("<I", MAGIC)[0]
    out = [
        "/* %s" % _BANNER,
        " * %s" % _REGEN,
        " *",
        " * MPC model blob: a %d-byte header (magic, version, nx, nu, nd, ny, N, nb, payload"
        % HEADER_BYTES,
        " * bytes, CRC-32), then little-endian float32 fields in the order of the lists below;",
        " * each X(name, count) names a field and its number of values in terms of the",
        " * dimensions nx, nu, nd, ny, n, nb. */",
        "#ifndef TP_MPC_BLOB_H",
        "#define TP_MPC_BLOB_H",
        "",
        '#define TP_MPC_BLOB_MAGIC 0x%08Xu /* "%s" little-endian */' % (magic, MAGIC.decode()),
        "#define TP_MPC_BLOB_VERSION %du" % VERSION,
        "#define TP_MPC_HEADER_BYTES %du" % HEADER_BYTES,
        "",
        "/* model arrays, row-major */",
    ]
    out += xlist("TP_MPC_BLOB_ARRAYS", ARRAYS)
    out += ["", "/* scalar settings, one float32 each */"]
    out += xlist("TP_MPC_BLOB_SETTINGS", SETTINGS, with_count=False)
    out += ["", "/* the MicroPython formulation's data (the C core skips it) */"]
    out += xlist("TP_MPC_BLOB_FALLBACK", FALLBACK)
    out += ["", "#endif /* TP_MPC_BLOB_H */", ""]
    return "\n".join(out)


def generate_firmware():
    """Text of ``firmware/tpfw/mpc_blob.py``."""
    sig = "nx, nu, nd, ny, n, nb"

    def tuple_lines(items):
        return ['        ("%s", %s),' % (name, _expand(expr)) for name, expr, _ in items]

    out = [
        "# %s" % _BANNER,
        "# %s" % _REGEN,
        "# MPC model blob layout: header, then float32 fields (name, count) in this order.",
        "from micropython import const",
        "",
        'MAGIC = b"%s"' % MAGIC.decode(),
        "VERSION = const(%d)" % VERSION,
        "HEADER_BYTES = const(%d)" % HEADER_BYTES,
        "# after the 4-byte magic: version, nx, nu, nd, ny, N, nb, payload bytes, CRC-32",
        'HEADER_FORMAT = "<%s"' % HEADER.format[3:],
        "",
        "",
        "def model_fields(%s):" % sig,
        "    return (",
    ]
    out += tuple_lines(ARRAYS)
    out += [
        "    )",
        "",
        "",
        "SETTINGS = (%s)" % ", ".join('"%s"' % name for name, _ in SETTINGS),
        "",
        "",
    ]
    out += ["def fallback_fields(%s):" % sig, "    return ("]
    out += tuple_lines(FALLBACK)
    out += ["    )", ""]
    return "\n".join(out)


TARGETS = {C_HEADER: generate_c_header, FIRMWARE: generate_firmware}


def main(argv=None):
    ap = argparse.ArgumentParser(description="Generate the MPC blob layout for C and firmware")
    ap.add_argument("--check", action="store_true", help="exit 1 if a file is out of date")
    ap.add_argument("--c-header", type=pathlib.Path, default=C_HEADER)
    ap.add_argument("--firmware", type=pathlib.Path, default=FIRMWARE)
    args = ap.parse_args(argv)
    stale = 0
    for path, gen in ((args.c_header, generate_c_header), (args.firmware, generate_firmware)):
        text = gen()
        if args.check:
            if not path.exists() or path.read_text() != text:
                print("%s is out of date; run python -m thermopilot.host.control.blob" % path)
                stale = 1
        else:
            path.write_text(text)
            print("wrote %s" % path)
    return stale


if __name__ == "__main__":
    raise SystemExit(main())
