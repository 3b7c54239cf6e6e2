"""A plain PyTorch loop versioning its model every epoch with save_version."""

from __future__ import annotations

import pytest

import mvc.api
from mvc import refs, workspace
from mvc.errors import UsageError
from tests.integrations.helpers import history, on_experiment

torch = pytest.importorskip("torch")


def _train(model, steps: int = 4) -> float:
    torch.manual_seed(0)
    x = torch.randn(32, 4)
    y = x.sum(dim=1, keepdim=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
    return loss.detach()


def test_a_version_per_epoch_with_metrics_and_steps(repo):
    from safetensors.torch import load_file

    from mvc.integrations.torch import save_version

    on_experiment(repo)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    path = repo / "models" / "mlp.safetensors"
    for epoch in (1, 2, 3):
        loss = _train(model)
        logged = save_version(model, path, step=epoch, params={"lr": 0.05}, metrics={"loss": loss})
        assert (logged.version, logged.created) == (epoch, True)
    records = history(repo, "mlp")
    assert [(r.manifest.step, r.manifest.experiment) for r in records] == [(1, "x"), (2, "x"), (3, "x")]
    assert all(isinstance(r.manifest.metrics["loss"], float) for r in records)
    assert records[0].manifest.params == {"lr": 0.05} and records[0].manifest.format == "safetensors"
    saved = load_file(str(path))
    assert saved.keys() == model.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())  # exact round trip
    latest = refs.resolve(workspace.open_workspace(repo), "mlp@latest")
    assert latest.version == 3 and latest.hash == records[-1].hash
    again = save_version(model, path, step=4)
    assert not again.created and again.version == 3


def test_tied_weights_and_views_are_written_as_copies(repo):
    from safetensors.torch import load_file

    from mvc.integrations.torch import save_version

    embedding = torch.nn.Embedding(10, 4)
    head = torch.nn.Linear(4, 10, bias=False)
    head.weight = embedding.weight  # tied, as in language models
    model = torch.nn.ModuleDict({"embed": embedding, "head": head})
    state = dict(model.state_dict())
    state["slice"] = torch.arange(12.0).reshape(3, 4)[:, 1:]  # a non-contiguous view
    logged = save_version(state, repo / "lm.safetensors")
    assert logged.created and logged.name == "lm"
    saved = load_file(str(repo / "lm.safetensors"))
    assert torch.equal(saved["embed.weight"], saved["head.weight"])
    assert torch.equal(saved["slice"], state["slice"])


def test_a_state_dict_entry_that_is_no_tensor(repo):
    from mvc.integrations.torch import save_version

    with pytest.raises(UsageError, match="'epoch' is a int, not a tensor"):
        save_version({"w": torch.zeros(2), "epoch": 3}, repo / "bad.safetensors")
    assert not (repo / "bad.safetensors").exists()
    assert mvc.api.models(repo=repo) == []


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_saved_weights_get_the_umask_permissions(repo, umask, mode):
    import os
    import stat

    from mvc.integrations.torch import save_version

    path = repo / "models" / "mlp.safetensors"
    old = os.umask(umask)
    try:
        save_version(torch.nn.Linear(2, 2), path, commit=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
