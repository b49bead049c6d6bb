"""What the numbers were measured on: machine, filesystem and library versions."""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

LIBRARIES = (
    "tiers", "diskcache", "cachetools", "cachebox", "xxhash", "joblib", "cachier",
    "numpy", "pandas", "redis", "obstore",
)  # fmt: skip


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def filesystem(path: str) -> str:
    """The filesystem type of `path`, as ``df -T`` reports it."""
    df = shutil.which("df")
    if df is None:
        return "unknown"
    try:
        out = subprocess.run(
            [df, "-T", path], capture_output=True, text=True, check=True, timeout=10
        ).stdout
        return out.splitlines()[1].split()[1]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def machine() -> str:
    temp = tempfile.gettempdir()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpu_model()}, {os.cpu_count()} cores ({usable} usable), "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, temp dir {temp} on {filesystem(temp)}, "
        f"load average {load()}"
    )


def cpu_seconds() -> tuple[float, float]:
    """(seconds all CPUs were busy since boot, CPU seconds of this process's finished children).

    Sampled around a comparison, the difference is the CPU time *other* work took meanwhile
    (other users, test suites, the hypervisor's steal), which skews that comparison.
    """
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    mine = children.ru_utime + children.ru_stime
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, mine
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK"), mine


def load() -> str:
    """The 1-minute load average: other work on the machine skews the numbers."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "unknown"


def source() -> str:
    """The tiers source measured: the git commit and how many files under src/ differ from it."""
    git = shutil.which("git")
    root = Path(__file__).resolve().parent.parent
    if git is None or not (root / ".git").exists():
        return "tiers source: unknown"
    try:
        head = _git(git, root, "rev-parse", "--short", "HEAD").strip()
        changed = _git(git, root, "status", "--porcelain", "--", "src").splitlines()
    except (OSError, subprocess.SubprocessError):
        return "tiers source: unknown"
    dirty = f" + {len(changed)} changed files in src/" if changed else ""
    return f"tiers source: git {head}{dirty}"


def _git(git: str, root: Path, *args: str) -> str:
    return subprocess.run(
        [git, "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout


def versions() -> str:
    found = []
    for name in LIBRARIES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found) + f"; {source()}"
