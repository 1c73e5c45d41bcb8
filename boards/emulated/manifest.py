# Frozen-code manifest for the emulated board's interpreter (MicroPython unix port), for
# measuring the frozen build on the host:
#   make -C micropython/ports/unix VARIANT=standard \
#        FROZEN_MANIFEST=$PWD/boards/emulated/manifest.py
# The standard variant's modules plus the ppmid package as frozen bytecode. boot.py and
# main.py stay files in the flash image (`ppmid deploy --scripts-only`). Relative paths are
# resolved from this file.
include("$(PORT_DIR)/variants/standard/manifest.py")
package("ppmid", base_path="../../firmware", opt=3)
