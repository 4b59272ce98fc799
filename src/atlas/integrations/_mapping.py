"""The xarray <-> store mapping.

Every coordinate and data variable becomes an array with its dims; dataset attrs are plain
attributes; variable attrs are flattened as ``{var}.{attr}``; ``_FillValue`` becomes the
typed fill value; the coordinate names are a JSON list in ``_pyatlas_coords``; list, array
and dict attribute values are ``json:``-prefixed strings. ``_pyatlas_meta`` (JSON) records
what reading back needs to be exact: variable order, which attribute belongs to which
variable (dataset attrs may contain dots), original dtypes and attribute kinds.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from .. import dtypes as D

COORDS_ATTR = "_pyatlas_coords"
META_ATTR = "_pyatlas_meta"
JSON_PREFIX = "json:"
MAPPING_VERSION = 1


def storage_form(name: str, data: np.ndarray) -> tuple[str, np.dtype | None, str]:
    """``(atlas dtype, numpy dtype to convert to before writing or None, original dtype str)``.

    Raises ``TypeError`` with what to do for dtypes that cannot be stored losslessly.
    """
    dt = data.dtype
    orig = dt.str
    if dt.kind in "iu" or (dt.kind == "f" and dt.itemsize >= 4):
        native = dt.newbyteorder("=")
        return D.canonical_dtype(native.name), (None if dt.isnative else native), native.str
    if dt.kind == "f" and dt.itemsize == 2:
        return "float32", np.dtype(np.float32), orig  # lossless widening, narrowed back on read
    if dt.kind == "b":
        return "uint8", np.dtype(np.uint8), orig
    if dt.kind == "M":
        unit = np.datetime_data(dt)[0]
        if unit == "generic":
            raise TypeError(f"variable {name!r}: datetime64 without a unit; use .astype('datetime64[ns]')")
        return D.TIMESTAMP, np.dtype("datetime64[ns]"), orig
    if dt.kind == "m":
        unit = np.datetime_data(dt)[0]
        if unit == "generic":
            raise TypeError(f"variable {name!r}: timedelta64 without a unit; use .astype('timedelta64[ns]')")
        return "int64", np.dtype(np.int64), orig
    if dt.kind in "USO":
        return D.STRING, None, orig
    if dt.kind == "c":
        raise TypeError(f"variable {name!r}: complex dtype {dt} is not supported; store real and imaginary parts as two variables")
    raise TypeError(f"variable {name!r}: dtype {dt} is not supported; convert it to one of {', '.join(D.ARRAY_DTYPES)}")


def read_spec(vm: dict[str, Any]) -> Any:
    """How the values of a variable (its entry in the mapping metadata) are turned back into
    what was written: None, a byte encoding (``"latin-1"``: str cells become bytes again),
    or ``(encoding or None, placeholder, "nan"|"none")`` when missing string cells were
    stored as a placeholder. Hashable; passed along to :func:`from_storage_values`."""
    enc, missing = vm.get("enc"), vm.get("missing")
    if missing:
        return (enc, str(missing[0]), str(missing[1]))
    return enc


def to_storage_values(data: np.ndarray, conv: np.dtype | None, name: str = "", enc: Any = None) -> np.ndarray:
    """Convert a numpy block of variable ``name`` to what ``write_array`` takes."""
    if isinstance(enc, tuple):
        enc = enc[0]
    if data.dtype.kind in "SO" and enc:  # bytes (S, or objects that are all bytes) as str
        out = np.empty(data.shape, dtype=object)
        out.reshape(-1)[:] = [b.decode(enc) if isinstance(b, bytes) else b for b in data.reshape(-1).tolist()]
        return out
    if data.dtype.kind == "m":
        return _c_order(data.astype("timedelta64[ns]").view(np.int64))
    if conv is not None:
        if data.dtype.kind == "M" and data.dtype != conv:
            conv_data = data.astype(conv)
            if not np.array_equal(conv_data.astype(data.dtype), data, equal_nan=True):
                raise OverflowError(f"{data.dtype} values do not fit datetime64[ns]; convert them first")
            data = conv_data
        else:
            data = data.astype(conv)
    if data.dtype.kind == "O":
        flat = data.ravel()
        bad = [v for v in flat.tolist() if not isinstance(v, (str, bytes))]
        if bad:
            hint = ""
            if type(bad[0]).__module__.startswith("cftime"):
                hint = ("; these are cftime dates (a non-standard calendar): open the file with "
                        "decode_times=False, or convert with ds.convert_calendar('standard', use_cftime=False)")
            elif bad[0] is None:
                hint = "; replace missing values with a string (and set _FillValue to it)"
            raise TypeError(f"variable {name!r}: object data holds {type(bad[0]).__name__} values ({bad[0]!r}); "
                            f"only str/bytes are supported{hint}")
        for i, v in enumerate(flat.tolist()):
            if isinstance(v, bytes):
                try:
                    v.decode("utf-8")
                except UnicodeDecodeError:
                    raise ValueError(f"variable {name!r}: element {i} is bytes that are not UTF-8 ({v!r}); "
                                     "decode them to str first, or store them as a fixed-width S array") from None
    return _c_order(data)


def _c_order(a: np.ndarray) -> np.ndarray:
    """C-contiguous without promoting 0-D arrays to 1-D (as np.ascontiguousarray does)."""
    return a if a.flags.c_contiguous else a.copy(order="C")


def from_storage_values(data: np.ndarray, orig: str, enc: Any = None) -> np.ndarray:
    """Undo :func:`storage_form` on read (``enc``: a :func:`read_spec`)."""
    data = np.asarray(data)
    dt = np.dtype(orig)
    if isinstance(enc, tuple):
        byte_enc, ph, kind = enc
        miss = data == ph if data.dtype.kind == "O" else np.zeros(data.shape, bool)
        out = from_storage_values(data, orig, byte_enc)
        if miss.any():
            out = out.astype(object) if out.dtype.kind != "O" else out
            out[miss] = None if kind == "none" else float("nan")
        return out
    if dt.kind == "S":
        out = np.array([s.encode(enc or "utf-8") for s in data.reshape(-1).tolist()], dtype=dt if dt.itemsize else "S")
        return out.reshape(data.shape)
    if dt.kind == "O" and enc:
        out = np.empty(data.shape, dtype=object)
        out.reshape(-1)[:] = [s.encode(enc) for s in data.reshape(-1).tolist()]
        return out
    if dt.kind == "m":
        return data.view("timedelta64[ns]").astype(dt) if data.dtype == np.int64 else data.astype(dt)
    if dt.kind in "US":
        return data.astype(dt) if data.size else np.zeros(data.shape, dt)
    if dt.kind == "O" or data.dtype == dt:
        return data
    return data.astype(dt)


# ------------------------------------------------------------------ attributes
def encode_attr(value: Any) -> tuple[Any, str]:
    """An attribute value in a form ``set_attribute`` takes, and its kind for read-back."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value), "bool"
    if isinstance(value, (int, np.integer)):
        iv = int(value)
        if -(2**63) <= iv < 2**63:
            return iv, f"int:{np.asarray(value).dtype.str}" if isinstance(value, np.integer) else "int"
        return JSON_PREFIX + json.dumps(iv), "bigint"
    if isinstance(value, (float, np.floating)):
        return float(value), f"float:{np.asarray(value).dtype.str}" if isinstance(value, np.floating) else "float"
    if isinstance(value, (str, np.str_)):
        return str(value), "str"
    if isinstance(value, bytes):
        return JSON_PREFIX + json.dumps(value.decode("latin-1")), "bytes"
    if isinstance(value, np.datetime64):
        return value, f"datetime:{value.dtype.str}"
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufUS":
            raise TypeError(f"attribute array of dtype {value.dtype} is not supported")
        return JSON_PREFIX + json.dumps(_jsonable(value.tolist())), f"ndarray:{value.dtype.str}:{json.dumps(list(value.shape))}"
    if isinstance(value, (list, tuple, dict)):
        return JSON_PREFIX + json.dumps(_jsonable(value)), type(value).__name__
    raise TypeError(f"attribute value of type {type(value).__name__} ({value!r}) is not supported")


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return {"__float__": repr(v)}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, bytes):
        return v.decode("latin-1")
    if isinstance(v, (np.generic,)):
        return _jsonable(v.item())
    return v


