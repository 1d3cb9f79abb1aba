"""``thermopilot flash`` and ``thermopilot ports``: put MicroPython itself on a board, and find
the board's serial port.

ESP32 boards are flashed through esptool's Python API (v5, ``esptool.cmds``): the image's
header must name the board definition's chip before anything is sent, the chip on the port
must be that chip, and esptool's progress bar feeds ours. RP2040/RP2350 boards take a UF2
file copied to their BOOTSEL drive: every 512-byte block's magic numbers and the family ID
(the chip the file is built for) are checked first, so a .bin or a file for another chip is
never copied.
"""

import getpass
import os
import pathlib
import struct

from thermopilot.hil import resources

from .console import Progress, UserError, fmt_bytes, print_json, stop_on_ctrl_c

# -- USB serial ports ----------------------------------------------------------------------

#: (VID, PID or None for any) -> what is usually behind it
USB_BOARDS = [
    ((0x2E8A, 0x0005), "Raspberry Pi RP2040/RP2350 running MicroPython"),
    ((0x2E8A, 0x0003), "Raspberry Pi RP2040 in BOOTSEL mode (flash a .uf2)"),
    ((0x2E8A, 0x000F), "Raspberry Pi RP2350 in BOOTSEL mode (flash a .uf2)"),
    ((0x2E8A, None), "Raspberry Pi (RP2040/RP2350)"),
    ((0x303A, 0x1001), "Espressif ESP32-S3/C3/C6 native USB (serial/JTAG)"),
    ((0x303A, None), "Espressif ESP32-S2/S3 native USB"),
    ((0x10C4, 0xEA60), "CP210x USB-UART: ESP32 DevKitC and most ESP32 boards"),
    ((0x1A86, 0x7523), "CH340 USB-UART: ESP32 boards"),
    ((0x1A86, 0x55D4), "CH9102 USB-UART: ESP32 boards"),
    ((0x1A86, None), "WCH USB-UART (CH34x): ESP32 boards"),
    ((0x0403, None), "FTDI USB-UART"),
]


def guess_board(vid, pid):
    """What a USB serial port with this VID:PID most likely is, or ""."""
    if vid is None:
        return ""
    for (v, p), text in USB_BOARDS:
        if v == vid and (p is None or p == pid):
            return text
    return ""


def list_ports():
    """Serial ports: dicts with device, vid_pid, board (guessed), description, and the
    virtual boards that ``thermopilot vboard`` runs."""
    from serial.tools import list_ports as lp

    from thermopilot.hil import vboard

    out = []
    for p in sorted(lp.comports(), key=lambda p: p.device):
        vid_pid = "%04X:%04X" % (p.vid, p.pid) if p.vid is not None else ""
        out.append(
            {
                "device": p.device,
                "vid_pid": vid_pid,
                "board": guess_board(p.vid, p.pid),
                "description": p.description if p.description != "n/a" else "",
                "serial_number": p.serial_number or "",
            }
        )
    for e in vboard.running_boards():
        for k, port in enumerate(e["ports"]):
            out.append(
                {
                    "device": port,
                    "vid_pid": "",
                    "board": "virtual board %s (thermopilot vboard, pid %d%s)"
                    % (
                        e["board"],
                        e["pid"],
                        ", port %d of %d" % (k + 1, len(e["ports"]))
                        if len(e["ports"]) > 1
                        else "",
                    ),
                    "description": "pseudo-terminal",
                    "serial_number": "",
                }
            )
    return out


def cmd_ports(args):
    ports = list_ports()
    if args.json:
        print_json(ports)
        return 0
    if not ports:
        print(
            "no serial ports found: plug the board in (a data cable, not a charging one), or "
            "start a virtual board (thermopilot vboard)"
        )
        return 0
    print("%-20s %-9s %s" % ("port", "VID:PID", "board"))
    for p in ports:
        print("%-20s %-9s %s" % (p["device"], p["vid_pid"] or "-", p["board"] or p["description"]))
    return 0


# -- images --------------------------------------------------------------------------------

