"""Real clients of `tiers.CachingReadableStore` against a real S3 server (moto, in a thread).

Three clients read files these tests generate (tests/_science_files.py) through
``CachingReadableStore(TracingStore(S3Store(...)))``; `TracingStore` counts what reaches S3:

1. obspec-utils' file-like readers (`BlockStoreReader`, `BufferedStoreReader`) under xarray's
   h5netcdf engine, on a zlib-chunked NetCDF4 file;
2. virtualizarr: `HDFParser` -> `ManifestStore` -> xarray's zarr engine (chunks read with
   ``get_range_async``);
3. async-tiff: `TIFF.open` + `fetch_tile` on a tiled, deflate-compressed TIFF (async API only).

Each compares the data with the source arrays exactly and bounds the origin requests and bytes,
cold and warm; the same scenario through obspec-utils' own `CachingReadableStore` shows where
ours asks S3 less: obspec-utils always fetches whole objects (``block_size`` here fetches only
the blocks a read covers) and forwards every ``head`` to the origin (ours answers it from the
cache, so a warm re-open makes no request at all).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tiers
from tests._origin import TracingStore
from tests._science_files import NC_CHUNKS, TIFF_TILE, netcdf_bytes, tiff_bytes

xr = pytest.importorskip("xarray")
pytest.importorskip("h5netcdf")
obstore = pytest.importorskip("obstore")
readers = pytest.importorskip("obspec_utils.readers")
wrappers = pytest.importorskip("obspec_utils.wrappers")
pytest.importorskip("tifffile")

CachingReadableStore = tiers.CachingReadableStore
PeerCachingStore = wrappers.CachingReadableStore  # obspec-utils 0.9's, for comparison

NC = "data/sample.nc"
TIF = "data/image.tif"
BLOCK = 64 * 1024  # our block size, and the file-like reader's, in the block-mode scenarios
# zarr warns that the numcodecs codecs virtualizarr maps HDF5 filters to (zlib, shuffle) are not
# in the Zarr v3 spec; it is about interoperability of the virtual metadata, not about the read.
NUMCODECS_V3 = "ignore:Numcodecs codecs are not in the Zarr version 3 specification:UserWarning"


@dataclass
class Files:
    bucket: str
    options: dict[str, Any]
    nc: bytes
    nc_arrays: dict[str, np.ndarray]
    tif: bytes
    pixels: np.ndarray

    def origin(self) -> TracingStore:
        """A fresh counting origin over the bucket."""
        from obstore.store import S3Store

        return TracingStore(S3Store(self.bucket, **self.options))


@pytest.fixture(scope="module")
def files(moto_s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Files:
    """The NetCDF and TIFF files, generated once and put in a fresh bucket."""
    from obstore.store import S3Store

    nc, arrays = netcdf_bytes(tmp_path_factory.mktemp("science"))
    tif, pixels = tiff_bytes()
    bucket = moto_s3.new_bucket()
    options = moto_s3.store_options()
    s3 = S3Store(bucket, **options)
    obstore.put(s3, NC, nc)
    obstore.put(s3, TIF, tif)
    return Files(bucket, options, nc, arrays, tif, pixels)


@pytest.fixture
def shared_cache(tmp_path: Path) -> Iterator[tiers.Cache]:
    """A disk `tiers.Cache`: the shared next level behind the in-memory cache."""
    cache = tiers.Cache(tmp_path / "next-level")
    yield cache
    cache.close()


def assert_same(ds: Any, arrays: dict[str, np.ndarray]) -> None:
    """Every variable and coordinate of `ds` equals its source array, dtype included."""
    assert set(ds.variables) == set(arrays)
    for name, expected in arrays.items():
        got = ds[name].values
        assert got.dtype == expected.dtype, name
        np.testing.assert_array_equal(got, expected, err_msg=name)


def read_netcdf(store: Any, reader_cls: type, **reader_options: Any) -> dict[str, np.ndarray]:
    """Open the NetCDF file through a file-like reader and xarray's h5netcdf engine; load all."""
    with (
        reader_cls(store, NC, **reader_options) as reader,
        xr.open_dataset(reader, engine="h5netcdf") as ds,
    ):
        return {name: ds[name].values for name in ds.variables}


def requests(origin: TracingStore) -> dict[str, int]:
    return {name: count for name, count in origin.requests.items() if count}


# -- 1. obspec-utils readers + xarray (h5netcdf) ----------------------------------------------


