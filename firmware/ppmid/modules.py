# Dropping modules nobody needs any more (boot-only code, a rare order's handler, a table
# used once), so that their code is collected: the one place for it. Loaded when first
# used and dropped again by those who used it (boot.BOOT_ONLY, users_update,
# commission_order, zigbee/commission.py, update/service.py, the image slots of the
# boards, and the modules whose error sentences live apart: sentence()): kept in the ppmid package or loaded with the app it
# cost 0.3-0.4 KB of the 32-bit heap at "app ready" (docs/memory.md).
import sys


def unload(*names, under=True):
    """Drop each named module and the modules under it: out of sys.modules and off the
    parent package (an import binds a submodule there too, which would keep it alive).
    Whatever imports one later gets it loaded again. under=False drops a package alone,
    leaving the modules under it to whoever still uses them. Naming ppmid.modules itself
    is safe: this call ends normally, and the module goes once nothing refers to it. It
    does not collect: a caller that wants the memory back at once calls gc.collect() after."""
    for name in names:
        for mod in list(sys.modules):
            if mod == name or under and mod.startswith(name + "."):
                del sys.modules[mod]
                parent, _, leaf = mod.rpartition(".")
                parent = sys.modules.get(parent)
                if parent is not None and getattr(parent, leaf, None) is not None:
                    delattr(parent, leaf)


def drop_since(before):
    """Drop every module loaded since `before` (the names of sys.modules, taken just before
    a step that imports for itself, e.g. a config check while the app runs): the step leaves
    loaded exactly what was loaded before it. A module the app already held (on a
    commissioning gateway, ppmid.zigbee.commission) is in `before` and stays; this module
    goes too when the step loaded it. Does not collect (see unload)."""
    unload(*[m for m in sys.modules if m not in before], under=False)


def sentence(name, key, arg=None):
    """Sentence `key` (a module's private _S_... number) of the sentences module `name`,
    formatted with arg: its SENTENCES list, or its own sentence(key, arg) where a sentence
    needs more than one format. The module is loaded for it and dropped again, with this
    one: a sentence kept as a str constant costs heap as long as its module is loaded
    (docs/memory.md), and these are said only when something fails."""
    m = __import__(name, None, None, ["SENTENCES"])
    say = getattr(m, "sentence", None)
    if say is not None:
        text = say(key, arg)
    else:
        text = m.SENTENCES[key] if arg is None else m.SENTENCES[key] % arg
    unload(name, "ppmid.modules")
    return text
