"""The atlas dtype table: names, NumPy equivalents, fill values and write coercion.

Storage dtypes are what chunks hold on disk: timestamps are stored as ``int64``
nanoseconds since the epoch (NaT = ``int64`` minimum), strings as UTF-8 with offsets.
User dtypes are what reads return: ``datetime64[ns]`` and object arrays of ``str``.
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any

import numpy as np

NUMERIC: dict[str, np.dtype[Any]] = {
    "int8": np.dtype(np.int8),
    "int16": np.dtype(np.int16),
    "int32": np.dtype(np.int32),
    "int64": np.dtype(np.int64),
    "uint8": np.dtype(np.uint8),
    "uint16": np.dtype(np.uint16),
    "uint32": np.dtype(np.uint32),
    "uint64": np.dtype(np.uint64),
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
}
TIMESTAMP = "timestamp_nanoseconds"
STRING = "string"
ALIASES = {
    "timestamp_ns": TIMESTAMP,
    "datetime64[ns]": TIMESTAMP,
    "<M8[ns]": TIMESTAMP,
    "M8[ns]": TIMESTAMP,
    "str": STRING,
    "utf8": STRING,
    # the reference's short names (bits, not bytes: "i8" is int8 here, unlike NumPy's "i8")
    "i8": "int8", "i16": "int16", "i32": "int32", "i64": "int64",
    "u8": "uint8", "u16": "uint16", "u32": "uint32", "u64": "uint64",
    "f32": "float32", "f64": "float64",
}
ARRAY_DTYPES = tuple(NUMERIC) + (TIMESTAMP, STRING)
NAT_BITS = np.iinfo(np.int64).min
_INT64 = np.dtype(np.int64)
_DATETIME_NS = np.dtype("datetime64[ns]")


def canonical_dtype(dtype: Any) -> str:
    """Return the canonical atlas dtype name for ``dtype`` (a name or a NumPy dtype)."""
    if isinstance(dtype, np.dtype) or (isinstance(dtype, type) and issubclass(dtype, np.generic)):
        nd = np.dtype(dtype)
        if nd.kind == "M" and nd == np.dtype("datetime64[ns]"):
            return TIMESTAMP
        if nd.kind in "OUS":
            return STRING
        name = nd.name
    elif isinstance(dtype, str):
        name = dtype.strip()
    else:
        raise TypeError(f"dtype must be a string such as 'float32', got {type(dtype).__name__}: {dtype!r}")
    name = ALIASES.get(name, name)
    if name in NUMERIC or name in (TIMESTAMP, STRING):
        return name
    raise ValueError(
        f"unsupported dtype {dtype!r}; accepted: {', '.join(ARRAY_DTYPES)} "
        f"(aliases: {', '.join(sorted(ALIASES))})"
    )


def storage_dtype(name: str) -> np.dtype:
    """NumPy dtype of a chunk's cells on disk (and of kernel buffers)."""
    if name == TIMESTAMP:
        return np.dtype(np.int64)
    if name == STRING:
        return np.dtype(object)
    return NUMERIC[name]


def user_dtype(name: str) -> np.dtype:
    """NumPy dtype that reads return."""
    if name == TIMESTAMP:
        return np.dtype("datetime64[ns]")
    return storage_dtype(name)


def default_fill(name: str) -> Any:
    """Storage value of unwritten cells when no fill value was given: 0, "" or NaT."""
    if name == STRING:
        return ""
    if name == TIMESTAMP:
        return NAT_BITS
    return NUMERIC[name].type(0)


