# Stand-in `esp32` for the heap gauge (the webassembly port has none).