@pytest.mark.parametrize("reader_name", ["BlockStoreReader", "BufferedStoreReader"])
def test_xarray_h5netcdf_whole_object(files: Files, reader_name: str) -> None:
    """Whole-object caching: cold = the object once (one GET) plus at most one HEAD; warm =
    nothing at all. obspec-utils' cache fetches the same GET but sends a HEAD per re-open."""
    reader_cls = getattr(readers, reader_name)
    origin = files.origin()
    with CachingReadableStore(origin) as store:
        cold = read_netcdf(store, reader_cls)
        for name, expected in files.nc_arrays.items():
            np.testing.assert_array_equal(cold[name], expected, err_msg=name)
        assert origin.data_requests() == 1  # the whole object, once
        assert origin.requests["head"] <= 1  # the reader asks the size first
        assert origin.bytes_fetched == len(files.nc)
        cold_requests = requests(origin)

        warm = read_netcdf(store, reader_cls)  # a second open + full read
        for name, expected in files.nc_arrays.items():
            np.testing.assert_array_equal(warm[name], expected, err_msg=name)
        assert requests(origin) == cold_requests  # warm: no origin request of any kind
        assert store.cached_paths == [NC]
        assert store.cache_size >= len(files.nc)

    peer_origin = files.origin()
    with PeerCachingStore(peer_origin) as peer:
        read_netcdf(peer, reader_cls)
        read_netcdf(peer, reader_cls)
    # obspec-utils: the same single GET, but `head` goes to S3 on every open (2 HEADs).
    assert peer_origin.data_requests() == 1
    assert peer_origin.requests["head"] == 2
    assert sum(peer_origin.requests.values()) > sum(origin.requests.values())


def test_xarray_h5netcdf_blocks_read_only_what_is_used(files: Files) -> None:
    """With ``block_size`` a one-chunk slice fetches only the blocks h5netcdf touches (HDF5
    metadata, the coordinates, that chunk): the very bytes the reader fetches straight from S3
    with no cache (4 of the file's 23 blocks here), where obspec-utils fetches the whole file.
    Reading the same slice again costs nothing."""
    chunk = (0, slice(0, NC_CHUNKS[1]), slice(0, NC_CHUNKS[2]))
    expected = files.nc_arrays["temperature"][chunk]

    def read_slice(store: Any) -> np.ndarray:
        with (
            readers.BlockStoreReader(store, NC, block_size=BLOCK) as reader,
            xr.open_dataset(reader, engine="h5netcdf") as ds,
        ):
            return np.asarray(ds["temperature"][chunk].values)

    uncached = files.origin()  # the reader straight on S3: what the slice really needs
    np.testing.assert_array_equal(read_slice(uncached), expected)

    origin = files.origin()
    with CachingReadableStore(origin, block_size=BLOCK) as store:
        np.testing.assert_array_equal(read_slice(store), expected)
        cold_bytes, cold_requests = origin.bytes_fetched, requests(origin)
        # measured: 1 HEAD + 4 block GETs, 234,125 of 1,479,309 bytes
        assert cold_bytes <= uncached.bytes_fetched
        assert cold_bytes <= 4 * BLOCK < len(files.nc) // 5
        assert origin.data_requests() <= 4
        assert origin.requests["head"] <= 1
        np.testing.assert_array_equal(read_slice(store), expected)
        assert requests(origin) == cold_requests  # warm: 0 origin requests
        assert origin.bytes_fetched == cold_bytes

    peer_origin = files.origin()
    with PeerCachingStore(peer_origin) as peer:
        np.testing.assert_array_equal(read_slice(peer), expected)
    assert peer_origin.bytes_fetched == len(files.nc)  # obspec-utils: always the whole object
    assert cold_bytes * 5 < peer_origin.bytes_fetched


@pytest.mark.parametrize("block_size", [None, BLOCK])
def test_xarray_h5netcdf_next_level_is_shared(
    files: Files, shared_cache: tiers.Cache, block_size: int | None
) -> None:
    """A second CachingReadableStore (another process, say) over the same `tiers.Cache` next
    level reads the whole file without asking S3 for a single byte (at most its HEAD)."""
    first_origin = files.origin()
    with CachingReadableStore(first_origin, cache=shared_cache, block_size=block_size) as first:
        read_netcdf(first, readers.BlockStoreReader)
    assert first_origin.bytes_fetched == len(files.nc)

    second_origin = files.origin()
    with CachingReadableStore(second_origin, cache=shared_cache, block_size=block_size) as second:
        got = read_netcdf(second, readers.BlockStoreReader)
    for name, expected in files.nc_arrays.items():
        np.testing.assert_array_equal(got[name], expected, err_msg=name)
    assert second_origin.data_requests() == 0
    assert second_origin.bytes_fetched == 0
    assert second_origin.requests["head"] <= 1