UF2_MAGIC_START0 = 0x0A324655  # "UF2\n"
UF2_MAGIC_START1 = 0x9E5D5157
UF2_MAGIC_END = 0x0AB16F30
UF2_FLAG_FAMILY = 0x00002000
UF2_FLAG_NOT_MAIN_FLASH = 0x00000001
#: UF2 family IDs (microsoft/uf2 utils/uf2families.json)
UF2_FAMILIES = {
    0xE48BFF56: "RP2040",
    0xE48BFF57: "RP2XXX absolute",
    0xE48BFF58: "RP2XXX data",
    0xE48BFF59: "RP2350 (Arm)",
    0xE48BFF5A: "RP2350 (RISC-V)",
    0x1C5F21B0: "ESP32",
    0xBFDD4EEE: "ESP32-S2",
    0xC47E5767: "ESP32-S3",
    0xD42BA06C: "ESP32-C3",
}
#: families a chip's boot ROM takes (RP2350 images may start with an "absolute" block)
CHIP_FAMILIES = {
    "RP2040": {0xE48BFF56},
    "RP2350": {0xE48BFF59, 0xE48BFF5A, 0xE48BFF57, 0xE48BFF58},
}
ESP_IMAGE_MAGIC = 0xE9


def uf2_chip(board):
    """The RP chip a board definition describes (from its ``mcu``), or None."""
    mcu = board.get("mcu", "")
    for chip in CHIP_FAMILIES:
        if chip in mcu:
            return chip
    return None


def check_uf2(path, chip=None):
    """Check a UF2 file block by block; returns (blocks, families). Raises UserError naming
    the file, the block and what was expected."""
    data = pathlib.Path(path).read_bytes()
    name = pathlib.Path(path).name
    if len(data) < 512 or struct.unpack_from("<I", data, 0)[0] != UF2_MAGIC_START0:
        what = "an ESP32 .bin image" if data[:1] == bytes([ESP_IMAGE_MAGIC]) else "not UF2"
        raise UserError(
            "%s is %s (its first bytes are %s, a UF2 file starts with 'UF2\\n'); the board "
            "takes a .uf2 file: download the board's .uf2 from micropython.org"
            % (name, what, data[:4].hex(" ") or "empty")
        )
    if len(data) % 512:
        raise UserError(
            "%s: %d bytes is not a whole number of 512-byte UF2 blocks (a download cut "
            "short?); download it again" % (name, len(data))
        )
    families = set()
    n = len(data) // 512
    for k in range(n):
        off = k * 512
        m0, m1, flags, _addr, size, block_no, num_blocks, family = struct.unpack_from(
            "<8I", data, off
        )
        (m_end,) = struct.unpack_from("<I", data, off + 508)
        if (m0, m1, m_end) != (UF2_MAGIC_START0, UF2_MAGIC_START1, UF2_MAGIC_END):
            raise UserError(
                "%s: block %d of %d has wrong UF2 magic numbers (0x%08x 0x%08x ... 0x%08x, "
                "expected 0x%08x 0x%08x ... 0x%08x): the file is damaged; download it again"
                % (name, k, n, m0, m1, m_end, UF2_MAGIC_START0, UF2_MAGIC_START1, UF2_MAGIC_END)
            )
        if size > 476:
            raise UserError(
                "%s: block %d carries %d bytes, more than UF2 allows" % (name, k, size)
            )
        if flags & UF2_FLAG_FAMILY:
            families.add(family)
        del block_no, num_blocks
    if chip is not None and chip in CHIP_FAMILIES:
        wrong = families - CHIP_FAMILIES[chip]
        if wrong or not families:
            raise UserError(
                "%s is built for %s, the board is an %s (UF2 family %s expected): download "
                "the .uf2 for this board"
                % (
                    name,
                    ", ".join(UF2_FAMILIES.get(f, "family 0x%08x" % f) for f in sorted(wrong))
                    or "no chip (no family ID)",
                    chip,
                    " or ".join("0x%08x" % f for f in sorted(CHIP_FAMILIES[chip])),
                )
            )
    return n, families


