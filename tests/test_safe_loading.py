"""Safe loading: weights from others never run code when mvc indexes, diffs, signs or verifies them.

Each malicious file would create a marker file if its code ran; the tests prove it never exists.
"""

from __future__ import annotations

import base64
import json
import marshal
import pickle
import zipfile
from pathlib import Path

import pytest

from tests.formats import helpers as gguf_helpers
from tests.test_verify import only_error_line

torch = pytest.importorskip("torch")


class Evil:
    """Unpickling this object opens (creates) ``marker``: code execution by pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "pwned"


def _show_notes(cli, name: str) -> list[str]:
    result = cli("show", name)
    assert result.exit_code == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line.startswith("note:")]


def test_a_malicious_torch_checkpoint_is_indexed_opaque_and_never_unpickled(cli, repo, marker):
    evil = repo / "models" / "evil.pt"
    evil.parent.mkdir(parents=True)
    torch.save({"weight": torch.zeros(2, 2), "payload": Evil(marker)}, evil)
    result = cli("add", str(evil), "--json")
    assert result.exit_code == 0, result.stderr
    manifest = json.loads(result.stdout)["version"]["manifest"]
    assert (manifest["format"], manifest["index"]) == ("opaque", None)
    assert _show_notes(cli, "evil") == ["note:       opaque: needs arbitrary code to unpickle; not loaded (safe loading)"]
    for args in (("verify",), ("status",), ("diff", "evil", "evil", "--stats")):
        assert cli(*args).exit_code == 0
    assert not marker.exists()
    # The file really is malicious: an unsafe load runs its payload.
    torch.load(evil, weights_only=False)["payload"].close()
    assert marker.exists()


def test_a_malicious_legacy_pickle_is_versioned_as_a_blob_without_loading(cli, repo, marker):
    evil = repo / "evil.bin"
    with open(evil, "wb") as handle:
        pickle.dump({"payload": Evil(marker)}, handle)
    result = cli("add", str(evil))
    assert result.exit_code == 0, result.stderr
    notes = _show_notes(cli, "evil")
    assert len(notes) == 1 and notes[0].startswith("note:       opaque: legacy torch pickle")
    assert not marker.exists()


def test_diff_stats_against_a_malicious_version_runs_no_code(cli, repo, marker):
    import mvc

    path = repo / "net.pt"
    torch.save({"weight": torch.ones(3, 3)}, path)
    mvc.add(path)
    mvc.commit(repo=repo, message="good")
    torch.save({"weight": torch.ones(3, 3) * 2, "payload": Evil(marker)}, path)
    mvc.add(path)
    mvc.commit(repo=repo, message="evil")
    result = cli("diff", "net@v1", "net@v2", "--stats")
    assert result.exit_code == 0, result.stderr
    assert not marker.exists()


def test_a_keras_archive_with_a_code_carrying_lambda_is_versioned_without_loading(cli, repo, marker):
    code = compile(f"open({str(marker)!r}, 'w')", "<lambda>", "exec")
    config = {
        "class_name": "Sequential",
        "config": {
            "layers": [
                {"class_name": "Lambda", "config": {"function": {"class_name": "__lambda__", "config": {
                    "code": base64.b64encode(marshal.dumps(code)).decode(), "defaults": None, "closure": None}}}}
            ]
        },
    }
    archive = repo / "model.keras"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        zf.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + bytes(64))
    h5 = repo / "legacy.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(256))
    for path, name in ((archive, "model"), (h5, "legacy")):
        result = cli("add", str(path), "--json")
        assert result.exit_code == 0, result.stderr
        manifest = json.loads(result.stdout)["version"]["manifest"]
        assert (manifest["format"], manifest["framework"]) == ("opaque", "keras")
        assert len(_show_notes(cli, name)) == 1
    assert not marker.exists()


def test_a_gguf_header_is_read_without_running_its_chat_template(cli, repo, marker):
    template = "{{ cycler.__init__.__globals__.os.popen('touch " + str(marker) + "').read() }}"
    path = repo / "tiny.gguf"
    gguf_helpers.make_gguf(
        path,
        [("tok_embd.weight", [4, 2], 0, bytes(32))],
        kvs=[("general.architecture", gguf_helpers.STRING, "llama"), ("tokenizer.chat_template", gguf_helpers.STRING, template)],
    )
    result = cli("add", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    manifest = json.loads(result.stdout)["version"]["manifest"]
    assert manifest["format"] == "gguf" and manifest["tensors"]["count"] == 1
    assert not marker.exists()


def test_a_truncated_checkpoint_is_refused_with_one_line(cli, repo, marker):
    path = repo / "broken.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1")
    result = cli("add", str(path))
    assert result.exit_code == 6
    assert only_error_line(result.stderr).startswith("error: ")
    assert not (repo / "broken.safetensors.dvc").exists()