# -- 2. virtualizarr: HDFParser -> ManifestStore -> xarray (zarr) -----------------------------


@pytest.mark.filterwarnings(NUMCODECS_V3)
@pytest.mark.parametrize("block_size", [None, BLOCK])
def test_virtualizarr_manifest_store(files: Files, block_size: int | None) -> None:
    """Parse the NetCDF file into a ManifestStore through the cache and read it with zarr:
    exact data; a second parse + full read is served from the cache (0 origin requests)."""
    parsers = pytest.importorskip("virtualizarr.parsers")
    from obspec_utils.registry import ObjectStoreRegistry

    url = f"s3://{files.bucket}/{NC}"

    def parse_and_read(store: Any) -> None:
        registry = ObjectStoreRegistry({f"s3://{files.bucket}": store})
        manifest_store = parsers.HDFParser()(url=url, registry=registry)
        with xr.open_dataset(
            manifest_store, engine="zarr", consolidated=False, zarr_format=3
        ) as ds:
            ds.load()
            assert_same(ds, files.nc_arrays)

    origin = files.origin()
    with CachingReadableStore(origin, block_size=block_size) as store:
        parse_and_read(store)
        cold_requests = requests(origin)
        if block_size is None:
            assert origin.data_requests() == 1  # one GET of the object; every chunk from it
            assert origin.bytes_fetched == len(files.nc)
        else:  # every block once, adjacent blocks coalesced (measured: 2 range GETs)
            assert origin.bytes_fetched == len(files.nc)
            assert origin.data_requests() <= 4
        assert origin.requests["head"] <= 1
        parse_and_read(store)
        assert requests(origin) == cold_requests  # warm: nothing reaches S3

    peer_origin = files.origin()
    with PeerCachingStore(peer_origin) as peer:
        parse_and_read(peer)
        parse_and_read(peer)
    assert peer_origin.data_requests() == 1
    assert peer_origin.requests["head"] == 2  # obspec-utils: a HEAD per parse


# -- 3. async-tiff ----------------------------------------------------------------------------


async def read_tile(store: Any, x: int, y: int) -> np.ndarray:
    from async_tiff import TIFF

    tiff = await TIFF.open(TIF, store=store)
    tile = await tiff.fetch_tile(x, y, 0)
    return np.asarray(await tile.decode())[:, :, 0]  # (height, width, bands) for chunky data


@pytest.mark.parametrize("block_size", [None, BLOCK])
def test_async_tiff_tile(files: Files, block_size: int | None) -> None:
    """One tile of a tiled TIFF: exact pixels; a re-open + re-fetch makes 0 origin requests;
    with ``block_size`` only the header's and the tile's blocks leave S3."""
    pytest.importorskip("async_tiff")
    x, y = 1, 2
    th, tw = TIFF_TILE
    expected = files.pixels[y * th : (y + 1) * th, x * tw : (x + 1) * tw]

    origin = files.origin()
    with CachingReadableStore(origin, block_size=block_size) as store:
        np.testing.assert_array_equal(asyncio.run(read_tile(store, x, y)), expected)
        cold_requests, cold_bytes = requests(origin), origin.bytes_fetched
        if block_size is None:
            assert origin.data_requests() == 1
            assert cold_bytes == len(files.tif)
        else:  # block 0 (header + IFD) and the <= 2 blocks the ~28 KB tile straddles
            assert origin.data_requests() <= 3  # measured: 1 HEAD + 2 range GETs, 192 KiB
            assert cold_bytes <= 3 * block_size < len(files.tif)
        np.testing.assert_array_equal(asyncio.run(read_tile(store, x, y)), expected)
        assert requests(origin) == cold_requests  # warm: 0 origin requests
        assert origin.bytes_fetched == cold_bytes

    peer_origin = files.origin()
    with PeerCachingStore(peer_origin) as peer:
        np.testing.assert_array_equal(asyncio.run(read_tile(peer, x, y)), expected)
    assert peer_origin.bytes_fetched == len(files.tif)  # obspec-utils: the whole file
    if block_size is not None:
        assert cold_bytes < peer_origin.bytes_fetched
