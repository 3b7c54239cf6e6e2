"""PyTorch Lightning training a tiny module with MvcCheckpoint: real Trainer, real versions."""

from __future__ import annotations

import importlib.util

import pytest

from mvc import refs, workspace
from mvc.errors import UsageError
from tests.integrations.helpers import history, on_experiment

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("lightning") is None, reason="needs the integrations extra (lightning)"),
    # Lightning 2.6 on torch 2.13, not ours
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*smaller than the logging interval:UserWarning"),
]


@pytest.fixture
def L():
    import lightning

    return lightning


def _module(L, scores=None):
    import torch

    class Regressor(L.LightningModule):
        def __init__(self, lr: float = 0.05, hidden: int = 8):
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))

        def training_step(self, batch, _):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))
            if scores is not None and not self.trainer.sanity_checking:
                self.log("val_score", scores[self.current_epoch])

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    torch.manual_seed(0)
    return Regressor()


def _loader():
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=8)


def _fit(L, module, callback, epochs, tmp_path):
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path / "lightning",
        callbacks=[callback],
    )
    trainer.fit(module, _loader(), _loader())


def test_every_epoch_a_version_with_metrics_hparams_and_state_dict(repo, L, tmp_path):
    import torch
    from safetensors.torch import load_file

    from mvc.integrations.lightning import MvcCheckpoint

    on_experiment(repo)
    module = _module(L)
    callback = MvcCheckpoint(repo / "models" / "reg.safetensors")
    _fit(L, module, callback, 3, tmp_path)
    records = history(repo, "reg")
    assert [(r.version, r.manifest.step, r.manifest.experiment) for r in records] == [(1, 1, "x"), (2, 2, "x"), (3, 3, "x")]
    assert set(records[0].manifest.metrics) == {"train_loss", "val_loss"}  # validation ran before the save
    params = records[-1].manifest.params
    assert (params["lr"], params["hidden"], params["optimizer"], params["optimizer.lr"]) == (0.05, 8, "Adam", 0.05)
    assert params["trainer.max_epochs"] == 3 and params["trainer.precision"] == "32-true"
    saved = load_file(str(repo / "models" / "reg.safetensors"))
    state = module.state_dict()
    assert saved.keys() == state.keys() and all(torch.equal(saved[k], v) for k, v in state.items())
    assert [v.version for v in callback.versions] == [1, 2, 3]


def test_save_best_only_and_latest_is_the_best(repo, L, tmp_path):
    from mvc.integrations.lightning import MvcCheckpoint

    on_experiment(repo)
    callback = MvcCheckpoint(repo / "best.safetensors", monitor="val_score", mode="max", save_best_only=True)
    _fit(L, _module(L, scores=[0.2, 0.1, 0.4, 0.3]), callback, 4, tmp_path)
    records = history(repo, "best")
    assert [(r.manifest.step, r.manifest.metrics["val_score"]) for r in records] == [(1, 0.2), (3, 0.4)]
    best = refs.resolve(workspace.open_workspace(repo), "best@latest")
    assert best.version == 2 and best.pointer.manifest.step == 3


def test_a_monitored_metric_never_logged_warns_and_saves_every_epoch(repo, L, tmp_path):
    from mvc.integrations.lightning import MvcCheckpoint

    callback = MvcCheckpoint(repo / "w.safetensors", monitor="val_acc", save_best_only=True)
    with pytest.warns(UserWarning, match=r"'val_acc' was not reported \(available: train_loss, val_loss\)"):
        _fit(L, _module(L), callback, 2, tmp_path)
    assert [r.manifest.step for r in history(repo, "w")] == [1, 2]


def test_a_path_outside_the_repository(repo, L, tmp_path):
    from mvc.integrations.lightning import MvcCheckpoint

    with pytest.raises(UsageError, match="is outside the repository"):
        MvcCheckpoint(tmp_path / "out" / "net.safetensors")
