"""The `ppmid` command: a table of subcommands, each in its own module.

Each command module defines `add_arguments(parser)` and `run(args) -> int`; it is imported
only when its command runs, so a broken or missing optional dependency of one command
never stops the others. Every error is one line on stderr, `ppmid: E_CODE: sentence`:
- exit 1: a command's own `CliError`, or a library's `host_tools.errors.ToolError` (a bad
  board, a port that is not a REPL...), each with its code (error_line);
- exit 2: a usage error argparse finds (E_USAGE, after the usage);
- exit 3: anything else a command lets escape (a file that is a directory, bytes that are
  not UTF-8, a broker that refuses the connection...), named by describe();
  PPMID_DEBUG=1 adds the traceback;
- exit 130, nothing printed: Ctrl-C.
tests/cli_sweep.py runs every command with bad input and flags what ends otherwise.
"""
import argparse
import importlib
import os
import re
import sys

from host_tools.errors import ToolError

# name -> (module, one-line help). Keep in the order a newcomer meets them.
COMMANDS = {
    "board": ("host_tools.cmd_board", "start/stop/inspect the emulated board"),
    "deploy": ("host_tools.cmd_deploy", "compile firmware/ with mpy-cross and copy it to a board"),
    "flash": ("host_tools.cmd_flash", "write a MicroPython image to an ESP32 with esptool, then deploy"),
    "provision": ("host_tools.cmd_provision", "write a gateway's config, certificates and keys to its flash"),
    "gbcs": ("host_tools.cmd_gbcs", "decode/check GBCS messages with the firmware codec"),
    "utrn": ("host_tools.cmd_utrn", "check a 20-digit UTRN top-up code as a PPMID does, without keys"),
    "broker": ("host_tools.cmd_broker", "run mosquitto on loopback with TLS and per-device ACLs"),
    "sign": ("host_tools.cmd_sign", "write signed command envelopes to a file (the laptop carrying them needs no key)"),
    "send": ("host_tools.cmd_send", "send a signed command envelope (MQTT, or --serial by wire) and wait for its responses"),
    "ncp-emulator": ("host_tools.cmd_ncp_emulator", "emulate an EFR32 NCP + Communications Hub + meters on a pty"),
    "pn532-emulator": ("host_tools.cmd_pn532_emulator", "emulate a PN532 with virtual phones and tags on a pty"),
    "release": ("host_tools.cmd_release", "build and sign an application update (manifest, files)"),
    "update": ("host_tools.cmd_update", "offer a release to a gateway over MQTT and follow it to the end"),
    "users": ("host_tools.cmd_users", "rotate/revoke a gateway's DCC User keys by a signed users update over MQTT"),
    "commission": ("host_tools.cmd_commission", "order a gateway to leave the HAN and commission again (signed, over MQTT)"),
    "replay": ("host_tools.cmd_replay", "replay a command trace through MQTT (or --serial by wire) against a gateway"),
    "emulate": ("host_tools.cmd_emulate", "run broker + emulated board + NCP/CH emulator end to end"),
    "capture": ("host_tools.cmd_capture", "write one gateway's MQTT traffic from the broker as pcapng"),
    "monitor": ("host_tools.cmd_monitor", "a board's console with timestamps and a log-level filter"),
    "status": ("host_tools.cmd_status", "one line per gateway from the broker's retained state and info"),
}


class CliError(Exception):
    """A user-facing error: printed as `ppmid: CODE: message`, exit status 1. The code is
    the one given, else that of the library error it was raised while handling (a
    `raise CliError(str(exc))` keeps E_DEVICE_LOG, E_TLS...), else E_INPUT: what the user
    gave (an option, a file, a state dir) was refused."""

    code = "E_INPUT"

    def __init__(self, message, code=None):
        super().__init__(message)
        if code is not None:
            self.code = code


CODE_RE = re.compile(r"E_[A-Z0-9_]+$")