def esp_image_chip(data):
    """The chip ID in an ESP firmware image's extended header (esptool's IMAGE_CHIP_ID)."""
    if len(data) < 24 or data[0] != ESP_IMAGE_MAGIC:
        return None
    return data[12] | (data[13] << 8)


def check_esp_image(path, chip):
    """Refuse a file that is not an image for ``chip`` (esptool's chip name, e.g. esp32)."""
    from esptool.targets import CHIP_DEFS

    data = pathlib.Path(path).read_bytes()
    name = pathlib.Path(path).name
    rom = CHIP_DEFS.get(chip)
    if rom is None:
        raise UserError(
            "board definition names chip %r, which esptool does not know; expected one of: %s"
            % (chip, ", ".join(sorted(CHIP_DEFS)))
        )
    if data[:4] == b"UF2\n":
        raise UserError(
            "%s is a UF2 file; an %s takes the .bin image (download it from micropython.org)"
            % (name, rom.CHIP_NAME)
        )
    cid = esp_image_chip(data)
    if cid is None:
        raise UserError(
            "%s is not an ESP firmware image (first byte 0x%s, expected 0x%02x): download the "
            "%s .bin from micropython.org"
            % (name, data[:1].hex() or "--", ESP_IMAGE_MAGIC, rom.CHIP_NAME)
        )
    if cid != rom.IMAGE_CHIP_ID:
        other = [c.CHIP_NAME for c in CHIP_DEFS.values() if getattr(c, "IMAGE_CHIP_ID", -1) == cid]
        raise UserError(
            "%s is built for %s (image chip ID %d), the board is an %s (chip ID %d): "
            "download the image for this board"
            % (
                name,
                other[0] if other else "an unknown chip",
                cid,
                rom.CHIP_NAME,
                rom.IMAGE_CHIP_ID,
            )
        )
    return data, rom


# -- flashing ------------------------------------------------------------------------------


def _esptool_logger(progress, say):
    """An esptool logger that feeds our progress line and prints its messages."""
    from esptool.logger import TemplateLogger

    class Logger(TemplateLogger):
        def print(self, *args, **kwargs):
            text = " ".join(str(a) for a in args).strip()
            if text and text.strip("._") and kwargs.get("end", "\n") == "\n":
                say("esptool: " + text)

        def note(self, message):
            say("esptool note: %s" % message)

        def warning(self, message, suggestion=None):
            say("esptool warning: %s" % message)

        def error(self, message, suggestion=None):
            say("esptool error: %s" % message)

        def stage(self, finish=False):
            pass

        def progress_bar(self, cur_iter, total_iters, prefix="", suffix="", bar_length=30):
            progress.update(cur_iter, total=total_iters)

        def set_verbosity(self, verbosity):
            pass

    return Logger()


def flash_esp(port, fl, data, rom, say=print, dry_run=False):
    """Write ``data`` at the definition's offset through esptool's API: connect, check the
    chip, load the stub, write (compressed, verified by esptool's MD5), hard reset."""
    offset = int(str(fl["offset"]), 0)
    baud = int(fl.get("baud", 460800))
    say(
        "esptool (Python API): detect the chip on %s, expect %s; write %s at 0x%x at %d baud; "
        "hard reset" % (port, rom.CHIP_NAME, fmt_bytes(len(data)), offset, baud)
    )
    say(
        "same as: esptool --chip %s --port %s --baud %d write-flash -z 0x%x FILE"
        % (fl["chip"], port, baud, offset)
    )
    if dry_run:
        return
    from esptool.cmds import attach_flash, detect_chip, reset_chip, run_stub, write_flash
    from esptool.logger import log
    from esptool.util import FatalError

    bar = Progress("flash", total=len(data), unit="")
    old = getattr(log, "instance", None)
    log.set_logger(_esptool_logger(bar, say))
    msg = (
        "flashing continues to the end, because a board stopped half way does not boot "
        "(Ctrl-C again aborts now; then flash again)"
    )
    try:
        with stop_on_ctrl_c(msg):
            try:
                esp = detect_chip(port, connect_attempts=3)
            except (FatalError, OSError) as exc:
                raise UserError(
                    "no ESP chip answered on %s (%s): hold the board's BOOT button while "
                    "pressing EN/RST, then flash again" % (port, str(exc).strip().splitlines()[0])
                ) from None
            with esp:
                if esp.CHIP_NAME != rom.CHIP_NAME:
                    raise UserError(
                        "the chip on %s is an %s, the board definition says %s: pick the "
                        "right --board (or port)" % (port, esp.CHIP_NAME, rom.CHIP_NAME)
                    )
                try:
                    esp = run_stub(esp)
                    if baud != esp.ESP_ROM_BAUD:
                        esp.change_baud(baud)
                    attach_flash(esp)
                    write_flash(esp, [(offset, data)], compress=True)
                    reset_chip(esp, "hard-reset")
                except FatalError as exc:
                    raise UserError(
                        "flashing %s failed: %s; reconnect the board and flash again"
                        % (port, str(exc).strip())
                    ) from None
    finally:
        bar.finish()
        if old is not None:
            from esp_pylib.logger import EspLog

            EspLog.instance = old


