"""The merge methods against direct numpy computations, and the merge recipe (mvc.mergeconfig)."""

from __future__ import annotations

import numpy as np
import pytest

from mvc import mergeconfig, merging
from mvc.errors import UsageError
from mvc.mergeconfig import MergeConfig


def rand(seed: int, shape: tuple[int, ...] = (32, 16)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---- direct numpy references (float64, written from the definitions) --------------------


def ref_slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos = float(np.sum(a64 * b64) / (np.linalg.norm(a64) * np.linalg.norm(b64)))
    if abs(cos) > 0.9995:
        return (1 - t) * a64 + t * b64
    theta = np.arccos(cos)
    return (np.sin((1 - t) * theta) * a64 + np.sin(t * theta) * b64) / np.sin(theta)


def ref_ties(base: np.ndarray, models: list[np.ndarray], weights: list[float], density: float, scale: float) -> np.ndarray:
    b64 = base.astype(np.float64)
    trimmed = []
    for m in models:
        d = (m.astype(np.float64) - b64).ravel()
        k = int(density * d.size)
        keep = np.argsort(-np.abs(d))[:k]
        t = np.zeros_like(d)
        t[keep] = d[keep]
        trimmed.append(t)
    elected = np.sign(sum(w * t for w, t in zip(weights, trimmed)))
    masks = [(np.sign(t) == elected) & (t != 0) for t in trimmed]
    num = sum(w * t * m for w, t, m in zip(weights, trimmed, masks))
    den = sum(w * m for w, m in zip(weights, masks))
    merged = num / np.where(den == 0, 1, den)
    return b64 + scale * merged.reshape(base.shape)


# ---- methods ------------------------------------------------------------------------------


def test_linear_is_the_weighted_sum():
    xs = [rand(i) for i in range(3)]
    weights = [0.5, 0.3, 0.2]
    got = merging.linear((x.copy() for x in xs), weights)
    expected = sum(w * x.astype(np.float64) for w, x in zip(weights, xs))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert got.dtype == np.float32


def test_linear_of_two_copies_is_bit_exact():
    x = rand(7)
    got = merging.linear([x.copy(), x.copy()], [0.5, 0.5])
    assert got.tobytes() == x.tobytes()


def test_task_arithmetic_adds_scaled_task_vectors():
    base, m1, m2 = rand(0), rand(1), rand(2)
    got = merging.task_arithmetic(base, [m1.copy(), m2.copy()], [0.6, 0.4], scale=0.5)
    b = base.astype(np.float64)
    expected = b + 0.5 * (0.6 * (m1 - b) + 0.4 * (m2 - b))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_task_arithmetic_of_copies_of_the_base_is_the_base():
    base = rand(3)
    got = merging.task_arithmetic(base, [base.copy(), base.copy()], [0.7, 0.9], scale=2.0)
    assert got.tobytes() == base.tobytes()


@pytest.mark.parametrize("t", [0.0, 0.3, 0.5, 1.0])
def test_slerp_matches_the_formula(t):
    a, b = rand(4), rand(5)
    got = merging.slerp(a.copy(), b.copy(), t)
    np.testing.assert_allclose(got, ref_slerp(a, b, t), rtol=1e-5, atol=1e-5)


def test_slerp_of_colinear_tensors_is_lerp():
    a = rand(6)
    b = a * 2.0
    got = merging.slerp(a.copy(), b.copy(), 0.25)
    np.testing.assert_allclose(got, 0.75 * a + 0.25 * b, rtol=1e-6)
    zero = np.zeros_like(a)
    np.testing.assert_allclose(merging.slerp(zero.copy(), a.copy(), 0.5), 0.5 * a)


def test_slerp_of_two_copies_is_bit_exact():
    a = rand(8)
    assert merging.slerp(a.copy(), a.copy(), 0.37).tobytes() == a.tobytes()


def test_ties_on_a_worked_example():
    base = np.zeros(4, dtype=np.float32)
    m1 = np.array([3.0, -1.0, 2.0, 0.5], dtype=np.float32)
    m2 = np.array([-2.0, -3.0, 1.0, 0.1], dtype=np.float32)
    # density 0.5 keeps 2 of 4: m1 -> [3, 0, 2, 0], m2 -> [-2, -3, 0, 0]; signs elected
    # from [1, -3, 2, 0] -> [+, -, +, 0]; each entry averages the agreeing values.
    got = merging.ties(base, [m1.copy(), m2.copy()], [1.0, 1.0], density=0.5)
    assert got.tolist() == [3.0, -3.0, 2.0, 0.0]


@pytest.mark.parametrize(("density", "weights", "scale"), [(0.2, [1.0, 1.0, 1.0], 1.0), (0.5, [0.5, 1.0, 2.0], 0.7), (1.0, [1.0, 1.0, 1.0], 1.0)])
def test_ties_matches_the_definition(density, weights, scale):
    base = rand(10)
    models = [base + 0.1 * rand(11 + i) for i in range(3)]
    got = merging.ties(base, [m.copy() for m in models], weights, density=density, scale=scale)
    np.testing.assert_allclose(got, ref_ties(base, models, weights, density, scale), rtol=1e-5, atol=1e-6)


def test_ties_of_copies_of_the_base_is_the_base():
    base = rand(12)
    got = merging.ties(base, [base.copy(), base.copy()], [1.0, 1.0], density=0.3)
    assert got.tobytes() == base.tobytes()


def test_trim_keeps_the_largest_fraction():
    x = np.array([0.1, -5.0, 0.3, 4.0, -0.2, 1.0, 0.0, -2.0, 0.05, 3.0], dtype=np.float32)
    merging.trim(x, 0.3)
    assert x.tolist() == [0.0, -5.0, 0.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0]


# ---- the recipe ---------------------------------------------------------------------------


def test_config_file_round_trip_and_first_matching_override_wins(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text(
        "method: linear\ninputs: [net@v1, net@v2]\nweights: [0.25, 0.75]\ndtype: float16\n"
        "overrides:\n  - match: 'layer1.*'\n    weights: [1, 0]\n  - match: '*.bias'\n    weights: [0.5, 0.5]\n"
    )
    cfg, notes = mergeconfig.complete(mergeconfig.load(path))
    assert cfg.inputs == ("net@v1", "net@v2") and cfg.dtype == "float16" and notes == ()
    assert cfg.weights_for("layer1.bias") == (1.0, 0.0)  # the first match, not '*.bias'
    assert cfg.weights_for("layer2.bias") == (0.5, 0.5)
    assert cfg.weights_for("layer2.weight") == (0.25, 0.75)


def test_given_values_win_over_the_file(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("method: slerp\ninputs: [a@v1, a@v2]\nparams: {t: 0.2}\noutput: x.safetensors\n")
    cfg = mergeconfig.combine(mergeconfig.load(path), inputs=(), method=None, params={"t": 0.9}, output="y.safetensors", normalize=False)
    cfg, _ = mergeconfig.complete(cfg)
    assert (cfg.method, cfg.inputs, cfg.params, cfg.output) == ("slerp", ("a@v1", "a@v2"), {"t": 0.9}, "y.safetensors")


def test_defaults_per_method():
    linear, _ = mergeconfig.complete(MergeConfig(inputs=("a", "b", "c")))
    assert linear.method == "linear" and linear.weights == pytest.approx((1 / 3,) * 3)
    ta, _ = mergeconfig.complete(MergeConfig(inputs=("a", "b"), method="task_arithmetic", base="a@v1", params={"lambda": 0.5}))
    assert ta.method == "task-arithmetic" and ta.weights == (1.0, 1.0) and ta.params == {"scale": 0.5}
    ties, _ = mergeconfig.complete(MergeConfig(inputs=("a",), method="ties", base="a@v1"))
    assert ties.params == {"density": 0.2, "scale": 1.0}


def test_weights_not_summing_to_one_warn_or_normalize():
    _, notes = mergeconfig.complete(MergeConfig(inputs=("a", "b"), weights=(1.0, 2.0)))
    assert notes and "sum to 3, not 1" in notes[0]
    cfg, notes = mergeconfig.complete(MergeConfig(inputs=("a", "b"), weights=(1.0, 3.0), normalize=True))
    assert cfg.weights == (0.25, 0.75) and notes == ()


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (MergeConfig(inputs=("a", "b", "c"), method="slerp"), "slerp merges exactly two models, got 3"),
        (MergeConfig(inputs=("a", "b"), method="average"), "unknown merge method 'average'"),
        (MergeConfig(inputs=("a",)), "linear needs at least 2 models, got 1"),
        (MergeConfig(inputs=("a", "b"), method="ties"), "ties needs a base model"),
        (MergeConfig(inputs=("a", "b"), base="a@v1"), "linear takes no base model"),
        (MergeConfig(inputs=("a", "b"), weights=(1.0,)), "1 weights for 2 models"),
        (MergeConfig(inputs=("a", "b"), params={"t": 0.5}), "linear has no parameter 't'"),
        (MergeConfig(inputs=("a", "b"), method="slerp", params={"t": 1.5}), "slerp t must be between 0 and 1"),
        (MergeConfig(inputs=("a",), method="ties", base="a", params={"density": 0}), "ties density must be in (0, 1]"),
        (MergeConfig(inputs=("a", "b"), method="slerp", weights=(0.5, 0.5)), "slerp takes no weights"),
        (MergeConfig(inputs=("a", "b"), method="slerp", normalize=True), "--normalize applies to linear and task-arithmetic"),
        (MergeConfig(inputs=("a", "b"), dtype="int8"), "unknown output dtype 'int8'"),
        (MergeConfig(inputs=("a", "b"), weights=(1.0, -1.0), normalize=True), "sum to 0"),
    ],
)
def test_bad_recipes_are_usage_errors(cfg, message):
    with pytest.raises(UsageError) as info:
        mergeconfig.complete(cfg)
    assert message in info.value.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("methd: linear\n", "unknown key 'methd'"),
        ("inputs: net@v1\n", "inputs must be a list of model references"),
        ("weights: [a, 1]\n", "'a' is not a number"),
        ("overrides:\n  - weights: [1, 0]\n", "needs a match glob"),
        ("overrides:\n  - match: '*'\n", "sets neither weights nor params"),
        ("- a\n- b\n", "does not hold a mapping"),
    ],
)
def test_bad_config_files_are_usage_errors(tmp_path, text, message):
    path = tmp_path / "merge.yaml"
    path.write_text(text)
    with pytest.raises(UsageError) as info:
        mergeconfig.load(path)
    assert message in info.value.message


def test_parse_weights():
    assert mergeconfig.parse_weights("0.5, 0.25,0.25") == (0.5, 0.25, 0.25)
    with pytest.raises(UsageError, match="is not a number"):
        mergeconfig.parse_weights("0.5,,0.5")
    with pytest.raises(UsageError, match="not a finite number"):
        mergeconfig.parse_weights("nan,1")
