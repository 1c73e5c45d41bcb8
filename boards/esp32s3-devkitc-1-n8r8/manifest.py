# Frozen-code manifest for a MicroPython image for the esp32s3-devkitc-1-n8r8 (built with ESP-IDF, not here):
#   make -C micropython/ports/esp32 BOARD=ESP32_GENERIC_S3 BOARD_VARIANT=SPIRAM_OCT \
#        FROZEN_MANIFEST=$PWD/boards/esp32s3-devkitc-1-n8r8/manifest.py
# The port's own frozen modules (asyncio, ...) plus the ppmid package as frozen bytecode,
# which runs from flash and leaves the heap to data. boot.py and main.py stay files in the
# filesystem: with this image, `ppmid deploy --scripts-only` (removes /ppmid from the flash).
# Relative paths are resolved from this file's directory.
include("$(PORT_DIR)/boards/manifest.py")
# board.json "firmware_exclude" names the files this board has no use for (the emulated
# board's support, firmware/ppmid/board/emulated.py and ptyuart.py): `ppmid deploy` leaves
# them out by the same list. MicroPython runs this file from its own directory.
import json
import os

with open("board.json") as f:
    _exclude = json.load(f).get("firmware_exclude", [])
_files = []
for _dir, _subdirs, _names in os.walk("../../firmware/ppmid"):
    for _name in _names:
        _path = os.path.relpath(os.path.join(_dir, _name), "../../firmware")
        if _name.endswith(".py") and _path not in _exclude:
            _files.append(os.path.relpath(_path, "ppmid"))
package("ppmid", files=sorted(_files), base_path="../../firmware", opt=3)