def _unjson(v: Any) -> Any:
    if isinstance(v, dict):
        if set(v) == {"__float__"}:
            return float(v["__float__"])
        return {k: _unjson(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_unjson(x) for x in v]
    return v


def decode_attr(value: Any, kind: str | None) -> Any:
    """Inverse of :func:`encode_attr` (``kind`` None: a plain attribute of unknown origin)."""
    if kind is None:
        if isinstance(value, str) and value.startswith(JSON_PREFIX):
            return _unjson(json.loads(value[len(JSON_PREFIX):]))
        return value
    if kind.startswith("int:"):
        return np.dtype(kind[4:]).type(value)
    if kind.startswith("float:"):
        return np.dtype(kind[6:]).type(value)
    if kind.startswith("datetime:"):
        return np.datetime64(value).astype(kind[9:])
    if kind in ("bool", "int", "float", "str"):
        return value
    body = _unjson(json.loads(value[len(JSON_PREFIX):]))
    if kind == "bigint":
        return int(body)
    if kind == "bytes":
        return body.encode("latin-1")
    if kind == "tuple":
        return tuple(body)
    if kind.startswith("ndarray:"):
        _, dt, shape = kind.split(":", 2)
        return np.asarray(body, dtype=np.dtype(dt)).reshape(json.loads(shape))
    return body
