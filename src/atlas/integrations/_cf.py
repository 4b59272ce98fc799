"""CF encodings across the xarray bridge.

xarray decodes a file's CF encodings (``_FillValue``, ``missing_value``, ``scale_factor`` /
``add_offset``, ``_Unsigned``, time ``units`` / ``calendar``, char arrays) into the data
and keeps what it removed in ``Variable.encoding``. This module decides what atlas stores
for such a variable and gives the encoding back on read:

* the **atlas fill** of a decoded float, datetime or timedelta variable is what reads as
  missing (NaN, NaT), whatever the file's encoded fill was, so ``null_count`` counts the
  cells users see as missing; a decoded string variable gets no atlas fill;
* the **source encoding** (:data:`KEYS`) is kept in the dataset's mapping metadata and put
  back in ``.encoding`` on read, so ``to_netcdf`` of what comes back packs and fills as the
  source did;
* :func:`redecode` re-encodes variables and runs xarray's own decoders, which is how the
  ``engine="atlas"`` backend honours ``decode_times=False``, ``mask_and_scale=False``, ...;
* :func:`repair_text` mends attribute strings holding lone surrogates (bytes a file
  declared as text but that a reader decoded with ``surrogateescape``).
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import numpy as np

from .. import dtypes as D
from . import _mapping as M

#: the encoding keys kept per variable (what CF decoding removed from the attributes)
KEYS = ("dtype", "_FillValue", "missing_value", "scale_factor", "add_offset", "_Unsigned", "units", "calendar",
        "char_dim_name", "_Encoding", "original_shape", "coordinates")
#: the decoding keywords of ``xr.open_dataset`` the backend honours (``decode_cf`` is xarray's)
DECODERS = ("mask_and_scale", "decode_times", "decode_timedelta", "use_cftime", "concat_characters", "decode_coords")


# ------------------------------------------------------------------ writing
def capture(var: Any) -> list[list[Any]]:
    """The CF part of ``var.encoding`` as ``[[key, value, kind], ...]`` (JSON-able)."""
    out = []
    for k in KEYS:
        if k not in var.encoding:
            continue
        v = var.encoding[k]
        if k == "dtype":
            try:
                v = np.dtype(v).str
            except TypeError:
                continue
        try:
            value, kind = M.encode_attr(v)
        except TypeError:
            continue  # not representable: xarray falls back to its defaults on write
        out.append([k, M._jsonable(value), kind])
    return out


def restore(stored: list[list[Any]]) -> dict[str, Any]:
    """Inverse of :func:`capture`."""
    enc: dict[str, Any] = {}
    for k, value, kind in stored:
        v = M.decode_attr(M._unjson(value), kind)
        enc[k] = np.dtype(v) if k == "dtype" else v
    return enc


def decoded_missing(var: Any) -> tuple[bool, Any]:
    """``(True, atlas fill)`` for a variable whose missing cells read as NaN / NaT: NaN for
    floats, NaT for datetimes and timedeltas, whatever fill the source encoded; None (no
    fill) for strings whose fill xarray moved to the encoding. ``(False, None)`` when the
    ``_FillValue`` is an attribute (data not decoded: the fill is the data's own) and for
    integers (they keep an encoded fill, which cells equal to it read as in CF readers)."""
    if "_FillValue" in var.attrs:
        return False, None
    kind = var.dtype.kind
    if kind == "f":
        return True, float("nan")
    if kind in "Mm":
        return True, int(D.NAT_BITS)
    if kind in "OUS" and ("_FillValue" in var.encoding or "missing_value" in var.encoding):
        return True, None
    return False, None


# ------------------------------------------------------------------ attribute text
def repair_text(s: str) -> str:
    """``s`` with lone surrogates mended: surrogate-escaped bytes are decoded as UTF-8 (or
    Latin-1 when they are not UTF-8); any other lone surrogate becomes U+FFFD."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        pass
    try:
        raw = s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in s)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def repair_attr(v: Any) -> Any:
    """An attribute value with :func:`repair_text` applied to its strings."""
    if isinstance(v, str):
        return repair_text(v)
    if isinstance(v, (list, tuple)):
        return type(v)(repair_attr(x) for x in v)
    if isinstance(v, np.ndarray) and v.dtype.kind in "UO":
        return np.array([repair_attr(x) for x in v.reshape(-1).tolist()], dtype=v.dtype).reshape(v.shape)
    return v


# ------------------------------------------------------------------ reading with xarray's decoders
def wants_redecode(kwargs: Mapping[str, Any]) -> bool:
    """Whether any decoding keyword asks for something other than what the store holds."""
    return any(v is not None and (v is not True or k in ("use_cftime", "decode_timedelta")) for k, v in kwargs.items())


def _encode_variable(name: Any, var: Any) -> Any:
    """``var`` in the form its source file held it (xarray's encoders, on loaded data)."""
    import xarray as xr
    from xarray import conventions
    from xarray.coding import strings

    enc = dict(var.encoding)
    if not any(k in enc for k in KEYS if k not in ("char_dim_name", "original_shape", "coordinates")) \
            and var.dtype.kind not in "MmO":
        return var
    source = dict(enc)
    enc.setdefault("_FillValue", None)  # what the store holds: no default fill added
    extra = {}
    fv, mv = enc.get("_FillValue"), enc.get("missing_value")
    if fv is not None and mv is not None and not _same(fv, mv):
        extra["missing_value"] = enc.pop("missing_value")  # xarray refuses to encode two fills
    var = xr.Variable(var.dims, np.asarray(var.values), dict(var.attrs), encoding=enc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = conventions.encode_cf_variable(var, name=name)
        if out.dtype.kind == "O" and np.dtype(source.get("dtype", "O")).kind == "S":
            cells = out.values.reshape(-1).tolist()
            if all(isinstance(c, bytes) for c in cells):
                out = out.copy(data=np.array(cells, dtype="S").reshape(out.shape))
        out = strings.EncodedStringCoder(allows_unicode=True).encode(out, name=name)
        if "char_dim_name" in source:  # char arrays, as netCDF writers make them
            out = strings.CharacterArrayCoder().encode(out, name=name)
    out.attrs.update(extra)
    if var.dtype.kind in "Mm" and "units" in source:  # the source's own spelling, no added calendar
        for k in ("units", "calendar"):
            if k in source:
                out.attrs[k] = source[k]
            else:
                out.attrs.pop(k, None)
    return out


def _same(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool(np.all((a == b) | ((a != a) & (b != b))))


def redecode(ds: Any, kwargs: Mapping[str, Any], drop: Any) -> Any:
    """``ds`` (decoded, as stored) re-encoded and decoded again by xarray with ``kwargs``.

    Variables with a CF encoding are loaded to be re-encoded; the others stay lazy.
    """
    import xarray as xr
    from xarray import conventions

    variables = {k: _encode_variable(k, v) for k, v in ds.variables.items()}
    enc_ds = xr.Dataset(variables, attrs=ds.attrs)
    variables, attrs = conventions.encode_dataset_coordinates(enc_ds)
    opts = {k: v for k, v in kwargs.items() if v is not None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xr.SerializationWarning)
        vars_, attrs_, coord_names = conventions.decode_cf_variables(variables, attrs, drop_variables=drop, **opts)
    out = xr.Dataset(vars_, attrs=attrs_)
    return out.set_coords([c for c in coord_names if c in out.variables])
