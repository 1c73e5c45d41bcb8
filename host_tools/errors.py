"""The base of every error the host_tools libraries raise for a user to read.

A library error carries a stable `code` (one per library) and a sentence. The `ppmid`
command prints it as `ppmid: <sentence>` and exits 1, as it does for a command's own
CliError; the libraries themselves know nothing of the command line.
"""


class ToolError(Exception):
    """A problem a user can act on (an unknown board, a port that is not a REPL...)."""

    code = "E_TOOL"

    def __init__(self, message):
        super().__init__(message)
        self.message = message
