"""Hugging Face Trainer fine-tuning a tiny BERT (built from a config, no download) with MvcCallback."""

from __future__ import annotations

import importlib.util

import pytest

from mvc import refs, workspace
from mvc.errors import UsageError
from tests.integrations.helpers import history, on_experiment

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None or importlib.util.find_spec("accelerate") is None,
    reason="needs the integrations extra (transformers, accelerate)",
)


@pytest.fixture
def hf(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    import transformers

    return transformers


def _trainer(hf, output_dir, callback, *, epochs=2):
    import torch

    torch.manual_seed(0)
    config = hf.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    model = hf.BertForSequenceClassification(config)

    class Tokens(torch.utils.data.Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return {"input_ids": torch.randint(0, 50, (8,), generator=g), "labels": torch.tensor(i % 2)}

    args = hf.TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=epochs,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        save_total_limit=1,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=7,
    )
    return hf.Trainer(model=model, args=args, train_dataset=Tokens(), eval_dataset=Tokens(), callbacks=[callback])


def test_each_saved_checkpoint_is_a_version_with_args_and_eval_metrics(repo, hf):
    from mvc.integrations.transformers import MvcCallback

    on_experiment(repo)
    callback = MvcCallback(name="tiny-bert")  # default path: OUTPUT_DIR/model.safetensors
    trainer = _trainer(hf, repo / "runs" / "bert", callback)
    trainer.train()
    records = history(repo, "tiny-bert")
    assert [(r.version, r.manifest.step, r.manifest.experiment) for r in records] == [(1, 4, "x"), (2, 8, "x")]
    metrics = records[-1].manifest.metrics
    assert set(metrics) == {"loss", "eval_loss", "epoch"} and metrics["epoch"] == 2.0
    params = records[-1].manifest.params
    assert (params["learning_rate"], params["num_train_epochs"], params["per_device_train_batch_size"]) == (1e-3, 2, 4)
    assert (params["seed"], params["eval_strategy"], params["save_total_limit"]) == (7, "epoch", 1)
    assert not any("token" in key for key in params) and "logging_steps" not in params  # defaults left out
    weights = repo / "runs" / "bert" / "model.safetensors"
    assert weights.read_bytes() == (repo / "runs" / "bert" / "checkpoint-8" / "model.safetensors").read_bytes()
    latest = refs.resolve(workspace.open_workspace(repo), "tiny-bert@latest")
    assert latest.version == 2 and latest.hash == records[-1].hash
    assert [v.commit for v in callback.versions] == [r.commit for r in records]


def test_a_path_outside_the_repository(repo, hf, tmp_path):
    from mvc.integrations.transformers import MvcCallback

    with pytest.raises(UsageError, match="is outside the repository"):
        MvcCallback(tmp_path / "elsewhere" / "model.safetensors")
    trainer = _trainer(hf, tmp_path / "outside-run", MvcCallback(), epochs=1)  # default path, checked when training starts
    with pytest.raises(UsageError, match="outside-run/model.safetensors is outside the repository"):
        trainer.train()
    assert not (tmp_path / "outside-run" / "checkpoint-4").exists()


def test_a_checkpoint_records_only_metrics_logged_at_its_own_step(repo, hf):
    import os
    import stat

    from mvc.integrations.transformers import MvcCallback

    callback = MvcCallback(name="tiny-bert")
    trainer = _trainer(hf, repo / "runs" / "bert", callback, epochs=1)
    args = trainer.args
    args.eval_strategy = args.save_strategy = args.logging_strategy = hf.IntervalStrategy.STEPS
    args.max_steps, args.save_steps, args.eval_steps, args.logging_steps = 8, 2, 4, 2
    old = os.umask(0o027)
    try:
        trainer.train()
    finally:
        os.umask(old)
    records = history(repo, "tiny-bert")
    assert [r.manifest.step for r in records] == [2, 4, 6, 8]
    logged = {e["step"]: e for e in trainer.state.log_history if "eval_loss" in e}
    assert sorted(logged) == [4, 8]
    by_step = {r.manifest.step: r.manifest.metrics for r in records}
    assert "eval_loss" not in by_step[2] and "eval_loss" not in by_step[6]  # not step 4's evaluation
    assert [by_step[s]["eval_loss"] for s in (4, 8)] == pytest.approx([logged[s]["eval_loss"] for s in (4, 8)])
    loss = {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e}
    assert {s: m["loss"] for s, m in by_step.items()} == pytest.approx(loss)
    # Written with the umask's permissions, not mkstemp's 0600.
    assert stat.S_IMODE((repo / "runs" / "bert" / "model.safetensors").stat().st_mode) == 0o640
