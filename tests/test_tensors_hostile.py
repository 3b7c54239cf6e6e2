"""A hostile tensors remote (issue 15 x the hostile-repository experiments of the brief).

Whoever can write the bucket controls every recipe and chunk in it. A recipe names its
chunks by id, and mvc builds local and remote paths from those ids: an id that is not a
chunk hash (``../`` or an absolute path) must be refused before any path is built, so a
pull can neither read outside the layout's chunk directory nor write outside
``.dvc/tmp``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mvc import tensorstore
from mvc.errors import IntegrityError
from tests.conftest import assert_one_line_error
from tests.test_cloud_remotes import clone, commit_all
from tests.test_tensors import _head_file, chain_steps

ESCAPES = ["../../../../../../../../escaped", "/" + "e" * 63, "A" * 64, "ab", "0" * 63 + "/"]


@pytest.mark.parametrize("bad", ESCAPES)
def test_a_recipe_naming_a_chunk_by_anything_but_its_hash_is_refused(bad: str) -> None:
    good = tensorstore.Recipe(md5="a" * 32, size=1, format="opaque", parts=(tensorstore.Part(id="b" * 64, size=1),))
    for field in ("id", "base"):
        data = json.loads(good.to_bytes())
        data["parts"][0][0 if field == "id" else 6] = bad

        with pytest.raises(IntegrityError, match="unreadable"):
            tensorstore.Recipe.from_bytes(json.dumps(data).encode(), "a" * 32)


def test_a_pull_through_a_recipe_with_a_path_escaping_id_writes_nothing_outside(
    repo: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    assert cli("remote", "add", "shared", str(store), "--layout", "tensors", "--default").exit_code == 0
    commit_all(repo, "tensors remote")
    (md5,) = list(chain_steps(repo, 1))
    assert cli("push").exit_code == 0
    other = clone(repo, tmp_path / "clone")
    recipe_file = store / "mvc" / "recipes" / md5[:2] / md5[2:]
    data = json.loads(recipe_file.read_bytes())
    # the id climbs out of .dvc/tmp/mvc-chunks of the clone; the "chunk" it names exists on
    # the remote side too (the same climb from mvc/chunks), so only a refusal stops the write
    climb = "../" * 6 + "escaped"
    data["parts"][0][0] = climb
    recipe_file.write_text(json.dumps(data))
    (store / "mvc" / "chunks" / ".." / ".." / ".." / ".." / ".." / "escaped").parent.mkdir(parents=True, exist_ok=True)
    for folder in (store, store.parent, tmp_path):
        (folder / "escaped").write_bytes(b"payload")

    failed = cli("pull", cwd=other)

    assert_one_line_error(failed, 6, f"error: the tensor recipe of {md5[:8]} on the remote is unreadable")
    assert not _head_file(other).exists()
    written = [p for p in tmp_path.rglob("escaped") if p.read_bytes() != b"payload"]
    assert not written and not list((other / ".dvc").rglob("escaped"))


def test_a_chunk_claiming_more_raw_bytes_than_any_part_is_corrupt_before_it_is_inflated() -> None:
    import zstandard

    small = tensorstore.encode(b"\0" * 4096, 1)[0]
    head = tensorstore.read_head(small, "c" * 64)
    # a zstd bomb: a few KiB that inflate to 1 GiB of zeros, in a header that admits it
    bomb = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    frame = b"".join(bomb.compress(b"\0" * 2**24) for _ in range(64)) + bomb.flush()
    forged = bytes(small[:4]) + bytes([tensorstore.ZSTD, 1, 0, 0]) + (2**30).to_bytes(8, "little") + frame

    assert head.size == 4096
    with pytest.raises(IntegrityError, match="is corrupt"):
        tensorstore.read_head(forged, "c" * 64)
    with pytest.raises(IntegrityError, match="is corrupt"):
        tensorstore.decode(forged, "c" * 64)
