"""atheris target `wire_record`:
the portable record of RedisStore/ObjectStore, `_wire.unpack` (and the signed value in it).

Cases and checks: tests/_fuzz_cases.py. Run every target with tests/fuzz/run.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import atheris

with atheris.instrument_imports(include=["tiers"]):
    from tests._fuzz_cases import import_decoders, run_target_input

    import_decoders()


def one_input(data: bytes) -> None:
    run_target_input("wire_record", data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
