# Shared by the ESP32 boards' manifest.py files (MicroPython's build runs a manifest from
# its own directory, boards/NAME/, as plain Python): the firmware files an image freezes.
# board.json "firmware_exclude" names the files a board has no use for (the emulated
# board's support, firmware/ppmid/board/emulated.py and ptyuart.py); `ppmid deploy` leaves
# them out by the same list. The package's host-only modules (*_host.py: what only the host
# tools use) are never frozen, as `ppmid deploy` never copies them (host_tools/deploy.py
# HOST_ONLY_SUFFIX).
import json
import os

FIRMWARE = "../../firmware"   # from boards/NAME/


def ppmid_files(board_json="board.json"):
    """The ppmid package's .py files, relative to firmware/ppmid, less the host-only ones and
    the board's exclusions."""
    with open(board_json) as f:
        exclude = json.load(f).get("firmware_exclude", [])
    files = []
    for folder, _subdirs, names in os.walk(os.path.join(FIRMWARE, "ppmid")):
        for name in names:
            path = os.path.relpath(os.path.join(folder, name), FIRMWARE)
            if name.endswith(".py") and not name.endswith("_host.py") and path not in exclude:
                files.append(os.path.relpath(path, "ppmid"))
    return sorted(files)
