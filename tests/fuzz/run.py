"""Run every atheris target (tests/fuzz/fuzz_*.py) for a bounded time; exit 1 on any crash.

    .venv/bin/python tests/fuzz/run.py --seconds 300            # each target, 2 at a time
    .venv/bin/python tests/fuzz/run.py --seconds 10 --targets codec,lock
    .venv/bin/python tests/fuzz/run.py --write-seeds            # tests/fuzz/corpus/ from the cases

Each target starts from its committed seeds (tests/fuzz/corpus/<target>/, never written to)
and a working corpus of its own under ``--work`` (a new temporary directory by default). A
crash, a hang (``-timeout``) or unbounded memory (``-rss_limit_mb``) leaves an input in the
work directory; ``--save-regressions`` copies each, without the byte that picks the case, to
tests/fuzz/regressions/<case>/, which tests/test_fuzz_decoders.py replays on every run.
A summary (executions, corpus, crashes per target) is printed and written to summary.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from tests._fuzz_cases import (  # noqa: E402
    CASES,
    TARGETS,
    Unavailable,
    hostile_documents,
    target_input,
)

CORPUS = HERE / "corpus"
REGRESSIONS = HERE / "regressions"
_FLAGS = ("-timeout=10", "-rss_limit_mb=1024", "-max_len=8192", "-print_final_stats=1")
_EXECUTED = re.compile(rb"stat::number_of_executed_units:\s*(\d+)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="fuzzing time per target")
    parser.add_argument("--jobs", type=int, default=2, help="targets run at once")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated names")
    parser.add_argument("--work", type=Path, help="where working corpora and crashes go")
    parser.add_argument("--save-regressions", action="store_true")
    parser.add_argument("--write-seeds", action="store_true", help="(re)write the seed corpus")
    args = parser.parse_args(argv)
    if args.write_seeds:
        write_seeds()
        return 0
    targets = [name for name in args.targets.split(",") if name]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; there are {sorted(TARGETS)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="tiers-fuzz-"))
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        results = list(pool.map(lambda t: run_target(t, args.seconds, work), targets))
    summary = {result["target"]: result for result in results}
    (work / "summary.json").write_text(json.dumps(summary, indent=2))
    for result in results:
        crashes = ", ".join(result["crashes"]) or "none"
        sys.stdout.write(
            f"{result['target']:16} {result['executions']:>12,} executions "
            f"{result['seconds']:>6.1f} s  corpus {result['corpus']:>4}  "
            f"exit {result['returncode']}  crashes: {crashes}\n"
        )
        if args.save_regressions:
            for crash in result["crashes"]:
                sys.stdout.write(f"  saved as {save_regression(result['target'], Path(crash))}\n")
    sys.stdout.write(f"work directory: {work}\n")
    failed = [r["target"] for r in results if r["crashes"] or r["returncode"] != 0]
    return 1 if failed else 0


def run_target(target: str, seconds: int, work: Path) -> dict[str, Any]:
    """Fuzz `target` for `seconds` in a process of its own (killed if it overruns)."""
    corpus = work / target / "corpus"
    artifacts = work / target / "artifacts"
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    seeds = CORPUS / target
    command = [
        sys.executable, str(HERE / f"fuzz_{target}.py"), f"-max_total_time={seconds}",
        f"-artifact_prefix={artifacts}/", *_FLAGS, str(corpus),
        *([str(seeds)] if seeds.is_dir() else []),
    ]  # fmt: skip
    started = time.monotonic()
    with (work / target / "log.txt").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
        try:
            returncode = process.wait(timeout=seconds + 120)
        except subprocess.TimeoutExpired:  # a hang libFuzzer's own timeout did not catch
            os.killpg(process.pid, signal.SIGKILL)
            returncode = process.wait()
    output = (work / target / "log.txt").read_bytes()
    executed = _EXECUTED.findall(output)
    return {
        "target": target,
        "returncode": returncode,
        "executions": int(executed[-1]) if executed else 0,
        "seconds": round(time.monotonic() - started, 1),
        "corpus": sum(1 for _ in corpus.iterdir()),
        "crashes": sorted(str(path) for path in artifacts.iterdir()),
        "log": str(work / target / "log.txt"),
    }


def save_regression(target: str, artifact: Path) -> Path:
    """Copy a crash input of `target` into regressions/<case>/ (the case byte dropped)."""
    data = artifact.read_bytes()
    cases = TARGETS[target]
    case = cases[data[0] % len(cases)] if data else cases[0]
    body = data[1:]
    folder = REGRESSIONS / case.name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / hashlib.sha1(body, usedforsecurity=False).hexdigest()[:16]
    path.write_bytes(body)
    return path


def write_seeds() -> None:
    """Seeds of each case: its valid input, and its hostile inputs (planted documents
    included) of up to 8 KiB."""
    for case in CASES:
        folder = CORPUS / case.target
        folder.mkdir(parents=True, exist_ok=True)
        try:
            inputs = [("valid", case.valid())]
        except Unavailable:
            continue
        hostile = list(case.hostile())
        if case.embed is not None:
            hostile += [(f"doc {label}", case.embed(doc)) for label, doc in hostile_documents()]
        inputs += [(label, data) for label, data in hostile if len(data) <= 8192]
        for label, data in inputs:
            slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
            (folder / f"{case.name}--{slug}").write_bytes(target_input(case, data))
    sys.stdout.write(f"seeds written to {CORPUS}\n")


if __name__ == "__main__":
    sys.exit(main())
