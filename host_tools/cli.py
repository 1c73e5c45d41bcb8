"""The `ppmid` command: a table of subcommands, each in its own module.

Each command module defines `add_arguments(parser)` and `run(args) -> int`; it is imported
only when its command runs, so a broken or missing optional dependency of one command
never stops the others. User errors raise `CliError` and print as `ppmid: message`, exit 1.
"""
import argparse
import importlib
import sys

# name -> (module, one-line help). Keep in the order a newcomer meets them.
COMMANDS = {
    "board": ("host_tools.cmd_board", "start/stop/inspect the emulated board"),
    "deploy": ("host_tools.cmd_deploy", "compile firmware/ with mpy-cross and copy it to a board"),
    "flash": ("host_tools.cmd_flash", "write a MicroPython image to an ESP32 with esptool, then deploy"),
    "provision": ("host_tools.cmd_provision", "write a gateway's config, certificates and keys to its flash"),
    "gbcs": ("host_tools.cmd_gbcs", "decode/check GBCS messages with the firmware codec"),
    "broker": ("host_tools.cmd_broker", "run mosquitto on loopback with TLS and per-device ACLs"),
    "send": ("host_tools.cmd_send", "publish a signed command envelope and wait for its responses"),
    "ncp-emulator": ("host_tools.cmd_ncp_emulator", "emulate an EFR32 NCP + Communications Hub + meters on a pty"),
    "pn532-emulator": ("host_tools.cmd_pn532_emulator", "emulate a PN532 with virtual phones and tags on a pty"),
    "replay": ("host_tools.cmd_replay", "replay a command trace through MQTT against a gateway"),
    "emulate": ("host_tools.cmd_emulate", "run broker + emulated board + NCP/CH emulator end to end"),
}


class CliError(Exception):
    """A user-facing error: printed as `ppmid: <message>`, exit status 1."""


def build_parser():
    parser = argparse.ArgumentParser(prog="ppmid", description="PPMID gateway host tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    name = argv[0]
    if name not in COMMANDS:
        parser.print_usage(sys.stderr)
        print("ppmid: unknown command %r (try ppmid --help)" % name, file=sys.stderr)
        return 2
    module_name, help_text = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            print("ppmid: command %r is not available in this build" % name, file=sys.stderr)
            return 1
        raise
    sub = argparse.ArgumentParser(prog="ppmid " + name, description=help_text)
    module.add_arguments(sub)
    # Intermixed where argparse allows it: options may follow positionals
    # (`ppmid board wifi --state-dir D down`); it refuses parsers with optional positionals.
    try:
        args = sub.parse_intermixed_args(argv[1:])
    except TypeError:
        args = sub.parse_args(argv[1:])
    try:
        return module.run(args) or 0
    except CliError as exc:
        print("ppmid: %s" % exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # Run through the package module so that command modules and this entry point share
    # one CliError class (as `python -m host_tools.cli` would otherwise load a second copy).
    from host_tools.cli import main as package_main

    sys.exit(package_main())
