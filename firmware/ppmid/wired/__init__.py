# The wired road: commands from an engineer's laptop over a dedicated serial port
# (docs/wired.md). Imported only when the config's "wired" section is enabled.
