"""Which versions to push to a ``tensors`` remote, with their delta bases (issue 15).

``mvc push NAME@REF``, ``mvc push --all-versions`` and the git pre-push hook name
versions by content hash only. A version is stored as a delta against its parent, so
the parents recorded in each version's manifest are read back from the pointers in git
history, and the versions are pushed parents first: a child pushed in the same run
then finds its parent's recipe on the remote and is stored as a delta too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from mvc import gitstore, pointer, tensorsync
from mvc.errors import SchemaError
from mvc.pointer import Pointer
from mvc.workspace import Workspace


def push_items(ws: Workspace, md5s: Sequence[str], labels: dict[str, str], released: Iterable[str] = ()) -> list[tensorsync.Item]:
    """The :class:`~mvc.tensorsync.Item` of each version ``md5s`` (labelled by ``labels``), parents first.

    Each item carries the parents its manifest records, found in the pointers of git
    history; a version no commit records keeps no parents (stored without a delta).
    """
    held = set(released)
    found = pointers_by_hash(ws, set(md5s))
    items = []
    for md5 in md5s:
        ptr = found.get(md5)
        it = tensorsync.item(ptr, held) if ptr is not None else tensorsync.Item(md5, labels[md5], (), md5 in held)
        items.append(replace(it, label=labels.get(md5, it.label)))
    return parents_first(items)


def pointers_by_hash(ws: Workspace, wanted: set[str]) -> dict[str, Pointer]:
    """A pointer recording each content hash in ``wanted``, from any commit of any ref.

    Newest commits first, stopping once every hash is found (one ``git log``, one
    ``git cat-file --batch``).
    """
    out: dict[str, Pointer] = {}
    if not wanted:
        return out
    with gitstore.blob_reader(ws.root) as blob:
        for commit in gitstore.all_commits_touching(ws.root, f"*{pointer.SUFFIX}"):
            for path in gitstore.list_files(ws.root, commit, suffix=pointer.SUFFIX):
                data = blob(commit, path)
                try:
                    ptr = pointer.parse(data, path) if data is not None else None
                except SchemaError:
                    continue
                if ptr is not None and ptr.md5 in wanted and ptr.manifest is not None and ptr.md5 not in out:
                    out[ptr.md5] = ptr
            if len(out) == len(wanted):
                break
    return out


def parents_first(items: list[tensorsync.Item]) -> list[tensorsync.Item]:
    """``items`` ordered so a version comes after every parent of it that is also in ``items``."""
    by_md5 = {it.md5: it for it in items}
    done: set[str] = set()
    out: list[tensorsync.Item] = []

    def visit(it: tensorsync.Item, seen: frozenset[str]) -> None:
        if it.md5 in done or it.md5 in seen:
            return
        for pmd5, _ in it.parents:
            parent = by_md5.get(pmd5)
            if parent is not None:
                visit(parent, seen | {it.md5})
        done.add(it.md5)
        out.append(it)

    for it in items:
        visit(it, frozenset())
    return out
