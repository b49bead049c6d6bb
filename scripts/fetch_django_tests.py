"""Fetch Django's own cache tests (``tests/cache/`` of the pinned Django's sdist) for
tests/test_django_backend.py, into a git-ignored directory: ``.cache/django-tests/``.

    python scripts/fetch_django_tests.py [--dest DIR]

The version is the one the dev extra pins in pyproject.toml (``Django==X``). The sdist comes
from PyPI's simple index (``$PIP_INDEX_URL`` if set), checked against the index's SHA-256;
``pip download`` is the fallback. Idempotent: nothing is fetched when ``DEST/VERSION`` already
names the pinned version. Only ``tests/cache/`` is extracted (it imports nothing else of
Django's test suite): ``DEST/cache/`` is then importable as the package ``cache``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEST = ROOT / ".cache" / "django-tests"
INDEX = "https://pypi.org/simple"
_SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"


def pinned_version(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """The Django version the dev extra pins (``"Django==5.2.x"``)."""
    found = re.search(r'"Django==([0-9][0-9A-Za-z.]*)"', pyproject.read_text("utf-8"))
    if found is None:
        raise SystemExit(f"no Django==X pin in {pyproject}")
    return found.group(1)


def fetch(version: str, dest: Path) -> bool:
    """Make `dest` hold Django `version`'s tests/cache/; False if it already did."""
    marker = dest / "VERSION"
    done = marker.is_file() and marker.read_text().strip() == version
    if done and (dest / "cache" / "tests.py").is_file():
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".django-tests-") as work:
        sdist = download(version, Path(work))
        staged = Path(work) / "staged"
        extract_cache_tests(sdist, staged)
        (staged / "VERSION").write_text(version + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        staged.rename(dest)
    return True


def download(version: str, into: Path) -> Path:
    """The sdist of Django `version`, downloaded into `into`."""
    try:
        return _from_index(version, into)
    except (OSError, ValueError, KeyError) as exc:  # (URLError is an OSError)
        print(f"the simple index failed ({exc}); trying pip download", file=sys.stderr)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
         "--no-binary", ":all:", f"Django=={version}", "-d", str(into)],
        check=True,
    )  # fmt: skip
    found = sorted(into.glob("[Dd]jango-*.tar.gz"))
    if not found:
        raise SystemExit(f"pip download left no Django sdist in {into}")
    return found[0]


def _from_index(version: str, into: Path) -> Path:
    """Download the sdist through the simple index's JSON API (PEP 691), hash-checked."""
    index = os.environ.get("PIP_INDEX_URL", INDEX).rstrip("/")
    if not index.startswith(("https://", "http://")):
        raise ValueError(f"not an http(s) index: {index}")
    request = urllib.request.Request(f"{index}/django/", headers={"Accept": _SIMPLE_JSON})  # noqa: S310
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
        files = json.load(response)["files"]
    name = f"django-{version}.tar.gz"
    entry = next((f for f in files if f["filename"].lower() == name), None)
    if entry is None:
        raise ValueError(f"{name} is not on {index}")
    path = into / name
    digest = hashlib.sha256()
    with urllib.request.urlopen(entry["url"], timeout=120) as response, path.open("wb") as out:  # noqa: S310
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    expected = entry["hashes"]["sha256"]
    if digest.hexdigest() != expected:
        raise ValueError(f"{name}: SHA-256 {digest.hexdigest()} is not the index's {expected}")
    return path


def extract_cache_tests(sdist: Path, staged: Path) -> None:
    """Extract ``<top>/tests/cache/**`` of `sdist` to ``staged/cache/``."""
    with tarfile.open(sdist, "r:gz") as archive:
        members = []
        for member in archive.getmembers():
            parts = Path(member.name).parts
            inside = len(parts) > 3 and parts[1:3] == ("tests", "cache") and ".." not in parts
            if inside and member.isfile():
                member.name = str(Path("cache", *parts[3:]))
                members.append(member)
        if not any(m.name == "cache/tests.py" for m in members):
            raise SystemExit(f"{sdist.name} has no tests/cache/tests.py")
        staged.mkdir()
        if hasattr(tarfile, "data_filter"):
            archive.extractall(staged, members=members, filter="data")
        else:  # (Python < 3.10.12: the names were checked above, regular files only)
            archive.extractall(staged, members=members)  # noqa: S202


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    parser.add_argument("--version", default=None, help="default: the dev extra's pin")
    args = parser.parse_args(argv)
    version = args.version or pinned_version()
    if fetch(version, args.dest):
        print(f"Django {version}'s cache tests are in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
