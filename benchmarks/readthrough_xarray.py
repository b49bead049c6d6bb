"""Read-through caching under a real client: xarray (h5netcdf engine) reading a zlib-chunked
NetCDF4 file through obspec-utils' `BlockStoreReader`, over `tiers.CachingReadableStore`
against obspec-utils 0.9's `CachingReadableStore` (informational rows: no target covers them).

The origin is deterministic: an obstore `MemoryStore` behind the tests' `TracingStore`, made
to cost what S3 costs: 20 ms per request plus the body at 100 MB/s (one stream). The file is
the tests' NetCDF file (tests/_science_files.py) with 100 time steps: float32 100x200x200 in
1x50x50 zlib chunks, about 13 MB.

- cold: a fresh cache per read, open + load every variable;
- warm: a second open + load on a cache that already holds the file (obspec-utils still sends
  a HEAD per open; ours answers from the cache);
- one chunk: a cold open reading one 50x50 chunk, ours with ``block_size=64 KiB`` (fetches
  the covering blocks only) against obspec-utils (always the whole object).

Each row's note gives the origin requests and bytes of one run of each side.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ._harness import KIB, Row, Settings, measure, progress, scratch, speedup

PATH = "sample.nc"
LATENCY = 0.02  # seconds per origin request
BANDWIDTH = 100e6  # origin body bytes per second
TIME_STEPS = 100  # of 200x200 float32: a ~13 MB file
BLOCK = 64 * KIB
TIERS = "tiers CachingReadableStore"
PEER = "obspec-utils CachingReadableStore"


def _read_all(store: Any) -> None:
    import xarray as xr
    from obspec_utils.readers import BlockStoreReader

    with BlockStoreReader(store, PATH) as reader, xr.open_dataset(reader, engine="h5netcdf") as ds:
        ds.load()


def _read_chunk(store: Any) -> None:
    import xarray as xr
    from obspec_utils.readers import BlockStoreReader

    with (
        BlockStoreReader(store, PATH, block_size=BLOCK) as reader,
        xr.open_dataset(reader, engine="h5netcdf") as ds,
    ):
        ds["temperature"][0, :50, :50].load()


def xarray_netcdf(settings: Settings) -> list[Row]:
    """xarray + h5netcdf + BlockStoreReader through each cache: cold, warm and one chunk."""
    from obspec_utils.wrappers import CachingReadableStore as Peer
    from obstore.store import MemoryStore

    import tiers
    from tests._origin import TracingStore
    from tests._science_files import netcdf_bytes

    class Remote(TracingStore):
        """`TracingStore`'s per-request latency, plus each body's transfer time (sync reads:
        the readers here are file-like, so every fetch is a blocking call)."""

        def _count_bytes(self, size: int) -> None:
            super()._count_bytes(size)
            time.sleep(size / BANDWIDTH)

    with scratch() as root:
        data, _ = netcdf_bytes(root, time=TIME_STEPS)
    memory = MemoryStore()
    memory.put(PATH, data)

    def origin() -> TracingStore:
        return Remote(memory, latency=LATENCY)

    makers: dict[str, Callable[[TracingStore], Any]] = {
        "tiers": tiers.CachingReadableStore,
        "peer": Peer,
        "tiers-blocks": lambda o: tiers.CachingReadableStore(o, block_size=BLOCK),
    }
    warm_origins = {name: origin() for name in ("tiers", "peer")}
    warm_stores = {name: makers[name](warm_origins[name]) for name in warm_origins}
    for store in warm_stores.values():
        _read_all(store)

    def cold(name: str, read: Callable[[Any], None]) -> Callable[[], None]:
        return lambda: read(makers[name](origin()))

    def warm(name: str) -> Callable[[], None]:
        return lambda: _read_all(warm_stores[name])

    notes: dict[str, str] = {}
    for label, name, read in (
        ("cold", "tiers", _read_all),
        ("cold", "peer", _read_all),
        ("chunk", "tiers-blocks", _read_chunk),
        ("chunk", "peer", _read_chunk),
    ):
        counting = origin()
        read(makers[name](counting))
        notes[f"{label} {name}"] = _counts(counting)
    for name, store in warm_stores.items():
        before = _snapshot(warm_origins[name])
        _read_all(store)
        notes[f"warm {name}"] = _counts(warm_origins[name], before)

    progress(f"xarray, a {len(data) / KIB:.0f} KiB NetCDF file, {LATENCY * 1e3:.0f} ms/request")
    ops = measure(
        {
            "cold tiers": cold("tiers", _read_all),
            "cold peer": cold("peer", _read_all),
            "warm tiers": warm("tiers"),
            "warm peer": warm("peer"),
            "chunk tiers": cold("tiers-blocks", _read_chunk),
            "chunk peer": cold("peer", _read_chunk),
        },
        1,
        settings,
    )
    rows = []
    for label, what, subject in (
        ("cold", "xarray NetCDF open + load all, cold (reads/s)", TIERS),
        ("warm", "xarray NetCDF open + load all, warm (reads/s)", TIERS),
        ("chunk", "xarray NetCDF one chunk, cold (reads/s)", f"{TIERS}(block_size=64 KiB)"),
    ):
        ours = "tiers-blocks" if label == "chunk" else "tiers"
        mine, peer, spread = ops.pair(f"{label} tiers", f"{label} peer")
        note = f"origin: tiers {notes[f'{label} {ours}']}; obspec-utils {notes[f'{label} peer']}"
        rows.append(speedup(what, (subject, mine), (PEER, peer), spread=spread, note=note))
    return rows


def _snapshot(origin: Any) -> tuple[dict[str, int], int]:
    return dict(origin.requests), origin.bytes_fetched


def _counts(origin: Any, before: tuple[dict[str, int], int] = ({}, 0)) -> str:
    """'1 get, 1 head; 1445 KiB': the origin requests and bytes since `before`."""
    asked = {
        name: n - before[0].get(name, 0)
        for name, n in sorted(origin.requests.items())
        if n - before[0].get(name, 0)
    }
    text = ", ".join(f"{n} {name}" for name, n in asked.items()) or "no requests"
    return f"{text}; {(origin.bytes_fetched - before[1]) / KIB:.0f} KiB"
