# One check for every firmware module whose error sentences live apart, in a sentences
# module loaded only to say one (ppmid.modules.sentence; docs/memory.md): the module's
# private `_S_X = const(i)` keys and the sentences module's `# i _S_X` comments agree, the
# list holds as many sentences, and every key is used. It reads the sources, so its tests
# run it under CPython only (the sentences themselves are checked on both interpreters).


def check_keys(sources, errors, prefix="_S_", extra=0):
    """sources: the modules naming the keys; errors: their sentences module; prefix: a
    regular expression for the keys' prefix; extra: entries the module lists besides
    SENTENCES (gbcs.message_errors' FIELDS)."""
    import re
    src = "".join(open(m.__file__).read() for m in sources)
    names = dict((k, int(v)) for k, v in re.findall(r"^(%s\w+) = const\((\d+)\)" % prefix, src, re.M))
    listed = dict((k, int(v)) for v, k in re.findall(r"# (\d+) (%s\w+)" % prefix, open(errors.__file__).read()))
    assert names == listed and len(listed) == len(errors.SENTENCES) + extra, (names, listed)
    used = set(re.findall(r"\b(%s\w+)\b(?! = const)" % prefix, src))
    assert used == set(names), set(names) ^ used  # none unused, none undefined
