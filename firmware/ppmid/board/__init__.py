# Board support: the only firmware code that touches `machine`, `network` or `esp32`.
# Everything else receives hardware handles (UART streams, LED, WLAN, watchdog) from here.
