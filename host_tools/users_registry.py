"""What this host last gave each gateway as its `users` section: STATE_DIR/keys/EUI.users.json,
{"sequence": N, "users": {...}}, written by `ppmid provision` and by every applied
`ppmid users push` (host_tools/users_update.py), read by them and by the signing tools,
which must know whether a DCC User signs with an envelope key or a P-256 key. A module of
its own so that mqtt_tools can read it without importing the users update (which imports
mqtt_tools)."""
from host_tools import signed_registry
from host_tools.errors import ToolError


class UsersUpdateError(ToolError):
    code = "E_USERS_UPDATE"


def registry_path(state_dir, eui):
    return signed_registry.path(state_dir, eui, "users")


def read_registry(state_dir, eui):
    """{"sequence", "users"} last given to the gateway, or a sequence-0 empty one."""
    path = registry_path(state_dir, eui)
    reg = signed_registry.read(path, UsersUpdateError,
                               {"sequence": 0, "users": {"keys": {}, "roles": {}, "legacy_key": True}})
    if not isinstance(reg, dict) or not isinstance(reg.get("sequence"), int) or not isinstance(reg.get("users"), dict):
        raise UsersUpdateError("%s is not a users registry ({\"sequence\", \"users\"})" % path)
    return reg


def write_registry(state_dir, eui, sequence, users):
    signed_registry.write(registry_path(state_dir, eui), {"sequence": sequence, "users": users})