def check_unicode(text: str, what: str) -> str:
    """Refuse a str that cannot be stored as UTF-8 (lone surrogates, e.g. from os.fsdecode)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} {text!r} is not valid Unicode ({e.reason} at position {e.start})") from None
    return text


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def coerce_fill(name: str, value: Any, array: str = "") -> Any:
    """Check a fill value against the array dtype and return its canonical Python form.

    Integers and timestamps become ``int`` (timestamps in ns), floats ``float``, strings
    ``str``. Raises ``TypeError`` for the wrong kind and ``OverflowError`` when out of range.
    """
    where = f" of array {array!r}" if array else ""
    if value is None:
        return None
    if name == STRING:
        if isinstance(value, (str, np.str_)):
            return check_unicode(str(value), f"fill_value{where}")
        raise TypeError(f"fill_value{where} must be a str for dtype 'string', got {type(value).__name__}: {value!r}")
    if name == TIMESTAMP:
        if isinstance(value, (np.datetime64, _dt.datetime)):
            return to_ns(value, f"fill_value{where}")
        if not _is_int(value):
            raise TypeError(
                f"fill_value{where} must be an int (ns since epoch) or datetime64 for dtype "
                f"'{TIMESTAMP}', got {type(value).__name__}: {value!r}"
            )
        return _check_int_range(int(value), np.dtype(np.int64), f"fill_value{where}")
    nd = NUMERIC[name]
    if nd.kind in "iu":
        if not _is_int(value):
            raise TypeError(f"fill_value{where} must be an int for dtype {name!r}, got {type(value).__name__}: {value!r}")
        return _check_int_range(int(value), nd, f"fill_value{where}")
    # float
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"fill_value{where} must be a float (or int) for dtype {name!r}, got {type(value).__name__}: {value!r}")
    f = float(value)
    if nd == np.float32 and math.isfinite(f) and abs(f) > float(np.finfo(np.float32).max):
        raise OverflowError(f"fill_value{where} {value!r} is out of range for float32")
    return float(nd.type(f))


def _check_int_range(v: int, nd: np.dtype, what: str) -> int:
    info = np.iinfo(nd)
    if v < info.min or v > info.max:
        raise OverflowError(f"{what} {v} is out of range for {nd.name} [{info.min}, {info.max}]")
    return v


def fill_storage_value(name: str, fill: Any) -> Any:
    """The storage-typed scalar used for unwritten cells (fill or the default)."""
    if fill is None:
        return default_fill(name)
    if name == STRING:
        return fill
    return storage_dtype(name).type(fill)


def to_storage(name: str, data: Any, array: str) -> np.ndarray:
    """Validate user data for a write and return it as a storage-typed ndarray (no copy when possible).

    Raises ``TypeError`` when the dtype does not match and ``ValueError`` for non-contiguous data.
    """
    if not isinstance(data, np.ndarray):
        raise TypeError(f"data for array {array!r} must be a numpy.ndarray, got {type(data).__name__}")
    if not data.flags.c_contiguous:
        raise ValueError(
            f"data for array {array!r} is not C-contiguous; pass np.ascontiguousarray(data)"
        )
    if name == STRING:
        if data.dtype.kind == "U":
            return data.astype(object)
        if data.dtype.kind == "S":
            return np.char.decode(data, "utf-8").astype(object) if data.size else data.astype(object)
        if data.dtype.kind == "O":
            return _object_strings(data, array)
        raise TypeError(f"array {array!r} has dtype 'string'; got data of dtype {data.dtype} (expected str, bytes, U or S)")
    if name == TIMESTAMP:
        dt = data.dtype
        if dt == _DATETIME_NS:
            return data.view(_INT64)
        if dt != _INT64:  # (int64: ns since the epoch, as the reference takes them)
            hint = " (convert with .astype('datetime64[ns]'))" if data.dtype.kind == "M" else ""
            raise TypeError(f"array {array!r} has dtype {TIMESTAMP!r}; got data of dtype {data.dtype}{hint} "
                            "(datetime64[ns], or int64 nanoseconds since the epoch)")
        return data
    nd = NUMERIC[name]
    if data.dtype != nd:
        raise TypeError(
            f"array {array!r} has dtype {name!r}; got data of dtype {data.dtype} "
            f"(convert with .astype({name!r}); no implicit casts)"
        )
    if not data.dtype.isnative:
        raise TypeError(f"data for array {array!r} is not in native byte order; use .astype({name!r})")
    return data


def _object_strings(data: np.ndarray, array: str) -> np.ndarray:
    flat = data.ravel()
    out = np.empty(flat.shape, dtype=object)
    for i, v in enumerate(flat.tolist()):  # strings are Python objects: one pass is unavoidable
        if isinstance(v, str):
            out[i] = v
        elif isinstance(v, (bytes, bytearray)):
            try:
                out[i] = bytes(v).decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"array {array!r}: element {i} is not valid UTF-8") from e
        else:
            raise TypeError(f"array {array!r} has dtype 'string'; element {i} is {type(v).__name__}: {v!r}")
    return out.reshape(data.shape)


# ---------------------------------------------------------------- attributes
_ATTR_INT_OVERRIDES = {k: v for k, v in NUMERIC.items() if v.kind in "iu"}


def coerce_attribute(key: str, value: Any, dtype: str | None = None) -> tuple[str, Any]:
    """Return ``(stored_type, python_value)`` for an attribute, inferring or checking the type."""
    if dtype is None:
        if isinstance(value, (bool, np.bool_)):
            return "bool", bool(value)
        if _is_int(value):
            return "int64", _check_int_range(int(value), np.dtype(np.int64), f"attribute {key!r}")
        if isinstance(value, (float, np.floating)):
            return "float64", float(value)
        if isinstance(value, (str, np.str_)):
            return "string", check_unicode(str(value), f"attribute {key!r}: value")
        if isinstance(value, (np.datetime64, _dt.datetime)):
            return TIMESTAMP, _timestamp_ns(value, key)
        raise TypeError(
            f"attribute {key!r}: unsupported value type {type(value).__name__} ({value!r}); "
            "supported: bool, int, float, str, datetime64"
        )
    if not isinstance(dtype, str):
        raise TypeError(f"attribute {key!r}: dtype must be a string, got {type(dtype).__name__}")
    d = ALIASES.get(dtype, dtype)
    if d == "bool":
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"attribute {key!r}: dtype 'bool' needs a bool, got {type(value).__name__}")
        return "bool", bool(value)
    if d in _ATTR_INT_OVERRIDES:
        if not _is_int(value):
            raise TypeError(f"attribute {key!r}: dtype {d!r} needs an int, got {type(value).__name__}: {value!r}")
        v = _check_int_range(int(value), _ATTR_INT_OVERRIDES[d], f"attribute {key!r}")
        return "int64", _check_int_range(v, np.dtype(np.int64), f"attribute {key!r} (stored as int64)")
    if d in ("float32", "float64"):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"attribute {key!r}: dtype {d!r} needs a float, got {type(value).__name__}: {value!r}")
        f = float(value)
        if d == "float32":
            if math.isfinite(f) and abs(f) > float(np.finfo(np.float32).max):
                raise OverflowError(f"attribute {key!r}: {value!r} is out of range for float32")
            f = float(np.float32(f))
        return "float64", f
    if d == STRING:
        if not isinstance(value, (str, np.str_)):
            raise TypeError(f"attribute {key!r}: dtype 'string' needs a str, got {type(value).__name__}")
        return "string", check_unicode(str(value), f"attribute {key!r}: value")
    if d == TIMESTAMP:
        if _is_int(value):
            return TIMESTAMP, _check_int_range(int(value), np.dtype(np.int64), f"attribute {key!r}")
        if isinstance(value, (np.datetime64, _dt.datetime, str)):
            return TIMESTAMP, _timestamp_ns(value, key)
        raise TypeError(f"attribute {key!r}: dtype {TIMESTAMP!r} needs an int or datetime64, got {type(value).__name__}")
    raise ValueError(
        f"attribute {key!r}: unknown dtype {dtype!r}; accepted: bool, int8..int64, uint8..uint64, "
        f"float32, float64, string, {TIMESTAMP}"
    )


def _timestamp_ns(value: Any, key: str) -> int:
    if isinstance(value, str):
        try:
            value = np.datetime64(value)
        except (ValueError, TypeError) as e:
            raise ValueError(f"attribute {key!r}: cannot read {value!r} as a timestamp") from e
    return to_ns(value, f"attribute {key!r}")


#: nanoseconds per unit of the datetime64 units with a fixed length
_NS_PER = {"W": 604_800 * 10**9, "D": 86_400 * 10**9, "h": 3_600 * 10**9, "m": 60 * 10**9, "s": 10**9,
           "ms": 10**6, "us": 10**3, "ns": 1}
_EPOCH = _dt.datetime(1970, 1, 1)


def to_ns(value: Any, what: str) -> int:
    """Nanoseconds since the epoch of a ``datetime64`` or ``datetime``, exactly (Python ints).

    NaT stays NaT; a time outside what int64 nanoseconds can hold (about 1678-2262) raises
    ``OverflowError`` instead of wrapping around as NumPy's own cast does.
    """
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        d = value - _EPOCH
        ns = (d.days * 86_400 + d.seconds) * 10**9 + d.microseconds * 1000
    else:
        if np.isnat(value):
            return NAT_BITS
        unit, step = np.datetime_data(value.dtype)
        if unit in ("Y", "M"):  # calendar units: exact through days
            value, unit, step = value.astype("datetime64[D]"), "D", 1
        n = int(value.astype(np.int64)) * step
        if unit in _NS_PER:
            ns = n * _NS_PER[unit]
        else:  # ps, fs, as: finer than ns, truncated toward -inf like NumPy
            ns = n // {"ps": 10**3, "fs": 10**6, "as": 10**9}[unit]
    if not NAT_BITS < ns < 2**63:
        raise OverflowError(f"{what}: {value!r} is outside the timestamp range (int64 nanoseconds, years 1678-2262)")
    return ns


def attribute_value(kind: str, value: Any) -> Any:
    """Python value returned by ``get_attribute`` for a stored ``(kind, value)``."""
    if kind == TIMESTAMP:
        return np.datetime64(int(value), "ns")
    return value
