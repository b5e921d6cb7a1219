"""Reading and writing safetensors files with numpy only, lazily and in every dtype.

The format is an 8-byte header length, a JSON header (name -> dtype, shape, byte offsets) and
raw little-endian data. Reading through `np.memmap` keeps one tensor at a time in host memory,
and bfloat16 works through `ml_dtypes` (which jax ships), so no torch is needed.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

import ml_dtypes
import numpy as np

_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NAMES = {v: k for k, v in _DTYPES.items()}

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


class SafetensorsDirectory(Mapping[str, np.ndarray]):
    """All tensors of a HF checkpoint directory (one file or sharded with an index), lazily.

    A path to a single `.safetensors` file works too.

    `directory[name]` returns a read-only memory-mapped view; nothing is read until used.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        index = self.directory / INDEX_FILE
        if self.directory.is_file():
            files = [self.directory.name]
            self.directory = self.directory.parent
        elif index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(p.name for p in self.directory.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors files in {self.directory}")
        self._entries: dict[str, tuple[Path, np.dtype, tuple[int, ...], int, int]] = {}
        for name in files:
            self._read_header(self.directory / name)

    def _read_header(self, path: Path) -> None:
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
        base = 8 + header_len
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if info["dtype"] not in _DTYPES:
                raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
            begin, end = info["data_offsets"]
            self._entries[name] = (
                path, _DTYPES[info["dtype"]], tuple(info["shape"]), base + begin, base + end,
            )

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            path, dtype, shape, begin, end = self._entries[name]
        except KeyError:
            raise KeyError(f"tensor {name!r} not found in {self.directory}") from None
        count = (end - begin) // dtype.itemsize
        if count == 0:
            return np.zeros(shape, dtype)
        data = np.memmap(path, dtype=dtype, mode="r", offset=begin, shape=(count,))
        return data.reshape(shape)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name][2]


def write_safetensors(
    path: str | Path, tensors: Mapping[str, np.ndarray], metadata: dict[str, str] | None = None
) -> None:
    """Write one safetensors file (tensors in the given order, 8-byte aligned header)."""
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    arrays = []
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        if array.dtype not in _NAMES:
            raise ValueError(f"tensor {name!r}: dtype {array.dtype} cannot be saved")
        header[name] = {
            "dtype": _NAMES[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
        arrays.append(array)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for array in arrays:
            f.write(array.tobytes())


def write_sharded(
    directory: str | Path,
    tensors: Iterator[tuple[str, np.ndarray]],
    max_shard_bytes: int = 5 * 1024**3,
) -> list[Path]:
    """Write tensors into `model.safetensors`, or numbered shards plus the HF index file.

    Tensors arrive one at a time (an iterator), and at most one shard's worth is held.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, np.ndarray]] = [{}]
    written: list[Path] = []
    weight_map: dict[str, str] = {}
    shard_bytes = 0
    total = 0

    def flush() -> None:
        nonlocal shard_bytes
        if not shards[-1]:
            return
        tmp = directory / f"shard-{len(written) + 1:05d}.tmp"
        write_safetensors(tmp, shards[-1])
        written.append(tmp)
        for name in shards[-1]:
            weight_map[name] = tmp.name
        shards[-1] = {}
        shard_bytes = 0

    for name, array in tensors:
        if shards[-1] and shard_bytes + array.nbytes > max_shard_bytes:
            flush()
        shards[-1][name] = array
        shard_bytes += array.nbytes
        total += array.nbytes
    flush()

    if len(written) == 1:
        final = directory / SINGLE_FILE
        written[0].replace(final)
        (directory / INDEX_FILE).unlink(missing_ok=True)
        return [final]
    renamed = {}
    paths = []
    for i, tmp in enumerate(written, start=1):
        final = directory / f"model-{i:05d}-of-{len(written):05d}.safetensors"
        tmp.replace(final)
        renamed[tmp.name] = final.name
        paths.append(final)
    index = {
        "metadata": {"total_size": total},
        "weight_map": {name: renamed[f] for name, f in sorted(weight_map.items())},
    }
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=2))
    (directory / SINGLE_FILE).unlink(missing_ok=True)
    return paths