def error_line(exc):
    """`CODE: sentence` for a CliError or ToolError: its own code, or (a CliError without
    one) the code of the error it wraps; a sentence that starts with a code keeps it."""
    text = str(exc)
    if CODE_RE.match(text.split(":", 1)[0]):
        return text
    code = exc.__dict__.get("code") if isinstance(exc, CliError) else exc.code
    cause = exc.__cause__ or exc.__context__
    if code is None and isinstance(getattr(cause, "code", None), str) and CODE_RE.match(cause.code):
        code = cause.code
    code = code or exc.code
    if text.endswith(" (%s)" % code):  # a library sentence that names its code last says it once
        text = text[:-len(code) - 3]
    return "%s: %s" % (code, text)


class Parser(argparse.ArgumentParser):
    """argparse's parser whose usage errors end as every other error does: the usage, then
    `ppmid: E_USAGE: sentence (ppmid COMMAND --help)`, exit status 2."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(2, "ppmid: E_USAGE: %s (%s --help)\n" % (message, self.prog))


def add_signed_order_arguments(p, sequence_help):
    """The options of a command that sends one gateway a document signed with the
    operator's update key over the broker and waits for its status (users, commission)."""
    p.add_argument("--state-dir", required=True, help="the broker's state dir (ppmid broker start)")
    p.add_argument("--gateway", required=True, metavar="EUI", help="the gateway's EUI-64")
    p.add_argument("--key", required=True, metavar="PEM", help="the operator's P-256 update key (ppmid release --make-key)")
    p.add_argument("--sequence", type=int, help=sequence_help)
    p.add_argument("--as", dest="broker_user", default="test", metavar="NAME",
                   help="identity on the broker (certificate dcc-user-NAME; default test)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the gateway's status")


def broker_parties(gateway, user):
    """(gateway EUI-64, DCC-side identity) for a command that talks to one gateway over the
    broker, or a CliError saying which is malformed."""
    from host_tools.broker import BrokerError, gateway_identity, user_identity
    try:
        return gateway_identity(gateway), user_identity(user)
    except BrokerError as exc:
        raise CliError(str(exc))


def check_wait(timeout, sequence=None):
    """--timeout (and --sequence, when the command has one) as a command waits on them."""
    if not 0 < timeout <= 86400:  # also refuses nan, which would wait for ever
        raise CliError("--timeout must be a number of seconds from 0 to 86400")
    if sequence is not None and sequence < 1:
        raise CliError("--sequence must be 1 or more")


def check_state_dir(path):
    """--state-dir of a command that makes it when missing (board start, broker, emulate):
    a file there is refused before anything starts, not met later as `File exists`."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise CliError("--state-dir %s is a file, not a folder" % path)


def check_output_file(option, path):
    """An option naming a file a command writes at the end (--pcap, --html): refused before
    anything runs when it is a folder or its folder does not exist. None passes."""
    if path is not None and (os.path.isdir(path) or not os.path.isdir(os.path.dirname(os.path.abspath(path)))):
        raise CliError("%s %s: give a file in an existing folder" % (option, path))


def install_code_option(text, option=None, new=True):
    """An install code as an option gives it (hex as printed, or `new` when `new` allows it:
    a random 16-byte code with its CRC) -> its bytes, CRC included. A refused code raises
    device_log.InstallCodeError (its E_INSTALL_CODE* code), or with `option` a CliError
    that names the option."""
    from host_tools import device_log
    if new and text.strip().lower() == "new":
        return device_log.new_install_code()
    try:
        return device_log.parse_install_code(text)
    except device_log.InstallCodeError as exc:
        if option is None:
            raise
        raise CliError("%s: %s" % (option, exc))


def print_final(status, wanted, what):
    """Print a gateway's last status as JSON; exit status 0 when its state is `wanted`, else
    1 with final_error's line on stderr."""
    import json
    print(json.dumps(status))
    if status.get("state") == wanted:
        return 0
    final_error(what, status.get("state"), status.get("error"))
    return 1


