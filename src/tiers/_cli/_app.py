"""Argument parsing, dispatch and error handling for the ``tiers`` command."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .._version import __version__
from ..errors import TiersError
from . import _demo
from ._errors import USAGE, CLIError
from ._output import FORMATS, Output

NEEDS_RICH = 'tiers: the command line needs rich: pip install "tiers[cli]"'


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        _say_error(f"{message} (see '{self.prog} --help')")
        raise SystemExit(USAGE)


class Common:
    """Option groups commands share (each an argparse parent)."""

    def __init__(self) -> None:
        self.store = argparse.ArgumentParser(add_help=False)
        self.store.add_argument(
            "--secret",
            metavar="SECRET",
            help="the entries' signing secret (default: $TIERS_SECRET, else this user's key file)",
        )
        self.output = argparse.ArgumentParser(add_help=False)
        self.output.add_argument(
            "--format",
            choices=FORMATS,
            default="table",
            help="table (default; plain text when not a terminal), json or csv",
        )
        self.output.add_argument(
            "--no-progress", action="store_true", help="no progress bar even on a terminal"
        )
        self.destructive = argparse.ArgumentParser(add_help=False)
        self.destructive.add_argument(
            "--dry-run",
            action="store_true",
            help="print what would be removed and the bytes it would free; remove nothing",
        )


def _command_modules() -> list[Any]:
    from . import _bench, _copy, _inspect, _remove, _verify

    return [_inspect, _remove, _verify, _copy, _bench]


def build_parser() -> argparse.ArgumentParser:
    """The ``tiers`` parser: ``--version``, ``--help`` and the commands."""
    parser = _Parser(
        prog="tiers",
        description="tiers: one cache API over memory, disk, folders, Redis and object storage.",
        epilog=(
            "STORE is a path (a DiskStore) or a URL: disk://, folder://, redis://, rediss://, "
            "redis+cluster://, unix://, s3://, gs://, az://, file://. Exit status: 0 ok, 1 error, "
            "2 usage, 3 verify found damage, 4 nothing matched. New here? Run 'tiers demo'."
        ),
    )
    parser.add_argument("--version", action="version", version=f"tiers {__version__}")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="cache an expensive result in memory over disk and read it from a new process",
        description=(
            "Compute an expensive value once with Cache.get_or_set on memory over disk, get it "
            "again from memory, then from disk in a new Python process. No server needed."
        ),
    )
    demo.add_argument(
        "--dir",
        metavar="PATH",
        help="directory of the disk store (kept); default: a new temporary directory",
    )
    demo.add_argument("--keep", action="store_true", help="keep the temporary directory at the end")
    demo.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    demo.set_defaults(run=None)
    common = Common()
    for module in _command_modules():
        module.register(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tiers`` command; returns the exit status (0 ok, 1 failure, 2 usage,
    3 damage found, 4 nothing matched)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command is None:
            parser.error("a command is required, e.g. 'tiers demo'")
        if args.run is not None:
            return _run_command(args)
        if args.child:
            if args.dir is None:
                parser.error("--child needs --dir")
            print(json.dumps(_demo.child(Path(args.dir))))
            return 0
        return _run_demo(args.dir, args.keep)
    except (CLIError, TiersError, OSError, ValueError) as exc:
        if isinstance(exc, BrokenPipeError):  # e.g. `tiers ls S | head`
            _silence_stdout()
            return 0 if args.command != "demo" else 1
        _say_error(_describe(exc))
        return exc.status if isinstance(exc, CLIError) else 1
    except KeyboardInterrupt:
        print("tiers: interrupted", file=sys.stderr)
        return 130


def _run_command(args: argparse.Namespace) -> int:
    """A store command: its output set up from the common options."""
    try:
        import rich  # noqa: F401
    except ImportError:
        print(NEEDS_RICH, file=sys.stderr)
        return 1
    form = getattr(args, "format", "table")
    out = Output(form, progress=False if getattr(args, "no_progress", False) else None)
    status: int = args.run(args, out)
    sys.stdout.flush()
    return status


def _run_demo(directory: str | None, keep: bool) -> int:
    try:
        import rich  # noqa: F401
    except ImportError:
        print(NEEDS_RICH, file=sys.stderr)
        return 1
    from . import _render

    console = _render.make_console()
    path, temporary = _demo.prepare_dir(directory)
    try:
        with _demo.open_cache(path) as cache:
            _render.header(console, path, temporary=temporary, keep=keep)
            result = _demo.run(cache, path)
        _render.result(console, result)
    finally:
        removed = temporary and not keep
        if removed:
            shutil.rmtree(path, ignore_errors=True)
    _render.footer(console, path, removed=removed)
    problem = _demo.check(result)
    if problem:
        raise CLIError(problem)
    return 0


def _describe(exc: BaseException) -> str:
    """One line for an error: ``path: reason`` for OS errors, else the message."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        text = where + exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _say_error(message: str) -> None:
    print(f"tiers: error: {message}", file=sys.stderr)


def _silence_stdout() -> None:
    """After a broken pipe: send what is left of stdout nowhere, so exit is quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
