"""GSM modems: the AT link, PDUs, the driver that owns the serial port, and an emulator.

`pdu` encodes and decodes SMS PDUs, `at` speaks the AT command protocol (one
command at a time, unsolicited results recognised wherever they arrive),
`driver` keeps one modem working for years (initialisation, SIM sweeps,
reconnects, watchdog), `inbox` stores what the modem received. `emulator` is a
pseudo-terminal modem for the tests, the benchmark and `make demo MODEM=emulated`.
"""
