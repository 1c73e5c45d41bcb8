"""host_tools' shape: its modules import one another without a cycle (library modules
below the commands, never the other way round), every board-side script compiles with
mpy-cross, and the libraries' errors are not the command line's."""
import ast
import os
import subprocess

import pytest

from host_tools import board_scripts, boards

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_DIR = os.path.join(ROOT, "host_tools")


def module_files():
    """{module name: path} for every host_tools module, board-side scripts excluded (they
    run under MicroPython and import only the firmware)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(PACKAGE_DIR):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for f in sorted(filenames):
            if not f.endswith(".py"):
                continue
            path = os.path.join(dirpath, f)
            parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join(parts)
            if name.startswith("host_tools.board_scripts."):
                continue
            out[name] = path
    return out


def imports_of(name, path, known):
    """The host_tools modules `name` imports, at any depth in the file (a lazy import in a
    function is still an edge: it runs whenever the function does)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[:len(up) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod when there is one
            targets = [base + "." + a.name if base + "." + a.name in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def import_graph():
    files = module_files()
    return {name: imports_of(name, path, files) for name, path in files.items()}


def find_cycle(graph):
    """One import cycle as a list of module names, or None."""
    state = {}
    stack = []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == "open":
                return stack[stack.index(m):] + [m]
            if m not in state:
                cycle = visit(m)
                if cycle:
                    return cycle
        stack.pop()
        state[n] = "done"
        return None

    for n in sorted(graph):
        if n not in state:
            cycle = visit(n)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_the_modules_and_their_imports():
    graph = import_graph()
    for name in ("host_tools.boards", "host_tools.deploy", "host_tools.provision", "host_tools.emuboard",
                 "host_tools.cmd_deploy", "host_tools.ncp_emulator", "host_tools.pn532_emulator.chip"):
        assert name in graph, name
    assert "host_tools.deploy" in graph["host_tools.cmd_deploy"]
    assert "host_tools.boards" in graph["host_tools.deploy"]
    assert "host_tools.pn532_emulator.wire" in graph["host_tools.pn532_emulator.chip"]  # absolute form
    assert "host_tools.ncp_emulator.ch" in graph["host_tools.ncp_emulator.emulator"]  # relative form


def test_no_import_cycle_in_host_tools():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_libraries_do_not_import_the_commands():
    """The command modules sit on top: only cli (which runs them) imports a cmd_* module."""
    graph = import_graph()
    for name, deps in graph.items():
        if name.rpartition(".")[2].startswith("cmd_") or name == "host_tools.cli":
            continue
        commands = sorted(d for d in deps if d.rpartition(".")[2].startswith("cmd_"))
        assert not commands, "%s imports %s" % (name, commands)


def test_library_errors_are_not_cli_errors():
    from host_tools import cli, deploy, errors, flash, provision
    for exc in (boards.BoardError, deploy.DeployError, provision.ProvisionError, flash.FlashError):
        assert issubclass(exc, errors.ToolError) and not issubclass(exc, cli.CliError), exc
    codes = [e.code for e in (boards.BoardError, deploy.DeployError, provision.ProvisionError, flash.FlashError)]
    assert len(set(codes)) == len(codes) and all(c.startswith("E_") for c in codes)


@pytest.mark.parametrize("name", board_scripts.names())
def test_board_script_compiles_with_mpy_cross(name, tmp_path):
    out = tmp_path / (name[:-3] + ".mpy")
    p = subprocess.run([boards.mpy_cross_binary(), "-o", str(out), board_scripts.path(name)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr or p.stdout
    assert out.stat().st_size > 0


def test_the_board_scripts_are_all_there():
    assert {"rom.py", "deploy_probe.py", "deploy_hash.py", "deploy_install.py", "provision_steps.py",
            "mqtt_gateway.py", "nfc_scenario.py", "journal_wipe.py"} <= set(board_scripts.names())
