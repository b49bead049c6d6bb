"""Small scientific files for the read-through client tests and the xarray benchmark.

- `netcdf_bytes`: a NetCDF4 (HDF5) file written by xarray's h5netcdf engine: a float32
  variable ``temperature`` (time 10, y 200, x 200) in zlib-compressed 1x50x50 chunks,
  a small float32 variable ``mask`` (y 200, x 200; contiguous) and the three coordinates.
  The data are seeded noise, so zlib cannot shrink them much: the file is about 1.5 MB.
- `tiff_bytes`: a tiled TIFF written by tifffile: 512x512 uint16 in 128x128 tiles.

Both return the bytes and the source arrays, to compare what the clients read back.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

NC_SHAPE = (10, 200, 200)  # (time, y, x)
NC_CHUNKS = (1, 50, 50)
TIFF_SHAPE = (512, 512)
TIFF_TILE = (128, 128)


def netcdf_arrays(seed: int = 0, time: int = NC_SHAPE[0]) -> dict[str, np.ndarray]:
    """The source arrays of `netcdf_bytes`."""
    rng = np.random.default_rng(seed)
    _, ny, nx = NC_SHAPE
    return {
        "temperature": rng.normal(280.0, 10.0, (time, ny, nx)).astype("float32"),
        "mask": (rng.random((ny, nx)) > 0.5).astype("float32"),
        "time": np.arange(time, dtype="int32"),
        "y": np.linspace(-90.0, 90.0, ny).astype("float64"),
        "x": np.linspace(-180.0, 180.0, nx).astype("float64"),
    }


def netcdf_bytes(
    directory: Path, seed: int = 0, time: int = NC_SHAPE[0]
) -> tuple[bytes, dict[str, np.ndarray]]:
    """A zlib-chunked NetCDF4 file (see the module docstring; `time` steps of 200x200, about
    130 KB each) and its source arrays."""
    import xarray as xr

    arrays = netcdf_arrays(seed, time)
    dataset = xr.Dataset(
        {
            "temperature": (("time", "y", "x"), arrays["temperature"]),
            "mask": (("y", "x"), arrays["mask"]),
        },
        coords={name: (name, arrays[name]) for name in ("time", "y", "x")},
        attrs={"title": "tiers read-through test file"},
    )
    encoding: dict[str, Any] = {
        "temperature": {"zlib": True, "complevel": 4, "chunksizes": NC_CHUNKS},
        "mask": {"contiguous": True},
    }
    path = directory / f"sample-{seed}.nc"
    dataset.to_netcdf(path, engine="h5netcdf", encoding=encoding)
    dataset.close()
    return path.read_bytes(), arrays


def tiff_bytes(seed: int = 0) -> tuple[bytes, np.ndarray]:
    """A tiled, deflate-compressed uint16 TIFF (512x512, 128x128 tiles) and its pixels."""
    import tifffile

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 4096, TIFF_SHAPE, dtype="uint16")
    out = io.BytesIO()
    tifffile.imwrite(out, pixels, tile=TIFF_TILE, compression="zlib")
    return out.getvalue(), pixels