def final_error(what, state, error):
    """`ppmid: E_CODE: WHAT STATE: message` on stderr, the errors' one line, for a final status
    that is not the one asked for (`ppmid send` rejected or no-answer, a commission order or
    users update refused): its JSON went to stdout, this line is for whoever reads errors.
    E_CODE: the gateway's error code, else the state's (E_FAILED for failed)."""
    error = error if isinstance(error, dict) else {}
    code = error.get("code")
    if not isinstance(code, str) or not re.match(r"E_[A-Z0-9_]+$", code):
        code = "E_" + re.sub(r"[^A-Z0-9]", "_", str(state).upper())
    message = error.get("message")
    print("ppmid: %s: %s %s%s" % (code, what, state, ": %s" % message if message else ""), file=sys.stderr)


def describe(exc):
    """(code, sentence) for an exception no command turned into a CliError."""
    import json
    import socket
    import ssl
    if isinstance(exc, UnicodeDecodeError):
        return "E_INPUT", "the input is not UTF-8 text (byte 0x%02x at offset %d)" % (exc.object[exc.start], exc.start)
    if isinstance(exc, json.JSONDecodeError):
        return "E_INPUT", "not valid JSON: %s" % exc
    if isinstance(exc, RecursionError):
        return "E_INPUT", "the input is nested too deeply"
    if isinstance(exc, ssl.SSLError):
        return "E_TLS", "TLS failed: %s" % (getattr(exc, "reason", None) or exc)
    if isinstance(exc, ConnectionRefusedError):
        return "E_CONNECT", "connection refused (is the broker running, on that port?)"
    if isinstance(exc, socket.gaierror):
        return "E_CONNECT", "unknown host name (%s)" % exc.strerror
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "E_TIMEOUT", "no answer in time (%s)" % (exc or "timed out")
    if isinstance(exc, OSError):
        where = exc.filename if exc.filename is not None else "I/O"
        return "E_IO", "%s: %s" % (where, exc.strerror or exc)
    return "E_INTERNAL", "unexpected %s: %s (a bug: PPMID_DEBUG=1 shows where)" % (type(exc).__name__, exc)


def build_parser():
    parser = Parser(prog="ppmid", description="PPMID gateway host tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv=None):
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C, also while a command's module loads or parses: no traceback
        return 130


def _main(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    name = argv[0]
    if name not in COMMANDS:
        parser.print_usage(sys.stderr)
        print("ppmid: E_USAGE: unknown command %r (try ppmid --help)" % name, file=sys.stderr)
        return 2
    module_name, help_text = COMMANDS[name]
    # Firmware modules (ppmid.*) are imported by many commands, some only deep inside a
    # function: put firmware/ on the path for every command here, once, rather than rely on
    # each command's import chain to have done it.
    from host_tools import mpcompat
    mpcompat.install()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            print("ppmid: E_UNAVAILABLE: command %r is not available in this build" % name, file=sys.stderr)
        else:  # a dependency of this command only (the others still run)
            print("ppmid: E_UNAVAILABLE: command %r needs the Python module %r, which is not installed "
                  "(make setup installs it)" % (name, exc.name), file=sys.stderr)
        return 1
    sub = Parser(prog="ppmid " + name, description=help_text)
    module.add_arguments(sub)
    # Intermixed where argparse allows it: options may follow positionals
    # (`ppmid board wifi --state-dir D down`); it refuses parsers with optional positionals.
    try:
        args = sub.parse_intermixed_args(argv[1:])
    except TypeError:
        args = sub.parse_args(argv[1:])
    try:
        return module.run(args) or 0
    except (CliError, ToolError) as exc:
        print("ppmid: %s" % error_line(exc), file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one clear line, no traceback
        if os.environ.get("PPMID_DEBUG"):
            import traceback
            traceback.print_exc()
        try:
            line = "%s: %s" % describe(exc)
        except Exception:  # noqa: BLE001 - describing must not be what crashes
            line = "E_INTERNAL: unexpected %s (a bug: PPMID_DEBUG=1 shows where)" % type(exc).__name__
        print("ppmid: %s" % line, file=sys.stderr)
        return 3


if __name__ == "__main__":
    # Run through the package module so that command modules and this entry point share
    # one CliError class (as `python -m host_tools.cli` would otherwise load a second copy).
    from host_tools.cli import main as package_main

    sys.exit(package_main())
