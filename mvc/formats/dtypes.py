"""Canonical dtype names shared by every format, and the conversions numpy lacks.

Canonical names are lowercase, numpy / torch style: ``float32``, ``bfloat16``,
``float8_e4m3fn``, ``int64``, ``bool``. gguf's quantized types keep their ggml name
lowercased (``q4_k``). numpy has no bfloat16 or float8, so readers hand those out as
float32 (``as_float32=True``) and the writer rounds float32 to bfloat16 itself.

numpy is imported inside functions only: ``import mvc.formats`` must stay cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mvc.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

# safetensors dtype code -> (canonical name, bits per element). The codes are the
# variants accepted by safetensors 0.8 (its parser lists them in its error message).
SAFETENSORS_DTYPES: dict[str, tuple[str, int]] = {
    "BOOL": ("bool", 8),
    "U8": ("uint8", 8),
    "I8": ("int8", 8),
    "U16": ("uint16", 16),
    "I16": ("int16", 16),
    "U32": ("uint32", 32),
    "I32": ("int32", 32),
    "U64": ("uint64", 64),
    "I64": ("int64", 64),
    "F16": ("float16", 16),
    "BF16": ("bfloat16", 16),
    "F32": ("float32", 32),
    "F64": ("float64", 64),
    "C64": ("complex64", 64),
    "F8_E4M3": ("float8_e4m3fn", 8),
    "F8_E5M2": ("float8_e5m2", 8),
    "F8_E4M3FNUZ": ("float8_e4m3fnuz", 8),
    "F8_E5M2FNUZ": ("float8_e5m2fnuz", 8),
    "F8_E8M0": ("float8_e8m0fnu", 8),
    "F6_E2M3": ("float6_e2m3fn", 6),
    "F6_E3M2": ("float6_e3m2fn", 6),
    "F4": ("float4_e2m1fn", 4),
}
CANONICAL_TO_SAFETENSORS: dict[str, str] = {v[0]: k for k, v in SAFETENSORS_DTYPES.items()}
BITS: dict[str, int] = {v[0]: v[1] for v in SAFETENSORS_DTYPES.values()}

# Canonical names numpy can hold natively.
NUMPY_NATIVE = frozenset(
    {
        "bool",
        "uint8",
        "int8",
        "uint16",
        "int16",
        "uint32",
        "int32",
        "uint64",
        "int64",
        "float16",
        "float32",
        "float64",
        "complex64",
        "complex128",
    }
)
# Floating types numpy lacks; each is read as raw unsigned bits then widened.
MINIFLOATS = frozenset(
    {"bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu"}
)
FLOATING = (
    frozenset({"float16", "float32", "float64"}) | MINIFLOATS | {"float6_e2m3fn", "float6_e3m2fn", "float4_e2m1fn"}
)


def numpy_dtype(name: str) -> np.dtype:
    """The little-endian numpy dtype of a canonical name numpy holds natively."""
    import numpy as np

    return np.dtype(name).newbyteorder("<")


def storage_dtype(name: str) -> np.dtype:
    """The numpy dtype to hold the raw elements of ``name``: itself, or uint bits."""
    import numpy as np

    if name in NUMPY_NATIVE:
        return numpy_dtype(name)
    if name == "bfloat16":
        return np.dtype("<u2")
    if name in MINIFLOATS:
        return np.dtype("u1")
    raise UsageError(
        f"{name} tensors cannot be read as arrays (sub-byte packed elements)",
        "index them with build_index(); reading them is not supported",
    )


def canonical_from_numpy(dtype: Any) -> str:
    """Canonical name of a numpy dtype (byte order dropped), e.g. ``>f4`` -> ``float32``.

    ml_dtypes' bfloat16 / float8 dtypes map by name. Strings, structured and other
    non-numeric dtypes keep numpy's little-endian type string (``<U10``, ``|S5``).
    """
    import numpy as np

    dt = np.dtype(dtype)
    if dt.name in MINIFLOATS:
        return dt.name
    if dt.fields is not None or dt.subdtype is not None:
        return str(np.lib.format.dtype_to_descr(dt.newbyteorder("<")))
    if dt.kind in "biufcmM":
        return dt.name
    if dt.kind == "O":
        return "object"
    return dt.newbyteorder("<").str


def normalize_dtype(dtype: Any) -> str:
    """Canonical name of a canonical name, a safetensors code, a numpy or torch dtype.

    Raises:
        UsageError: the dtype is not one a safetensors file can store.
    """
    if isinstance(dtype, str):
        if dtype in CANONICAL_TO_SAFETENSORS:
            return dtype
        if dtype in SAFETENSORS_DTYPES:
            return SAFETENSORS_DTYPES[dtype][0]
        if dtype.startswith("torch."):
            return normalize_dtype(dtype[len("torch.") :])
    mod = type(dtype).__module__
    if mod.startswith("torch"):
        return normalize_dtype(str(dtype))
    try:
        name = canonical_from_numpy(dtype)
    except TypeError:
        name = None
    if name in CANONICAL_TO_SAFETENSORS:
        return name
    raise UsageError(
        f"dtype {dtype!r} cannot be stored in a safetensors file",
        "use one of: " + ", ".join(sorted(CANONICAL_TO_SAFETENSORS)),
    )


def _minifloat_table(ebits: int, mbits: int, bias: int, kind: str) -> np.ndarray:
    """float32 value of each of the 256 codes of an 8-bit float format.

    kind: "ieee" (all-ones exponent is inf/nan), "fn" (only all-ones is nan, no inf),
    "fnuz" (only 0x80 is nan, no negative zero), "e8m0" (exponent only, unsigned).
    """
    import numpy as np

    out = np.empty(256, dtype=np.float32)
    emax = (1 << ebits) - 1
    mmax = (1 << mbits) - 1
    for code in range(256):
        if kind == "e8m0":
            out[code] = np.nan if code == 0xFF else np.float32(2.0 ** (code - 127))
            continue
        sign = -1.0 if code >> (ebits + mbits) & 1 else 1.0
        e = (code >> mbits) & emax
        m = code & mmax
        if kind == "fnuz" and code == 0x80:
            value = np.nan
        elif kind == "ieee" and e == emax:
            value = sign * np.inf if m == 0 else np.nan
        elif kind == "fn" and e == emax and m == mmax:
            value = np.nan
        elif e == 0:
            value = sign * (m / (1 << mbits)) * 2.0 ** (1 - bias)
        else:
            value = sign * (1 + m / (1 << mbits)) * 2.0 ** (e - bias)
        out[code] = value
    return out


_TABLE_ARGS = {
    "float8_e4m3fn": (4, 3, 7, "fn"),
    "float8_e5m2": (5, 2, 15, "ieee"),
    "float8_e4m3fnuz": (4, 3, 8, "fnuz"),
    "float8_e5m2fnuz": (5, 2, 16, "fnuz"),
    "float8_e8m0fnu": (8, 0, 127, "e8m0"),
}
_TABLES: dict[str, Any] = {}


def to_float32(raw: np.ndarray, name: str) -> np.ndarray:
    """Widen the raw elements of canonical dtype ``name`` to float32 (exactly).

    ``raw`` holds the stored elements: uint16 bits for bfloat16, uint8 for float8,
    the numpy type itself otherwise. Non-floating dtypes are returned unchanged.
    """
    import numpy as np

    if name == "bfloat16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    if name in _TABLE_ARGS:
        table = _TABLES.get(name)
        if table is None:
            table = _TABLES[name] = _minifloat_table(*_TABLE_ARGS[name])
        return table[raw]
    if name in FLOATING or raw.dtype.kind == "f":
        return raw.astype(np.float32)
    return raw


def float32_to_bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (round to nearest even), as uint16 bits.

    NaNs stay NaN (quiet), infinities stay infinite, values beyond bfloat16's range
    round to infinity, as torch's ``.to(torch.bfloat16)`` does.
    """
    import numpy as np

    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
    out = (rounded >> np.uint32(16)).astype(np.uint16)
    nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    if nan.any():
        out[nan] = ((bits[nan] >> np.uint32(16)) | np.uint32(0x0040)).astype(np.uint16)
    return out
