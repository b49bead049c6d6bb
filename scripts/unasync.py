"""Generate src/tiers/_cache/_sync/*.py from _async/*.py (the orchestration is written once).

Each module of ``_async/`` but ``prims.py`` (hand-written in both packages) and ``__init__.py``
gets a blocking twin in ``_sync/``. Rules, applied to code tokens only (strings and comments
are kept as they are): ``async def/with/for`` lose ``async``; ``await`` is dropped; a name
ending in ``_async`` loses the suffix; and a few names are swapped (see RENAMES). Run
``python scripts/unasync.py`` after editing ``_async/``; ``--check`` exits non-zero when a
generated file is out of date.
"""

from __future__ import annotations

import io
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src/tiers/_cache/_async"
TARGET = ROOT / "src/tiers/_cache/_sync"
HAND_WRITTEN = ("__init__.py", "prims.py")
RENAMES = {
    "AsyncOps": "SyncOps",
    "AsyncSingleFlight": "SyncSingleFlight",
    "AsyncTiering": "SyncTiering",
    "asynccontextmanager": "contextmanager",
    "AsyncIterator": "Iterator",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
}
HEADER = (
    "# Generated from _async/{name} by scripts/unasync.py: do not edit by hand.\n"
    '"""Blocking twin of ``_async/{name}`` (generated; the docstring is there)."""\n'
)


def unasync(source: str, name: str = "operations.py") -> str:
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    lines = source.splitlines(keepends=True)
    edits: list[tuple[int, int, int, str]] = []  # (row, start col, end col, replacement)
    for i, tok in enumerate(tokens):
        if tok.type != tokenize.NAME:
            continue
        (row, col), (_, end) = tok.start, tok.end
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if tok.string == "await" or (
            tok.string == "async" and nxt is not None and nxt.string in ("def", "with", "for")
        ):
            stop = nxt.start[1] if nxt is not None and nxt.start[0] == row else end
            edits.append((row, col, stop, ""))
        elif tok.string in RENAMES:
            edits.append((row, col, end, RENAMES[tok.string]))
        elif tok.string.endswith("_async") and tok.string != "_async":
            edits.append((row, col, end, tok.string[: -len("_async")]))
    for row, start, stop, text in sorted(edits, reverse=True):
        line = lines[row - 1]
        lines[row - 1] = line[:start] + text + line[stop:]
    body = "".join(lines)
    docstring_end = body.index('"""', body.index('"""') + 3) + 3  # replace the module docstring
    return HEADER.format(name=name) + body[docstring_end:].lstrip("\n").join(("\n", ""))


def generated() -> dict[Path, str]:
    """{target path: generated text} for every module of ``_async/`` but the hand-written."""
    return {
        TARGET / source.name: unasync(source.read_text("utf-8"), source.name)
        for source in sorted(SOURCE.glob("*.py"))
        if source.name not in HAND_WRITTEN
    }


def main() -> int:
    files = generated()
    if "--check" in sys.argv:
        stale = [path for path, text in files.items()
                 if not path.exists() or path.read_text("utf-8") != text]  # fmt: skip
        for path in stale:
            print(f"{path} is out of date: run python scripts/unasync.py", file=sys.stderr)
        return 1 if stale else 0
    for path, text in files.items():
        path.write_text(text, "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
