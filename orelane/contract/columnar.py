"""The binary columnar envelope used for batches of spectra, results and camera frames.

Layout (all integers little-endian):

    0   4 bytes  magic b"ORLB"
    4   u16      contract version
    6   u16      reserved, 0
    8   u32      header length H
    12  u32      reserved, 0
    16  H bytes  header: UTF-8 JSON {"kind", "meta", "columns": [[name, dtype, shape], ...]}
        padding to a multiple of 8
        each column's raw bytes, C order, padded to a multiple of 8

Columns decode with numpy.frombuffer, so a batch of spectra becomes an array
without a Python object per value. The payload length must equal exactly what
the header declares, so truncated or padded messages are refused.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from orelane.contract import CONTRACT_VERSION, ContractError

MAGIC = b"ORLB"
_PREFIX = struct.Struct("<4sHHII")
ALLOWED_DTYPES = {"<u1", "|u1", "<u2", "<u4", "<u8", "<i1", "|i1", "<i2", "<i4", "<i8", "<f4", "<f8"}
MAX_HEADER_BYTES = 1 << 20
MAX_COLUMNS = 64


@dataclass(frozen=True)
class Columnar:
    kind: str
    meta: dict[str, Any]
    columns: dict[str, np.ndarray]


def _pad8(n: int) -> int:
    return (n + 7) & ~7


def encode(kind: str, meta: dict[str, Any], columns: dict[str, np.ndarray]) -> bytes:
    """Encode named arrays (converted to little-endian) with a JSON header."""
    arrays = {}
    for name, values in columns.items():
        arr = np.ascontiguousarray(values)
        dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        arr = arr.astype(dtype, copy=False)
        if arr.dtype.str not in ALLOWED_DTYPES:
            raise ContractError(f"column {name!r} has dtype {arr.dtype}; allowed: {sorted(ALLOWED_DTYPES)}")
        arrays[name] = arr
    header = json.dumps(
        {"kind": kind, "meta": meta,
         "columns": [[name, arr.dtype.str, list(arr.shape)] for name, arr in arrays.items()]},
        separators=(",", ":"), allow_nan=False,
    ).encode()
    parts = [_PREFIX.pack(MAGIC, CONTRACT_VERSION, 0, len(header), 0), header,
             b"\0" * (_pad8(16 + len(header)) - 16 - len(header))]
    for arr in arrays.values():
        raw = arr.tobytes()
        parts.append(raw)
        parts.append(b"\0" * (_pad8(len(raw)) - len(raw)))
    return b"".join(parts)


def decode(payload: bytes | bytearray | memoryview, expected_kind: str | None = None) -> Columnar:
    """Decode an envelope into read-only array views; raise ContractError naming the first problem."""
    buf = memoryview(payload).cast("B").toreadonly()
    if len(buf) < _PREFIX.size:
        raise ContractError(f"binary payload is {len(buf)} bytes, shorter than the {_PREFIX.size}-byte prefix")
    magic, version, _, header_len, _ = _PREFIX.unpack_from(buf, 0)
    if magic != MAGIC:
        raise ContractError(f"binary payload starts with {bytes(magic)!r}, expected {MAGIC!r}")
    if version != CONTRACT_VERSION:
        raise ContractError(f"binary payload has contract version {version}; this build reads {CONTRACT_VERSION}")
    if header_len > MAX_HEADER_BYTES or 16 + header_len > len(buf):
        raise ContractError(f"header length {header_len} does not fit a {len(buf)}-byte payload")
    try:
        header = json.loads(bytes(buf[16:16 + header_len]).decode("utf-8"),
                            parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise ContractError(f"binary payload header is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(header, dict) or not isinstance(header.get("kind"), str) \
            or not isinstance(header.get("meta"), dict) or not isinstance(header.get("columns"), list):
        raise ContractError("binary payload header needs 'kind' (string), 'meta' (object) and 'columns' (list)")
    kind = header["kind"]
    if expected_kind is not None and kind != expected_kind:
        raise ContractError(f"binary payload is a {kind!r}, expected {expected_kind!r}")
    if len(header["columns"]) > MAX_COLUMNS:
        raise ContractError(f"binary payload declares {len(header['columns'])} columns; at most {MAX_COLUMNS}")
    offset = _pad8(16 + header_len)
    columns: dict[str, np.ndarray] = {}
    for entry in header["columns"]:
        if (not isinstance(entry, list) or len(entry) != 3 or not isinstance(entry[0], str)
                or entry[1] not in ALLOWED_DTYPES or not isinstance(entry[2], list)
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31 for d in entry[2])
                or len(entry[2]) > 3):
            raise ContractError(f"column declaration {entry!r} is not [name, allowed dtype, shape of <=3 dims]")
        name, dtype_str, shape = entry
        if name in columns:
            raise ContractError(f"column {name!r} is declared twice")
        dtype = np.dtype(dtype_str)
        count = math.prod(shape)  # Python ints: a hostile shape cannot wrap around
        nbytes = count * dtype.itemsize
        if offset + nbytes > len(buf):
            raise ContractError(f"column {name!r} ({nbytes} bytes at offset {offset}) runs past the "
                                f"{len(buf)}-byte payload")
        try:
            arr = np.frombuffer(buf, dtype=dtype, count=count, offset=offset).reshape(shape)
        except ValueError as exc:  # an empty column declared with dimensions numpy cannot hold: (0, 2**30, 2**30)
            raise ContractError(f"column {name!r} of shape {shape}: {exc}") from None
        columns[name] = arr
        offset += _pad8(nbytes)
    if offset != len(buf):
        raise ContractError(f"binary payload is {len(buf)} bytes but its header accounts for {offset}")
    return Columnar(kind, header["meta"], columns)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")
