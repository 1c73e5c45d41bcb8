# Frozen-code manifest for a MicroPython image for the esp32s3-devkitc-1-n8r8 (built with ESP-IDF, not here):
#   make -C micropython/ports/esp32 BOARD=ESP32_GENERIC_S3 BOARD_VARIANT=SPIRAM_OCT \
#        FROZEN_MANIFEST=$PWD/boards/esp32s3-devkitc-1-n8r8/manifest.py
# The port's own frozen modules (asyncio, ...) plus the ppmid package as frozen bytecode,
# which runs from flash and leaves the heap to data. boot.py and main.py stay files in the
# filesystem: with this image, `ppmid deploy --scripts-only` (removes /ppmid from the flash).
# Relative paths are resolved from this file's directory.
include("$(PORT_DIR)/boards/manifest.py")
# The files to freeze: boards/freeze_ppmid.py, shared by the ESP32 boards (it reads this
# board's board.json "firmware_exclude").
import os
import sys

sys.path.insert(0, os.path.abspath(".."))
from freeze_ppmid import FIRMWARE, ppmid_files  # noqa: E402

package("ppmid", files=ppmid_files(), base_path=FIRMWARE, opt=3)
