"""``tiers bench --plot``: the bench rows drawn as one chart (matplotlib, imported only here).

Three panels over the value size, log-log, one colour per store and one line style per
operation: get latency (hits and misses), set latency, and throughput in bytes per second. A
latency line is the median (p50); the band over it reaches the p99. The file is written whole
or not at all (temporary file, rename).
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from .._version import __version__
from ._errors import USAGE, CLIError

NEEDS_MATPLOTLIB = 'tiers bench --plot needs matplotlib: pip install "tiers[plot]"'
FORMATS = ("png", "svg", "pdf")
WIDTH, HEIGHT, DPI = 1600, 900, 150
"""Pixels of a PNG at `DPI`."""
BAND_ALPHA = 0.16
STYLES = {"get-hit": ("-", "o"), "get-miss": ("--", "x"), "set": ("-.", "s")}
"""Line and marker of each operation, the same in every panel."""

Row = Mapping[str, Any]


def target(text: str) -> Path:
    """Where ``--plot`` asks the chart to go, checked before any measuring: matplotlib is
    installed, the name ends in a format it writes, its directory exists."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CLIError(NEEDS_MATPLOTLIB) from None
    path = Path(text)
    if path.suffix.lower().lstrip(".") not in FORMATS:
        raise CLIError(f"--plot {text!r}: name a .png, .svg or .pdf file, e.g. bench.png", USAGE)
    if path.is_dir():
        raise CLIError(f"--plot {text!r} is a directory: name a file in it, e.g. bench.png", USAGE)
    parent = path.parent
    if not parent.is_dir():
        raise CLIError(f"--plot {text!r}: there is no directory {str(parent)!r}; make it", USAGE)
    return path


def write(path: Path, rows: Sequence[Row]) -> None:
    """Draw `rows` (``tiers bench`` rows) into `path`, replacing it atomically."""
    figure = draw(rows)
    kind = path.suffix.lower().lstrip(".")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            figure.savefig(file, format=kind, dpi=DPI)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600 would hide it from others
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def draw(rows: Sequence[Row]) -> Any:
    """The chart of `rows` as a matplotlib `Figure` (Agg canvas; pyplot is never imported)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    stores = list(dict.fromkeys(str(row["store"]) for row in rows))
    sizes = sorted({int(row["size"]) for row in rows})
    figure = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    get_axes, set_axes, rate_axes = figure.subplots(1, 3)
    for index, store in enumerate(stores):
        color = f"C{index % 10}"
        mine = [row for row in rows if row["store"] == store]
        _latency(get_axes, _series(mine, "get-hit"), color, STYLES["get-hit"])
        _latency(get_axes, _series(mine, "get-miss"), color, STYLES["get-miss"])
        _latency(set_axes, _series(mine, "set"), color, STYLES["set"])
        _throughput(rate_axes, _series(mine, "get-hit"), color, STYLES["get-hit"])
        _throughput(rate_axes, _series(mine, "set"), color, STYLES["set"])
    get_axes.set_title("get latency: hits and misses")
    set_axes.set_title("set latency")
    rate_axes.set_title("throughput: value bytes \u00d7 ops/s")
    for axes in (get_axes, set_axes):
        axes.set_ylabel("time per operation (line p50, band to p99)")
        _log_axis(axes, _duration)
    rate_axes.set_ylabel("bytes per second")
    _log_axis(rate_axes, _rate)
    for axes in (get_axes, set_axes, rate_axes):
        _size_axis(axes, sizes)
        axes.grid(True, which="major", alpha=0.3)
        axes.set_axisbelow(True)
    swatches = [Line2D([], [], color=f"C{i % 10}", lw=3, label=s) for i, s in enumerate(stores)]
    kinds = [
        Line2D([], [], color="0.3", ls=line, marker=marker, ms=5, label=op.replace("-", " "))
        for op, (line, marker) in STYLES.items()
    ]
    band = Patch(color="0.4", alpha=BAND_ALPHA * 2, label="p50 to p99")
    handles = [*swatches, *kinds, band]
    figure.legend(
        handles=handles,
        loc="outside lower center",
        ncol=len(handles) if len(handles) <= 9 else math.ceil(len(handles) / 2),
        frameon=False,
    )
    figure.suptitle(
        'tiers bench: random bytes through tiers.Cache(serializer="raw"), by value size\n'
        + _machine(),
        fontsize=11,
    )
    return figure


def _series(rows: Sequence[Row], op: str) -> list[Row]:
    return sorted((row for row in rows if row["op"] == op), key=lambda row: int(row["size"]))


def _latency(axes: Any, series: list[Row], color: str, style: tuple[str, str]) -> None:
    line, marker = style
    if not series:
        return
    x = [row["size"] for row in series]
    p50 = [row["p50"] for row in series]
    p99 = [row["p99"] for row in series]
    axes.fill_between(x, p50, p99, color=color, alpha=BAND_ALPHA, lw=0)
    axes.plot(x, p99, color=color, ls=line, lw=0.7, alpha=0.45)
    axes.plot(x, p50, color=color, ls=line, lw=1.8, marker=marker, ms=5)


def _throughput(axes: Any, series: list[Row], color: str, style: tuple[str, str]) -> None:
    line, marker = style
    points = [(row["size"], row["mb_per_s"]) for row in series if row.get("mb_per_s")]
    if points:
        x, y = zip(*points, strict=True)
        axes.plot(x, y, color=color, ls=line, lw=1.8, marker=marker, ms=5)


def _size_axis(axes: Any, sizes: list[int]) -> None:
    """Log x axis with a tick at each measured size, labelled like ``64 kB``."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    axes.set_xscale("log")
    axes.xaxis.set_major_locator(FixedLocator(sizes))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: _size(value)))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_xlim(sizes[0] / 1.6, sizes[-1] * 1.6)
    axes.set_xlabel("value size")


def _log_axis(axes: Any, text: Callable[[float], str]) -> None:
    """Log y scale over at least one whole decade (so a major tick shows), labelled by `text`."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axes.set_yscale("log")
    low, high = axes.get_ylim()
    if low > 0 and high / low < 10:
        axes.set_ylim(10 ** math.floor(math.log10(low)), 10 ** math.ceil(math.log10(high)))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: text(value)))
    axes.yaxis.set_minor_formatter(NullFormatter())


def _duration(seconds: float) -> str:
    """``250 ns``, ``4 µs``, ``12 ms``, ``2 s``."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:g} {unit}"
    return f"{seconds * 1e9:g} ns"


def _rate(megabytes: float) -> str:
    """MB/s as ``500 kB/s``, ``20 MB/s``, ``3 GB/s``."""
    return _size(megabytes * 1e6) + "/s"


def _size(value: float) -> str:
    """``1 kB``, ``64 kB``, ``10 MB`` (powers of 1000, as sizes are given)."""
    for unit, scale in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} B"


def _machine() -> str:
    """What ran it: tiers, Python, system, CPUs, date."""
    system = f"{platform.system()} {platform.machine()}".strip()
    return (
        f"tiers {__version__}, Python {platform.python_version()}, {system}, "
        f"{os.cpu_count() or '?'} CPUs, {date.today().isoformat()}"
    )


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
