"""Is a legacy (pre-zip, torch < 1.6) ``torch.save`` file complete? Read as data, never unpickled.

The legacy layout is five pickles then the raw storages: the magic number, the protocol
version, sys info, the object (its tensors' storages appear as persistent ids
``('storage', torch.<Type>Storage, key, location, numel, ...)``), the list of storage keys;
then, per key in that order, an 8-byte little-endian element count and the elements.
``pickletools.genops`` walks the opcodes without running any of them, so a hostile file
costs nothing; a truncated one ends inside a pickle or inside a storage.
"""

from __future__ import annotations

import io
import pickletools
import struct
from pathlib import Path

MAGIC_PICKLE = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
"""``pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)``: how every legacy torch.save file starts."""

_ELEMENT_SIZES = {
    "DoubleStorage": 8,
    "FloatStorage": 4,
    "HalfStorage": 2,
    "BFloat16Storage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
    "ComplexFloatStorage": 8,
    "ComplexDoubleStorage": 16,
}


def is_legacy(head: bytes) -> bool:
    """True when the file's first bytes are the legacy magic pickle."""
    return head.startswith(MAGIC_PICKLE)


def damage(path: Path) -> str | None:
    """Why the legacy file at ``path`` is incomplete, or None when every byte it promises is there."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        try:
            for _ in range(3):  # magic, protocol version, sys info
                _skip_pickle(f)
            sizes = _storage_element_sizes(f)
            keys = _string_list(f)
        except ValueError as exc:
            return f"a pickle ends early ({exc})"
        for key in keys:
            raw = f.read(8)
            if len(raw) < 8:
                return f"storage {key} is missing"
            (count,) = struct.unpack("<q", raw)
            end = f.tell() + count * sizes.get(key, 1)
            if count < 0 or end > size:
                return f"storage {key} is cut short"
            f.seek(end)
    return None


def _skip_pickle(f: io.BufferedReader) -> None:
    for _ in pickletools.genops(f):
        pass


def _storage_element_sizes(f: io.BufferedReader) -> dict[str, int]:
    """Walk the object's pickle; map each storage key to its element size (from its persistent id).

    Strings and globals are followed through the memo (``BINPUT`` / ``BINGET``): the second
    storage's ``'storage'`` tag is a memo reference to the first one's.
    """
    sizes: dict[str, int] = {}
    memo: dict[int, object] = {}
    recent: list[object] = []
    last: object = None
    for op, arg, _pos in pickletools.genops(f):
        value: object = None
        if op.name in ("GLOBAL", "BINUNICODE", "SHORT_BINUNICODE", "UNICODE", "BINSTRING", "SHORT_BINSTRING", "BINUNICODE8"):
            value = arg
        elif op.name in ("BINGET", "LONG_BINGET", "GET"):
            value = memo.get(int(str(arg)))
        elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(str(arg))] = last
            continue
        elif op.name == "MEMOIZE":
            memo[len(memo)] = last
            continue
        last = value
        if value is None:
            continue
        recent = [*recent[-2:], value]
        # ('storage', GLOBAL 'torch FloatStorage', key, location, ...): the key follows the type.
        tag, storage_type, key = ([None] * 3 + recent)[-3:]
        if tag == "storage" and isinstance(storage_type, str) and storage_type.startswith("torch ") and isinstance(key, str):
            sizes[key] = _ELEMENT_SIZES.get(storage_type.split(" ", 1)[1], 1)
            recent = []
    return sizes


def _string_list(f: io.BufferedReader) -> list[str]:
    """The storage keys pickle: a list of strings."""
    return [str(arg) for op, arg, _pos in pickletools.genops(f) if "UNICODE" in op.name or "STRING" in op.name]