def flash_uf2(path, drive, chip, say=print, dry_run=False):
    """Copy a checked UF2 file to the BOOTSEL drive, with a progress line."""
    data = pathlib.Path(path).read_bytes()
    dest = pathlib.Path(drive) / pathlib.Path(path).name
    say("copy %s (%s) to %s" % (pathlib.Path(path).name, fmt_bytes(len(data)), dest))
    if dry_run:
        return
    info = pathlib.Path(drive) / "INFO_UF2.TXT"
    text = info.read_text(errors="replace")
    if chip and chip not in text and "RPI-RP2" not in text:
        say("note: %s does not name %s; copying anyway" % (info, chip))
    bar = Progress("copy", total=len(data), unit="bytes")
    with stop_on_ctrl_c("the copy finishes first (a cut copy leaves the board in BOOTSEL)"):
        with open(dest, "wb") as f:
            for off in range(0, len(data), 64 * 1024):
                f.write(data[off : off + 64 * 1024])
                bar.update(off + min(64 * 1024, len(data) - off))
            f.flush()
            os.fsync(f.fileno())
    bar.finish()
    say("copied; the board reboots into MicroPython (thermopilot ports shows it as 2E8A:0005)")


def cmd_flash(args):
    board = resources.load_board(args.board)
    fl = board.get("flash", {})
    method = fl.get("method")
    fw = pathlib.Path(args.firmware)
    if method not in ("esptool", "uf2"):
        raise UserError(
            "board %s is not flashed (flash method %r): %s"
            % (
                args.board,
                method,
                "the virtual board runs the MicroPython unix port; start it with thermopilot "
                "vboard"
                if board.get("hal") == "hil"
                else "see its definition",
            )
        )
    if not fw.is_file():
        raise UserError(
            "firmware file %s does not exist; download %s from micropython.org"
            % (fw, fl.get("firmware", "MicroPython for this board"))
        )
    if method == "esptool":
        if not args.port:
            raise UserError(
                "flash --board %s needs --port, the board's serial port (thermopilot ports "
                "lists them, e.g. /dev/ttyUSB0)" % args.board
            )
        data, rom = check_esp_image(fw, fl["chip"])
        flash_esp(args.port, fl, data, rom, dry_run=args.dry_run)
        if not args.dry_run:
            print(
                "flashed; next: thermopilot deploy --board %s --port %s" % (args.board, args.port)
            )
        return 0
    chip = uf2_chip(board)
    n, fams = check_uf2(fw, chip)
    print(
        "%s: %d UF2 blocks, family %s"
        % (fw.name, n, ", ".join(UF2_FAMILIES.get(f, hex(f)) for f in sorted(fams)))
    )
    drive = pathlib.Path(args.drive or "/media/%s/RPI-RP2" % getpass.getuser())
    if not args.dry_run and not (drive / "INFO_UF2.TXT").exists():
        raise UserError(
            "no UF2 drive at %s: %s, then pass --drive MOUNTPOINT"
            % (drive, fl.get("bootloader", "enter the bootloader"))
        )
    flash_uf2(fw, drive, chip, dry_run=args.dry_run)
    return 0
