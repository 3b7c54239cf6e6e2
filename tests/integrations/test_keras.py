"""Keras 3 (torch backend) training a tiny model with MvcCheckpoint: real fit, real versions."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from mvc import refs, workspace
from mvc.errors import UsageError
from tests.integrations.helpers import history, on_experiment

pytestmark = pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="needs the integrations extra (keras)")


@pytest.fixture
def keras(monkeypatch):
    """Keras on the torch backend, imported with HOME isolated (it writes ~/.keras)."""
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    import keras

    assert keras.backend.backend() == "torch"
    keras.utils.set_random_seed(0)
    return keras


def _model(keras):
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    outputs = keras.layers.Dense(1)(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="mse", metrics=["mae"])
    return model


def _data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 4)).astype("float32")
    return x, x.sum(axis=1, keepdims=True)


def _reporting(keras, name: str, values: list[float]):
    """A callback that adds a metric to each epoch's logs, as a custom metric would."""

    class Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs[name] = values[epoch]

    return Report()


def test_every_epoch_a_version_with_logs_optimizer_and_fit_args(repo, keras):
    import torch
    from safetensors.torch import load_file

    from mvc.integrations.keras import MvcCheckpoint, load_weights

    on_experiment(repo)
    model = _model(keras)
    x, y = _data()
    checkpoint = MvcCheckpoint(repo / "models" / "reg.safetensors", params={"batch_size": 8})
    model.fit(x, y, epochs=3, batch_size=8, validation_data=(x, y), verbose=0, callbacks=[checkpoint])
    records = history(repo, "reg")
    assert [(r.version, r.manifest.step, r.manifest.experiment) for r in records] == [(1, 1, "x"), (2, 2, "x"), (3, 3, "x")]
    assert [v.commit for v in checkpoint.versions] == [r.commit for r in records]
    metrics = records[-1].manifest.metrics
    assert set(metrics) == {"loss", "mae", "val_loss", "val_mae"} and metrics["loss"] > 0
    params = records[-1].manifest.params
    assert params["optimizer"] == "adam" and params["optimizer.learning_rate"] == 0.01
    assert (params["epochs"], params["steps"], params["batch_size"]) == (3, 4, 8)
    assert "verbose" not in params and "optimizer.weight_decay" not in params  # None values left out
    saved = load_file(str(repo / "models" / "reg.safetensors"))
    assert sorted(saved) == ["dense/bias", "dense/kernel", "dense_1/bias", "dense_1/kernel"]
    fresh = _model(keras)  # Keras names its layers dense_2, dense_3: weights match by order
    load_weights(fresh, repo / "models" / "reg.safetensors")
    for a, b in zip(model.weights, fresh.weights, strict=True):
        assert torch.equal(a.value, b.value)  # exact round trip


def test_save_best_only_keeps_improvements_and_latest_is_the_best(repo, keras):
    from mvc.integrations.keras import MvcCheckpoint

    on_experiment(repo)
    x, y = _data()
    checkpoint = MvcCheckpoint(repo / "best.safetensors", monitor="val_score", save_best_only=True)
    scores = [0.5, 0.7, 0.6, 0.9]  # "score": higher is better in mode="auto"
    _model(keras).fit(x, y, epochs=4, batch_size=8, verbose=0, callbacks=[_reporting(keras, "val_score", scores), checkpoint])
    records = history(repo, "best")
    assert [(r.manifest.step, r.manifest.metrics["val_score"]) for r in records] == [(1, 0.5), (2, 0.7), (4, 0.9)]
    best = refs.resolve(workspace.open_workspace(repo), "best@latest")
    assert best.version == 3 and best.pointer.manifest.metrics["val_score"] == 0.9


def test_every_n_epochs_and_min_mode(repo, keras):
    from mvc.integrations.keras import MvcCheckpoint

    x, y = _data()
    checkpoint = MvcCheckpoint(repo / "m.safetensors", every_n_epochs=2, monitor="err", mode="min", save_best_only=True)
    errs = [0.9, 0.5, 0.4, 0.6, 0.1, 0.2]
    _model(keras).fit(x, y, epochs=6, batch_size=8, verbose=0, callbacks=[_reporting(keras, "err", errs), checkpoint])
    assert [r.manifest.step for r in history(repo, "m")] == [2, 6]  # epochs 2, 4, 6 considered; 4 did not improve


# pytest.warns records every warning, also the numpy-2 deprecation that Keras 3.15 triggers and catches itself
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_a_monitored_metric_never_reported_warns_once_and_saves_every_epoch(repo, keras):
    from mvc.integrations.keras import MvcCheckpoint

    x, y = _data()
    checkpoint = MvcCheckpoint(repo / "w.safetensors", monitor="val_accuracy", save_best_only=True)
    with pytest.warns(UserWarning, match=r"'val_accuracy' was not reported \(available: loss, mae\); versioning every epoch") as caught:
        _model(keras).fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[checkpoint])
    assert len([w for w in caught if "val_accuracy" in str(w.message)]) == 1
    assert [r.manifest.step for r in history(repo, "w")] == [1, 2]


def test_bad_paths_and_policies_fail_when_the_callback_is_made(repo, keras, tmp_path):
    from mvc.integrations.keras import MvcCheckpoint

    with pytest.raises(UsageError, match="is outside the repository"):
        MvcCheckpoint(tmp_path / "elsewhere" / "net.safetensors")
    with pytest.raises(UsageError, match="save_best_only needs the metric"):
        MvcCheckpoint(repo / "net.safetensors", save_best_only=True)
    with pytest.raises(UsageError, match="every_n_epochs must be a whole number"):
        MvcCheckpoint(repo / "net.safetensors", every_n_epochs=0)
    with pytest.raises(UsageError, match="mode must be"):
        MvcCheckpoint(repo / "net.safetensors", monitor="loss", mode="lowest")
    assert not Path(repo / "net.safetensors").exists()
