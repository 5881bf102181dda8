"""The hybrid restorer family (issue 8): masking, PSNR, shapes, parameter and FLOP counts."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nca.config import ConfigError, load_config
from nca.hybrid import evaluate, masking, metrics, models, summary, train

KEY = jax.random.PRNGKey(7)


@pytest.fixture(scope="module")
def configs():
    return {n: load_config(n) for n in ("hybrid", "hybrid_ca_only", "cnn_autoencoder",
                                        "digit_classifier", "hybrid:gate_channel",
                                        "hybrid:gate_patch", "hybrid:gate_local")}  # fmt: skip


@pytest.fixture(scope="module")
def params(configs):
    return {n: models.init_params(jax.random.PRNGKey(0), c.model) for n, c in configs.items()}


# --------------------------------------------------------------------------------------------
# Masking


def test_masks_hide_exactly_70_percent():
    keep = np.asarray(masking.keep_mask(jax.random.PRNGKey(3), 50))
    assert keep.shape == (50, 28, 28)
    assert set(np.unique(keep)) == {0.0, 1.0}
    assert masking.num_masked() == 549  # round(0.7 * 784 = 548.8)
    np.testing.assert_array_equal((keep == 0).sum((1, 2)), 549)
    assert abs((keep == 0).mean() - 0.7) < 0.0005
    # different images get different masks, and every pixel gets hidden somewhere
    assert len({m.tobytes() for m in keep}) == 50
    assert (keep == 0).any(0).all()


def test_masks_reproducible_by_seed():
    a, b = masking.eval_masks(20, seed=5), masking.eval_masks(20, seed=5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, masking.eval_masks(20, seed=6))
    np.testing.assert_array_equal(a, masking.keep_mask(jax.random.PRNGKey(5), 20))


def test_other_rates_and_damage_mask():
    keep = np.asarray(masking.keep_mask(jax.random.PRNGKey(0), 4, rate=0.5))
    np.testing.assert_array_equal((keep == 0).sum((1, 2)), 392)
    damage = np.asarray(masking.cell_damage_mask(jax.random.PRNGKey(0), 3))
    assert damage.shape == (3, 32, 32, 1)
    np.testing.assert_array_equal((damage == 0).sum((1, 2, 3)), 307)  # round(0.3 * 1024)


def test_training_corruption_hides_exactly_the_training_rate(configs):
    images = jnp.full((6, 28, 28), 0.5)
    noisy, keep = train.corrupt(configs["hybrid"], images, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(np.asarray(keep == 0).sum((1, 2)), 549)
    noise = np.asarray(noisy - images)
    assert 0.03 < noise.std() < 0.07  # input_noise_std = 0.05


# --------------------------------------------------------------------------------------------
# PSNR


def test_psnr_hand_computed():
    x = np.random.default_rng(0).random((3, 28, 28))
    assert np.all(np.isinf(metrics.psnr(x, x)))  # identical images
    zeros, ones = np.zeros((2, 28, 28)), np.ones((2, 28, 28))
    np.testing.assert_allclose(metrics.psnr(zeros, ones), 0.0)  # MSE 1 at peak 1
    np.testing.assert_allclose(metrics.psnr(zeros, zeros + 0.5), 10 * np.log10(4))  # 6.02 dB
    np.testing.assert_allclose(metrics.psnr(zeros, zeros + 0.1), 20.0, atol=1e-9)


def test_psnr_per_image_mean_hidden_only_and_pooled():
    target = np.zeros((2, 28, 28))
    pred = target.copy()
    pred[0] = 0.1  # MSE 0.01 -> 20 dB
    pred[1] = 0.01  # MSE 1e-4 -> 40 dB
    assert metrics.mean_psnr(pred, target) == pytest.approx(30.0)
    assert metrics.pooled_psnr(pred, target) == pytest.approx(-10 * np.log10(0.00505))
    mask = np.zeros((2, 28, 28))
    mask[:, :14] = 1  # error only on the hidden half
    pred2 = np.where(mask == 1, 0.1, 0.0)
    np.testing.assert_allclose(metrics.psnr(pred2, target, mask), 20.0)
    np.testing.assert_allclose(metrics.psnr(pred2, target), 10 * np.log10(200))


def test_mean_fill_and_classifier_free_baselines():
    images = np.zeros((1, 28, 28))
    images[0, :, :14] = 1.0
    keep = np.zeros((1, 28, 28))
    keep[0, 0, :] = 1  # observe the first row: half ones, half zeros
    filled = evaluate.mean_fill(images, keep)
    assert filled[0, 5, 5] == pytest.approx(0.5)
    np.testing.assert_array_equal(filled[0, 0], images[0, 0])


# --------------------------------------------------------------------------------------------
# Models


def test_parameter_counts(params):
    count = models.count_params
    h = params["hybrid"]
    assert count(h["ca"]) == 1936  # dw 288 + 32, 1x1 32->32 1056, 32->16 528, LayerNorm 32
    assert count(h["gate"]) == 1_312_049  # 1024*1024+1024 + 1024*256+256 + 17 + 32
    assert count(h) == 1_314_050
    assert count(params["hybrid_ca_only"]) == 2001
    assert "gate" not in params["hybrid_ca_only"]
    assert count(params["hybrid:gate_channel"]["gate"]) == 1_312_000
    assert count(params["hybrid:gate_patch"]["gate"]) == 1_312_080
    assert count(params["hybrid:gate_local"]["gate"]) == 1304  # 3x3x16x8 + 8, 8x16 + 16
    assert 150_000 < count(params["cnn_autoencoder"]) < 250_000  # "about 0.2M"
    assert count(params["cnn_autoencoder"]) == 185_505


@pytest.mark.parametrize(
    "name",
    ["hybrid", "hybrid_ca_only", "cnn_autoencoder", "hybrid:gate_channel", "hybrid:gate_patch",
     "hybrid:gate_local"],
)  # fmt: skip
def test_restorer_shapes_and_range(configs, params, name):
    m = configs[name].model
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 28, 28))
    keep = masking.keep_mask(jax.random.PRNGKey(1), 2)
    out = models.restore(params[name], x, keep, m)
    assert out.shape == (2, 28, 28)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    if m.arch != "autoencoder":
        assert models.encode(params[name], x, keep).shape == (2, 32, 32, 16)


def test_gate_variants_produce_bounded_deltas(configs, params):
    s = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 16))
    for name in ("hybrid", "hybrid:gate_channel", "hybrid:gate_patch", "hybrid:gate_local"):
        g = dict(params[name]["gate"])
        g["delta"] = {"w": jnp.ones_like(g["delta"]["w"]) * 1e-4, "b": g["delta"]["b"]}
        d = models.gate_delta(g, s, configs[name].model)
        assert d.shape == s.shape
        assert 0.0 < float(jnp.abs(d).max()) < 1.0


def test_ca_only_is_local_and_the_gate_is_global(configs, params):
    """One CA step moves information one cell, with the local gate too; the (trained, non-zero)
    global gate reaches the whole lattice."""
    m = configs["hybrid"].model
    s = jax.random.normal(jax.random.PRNGKey(0), (1, 32, 32, 16))
    s2 = s.at[0, 16, 16].add(1.0)
    ca = dict(params["hybrid_ca_only"])
    ca["ca"] = dict(ca["ca"], out=params["hybrid"]["encoder"] | {
        "w": jax.random.normal(jax.random.PRNGKey(2), (32, 16)), "b": jnp.zeros(16)})  # fmt: skip
    changed = np.asarray(jnp.abs(models.ca_step(ca, s2, m) - models.ca_step(ca, s, m)).max(-1)[0])
    assert changed[15:18, 15:18].all() and (changed > 0).sum() == 9
    local = dict(ca, gate=dict(params["hybrid:gate_local"]["gate"]))
    local["gate"]["delta"] = {"w": jnp.full((8, 16), 0.1), "b": jnp.zeros(16)}
    m_local = configs["hybrid:gate_local"].model
    changed = np.asarray(
        jnp.abs(models.ca_step(local, s2, m_local) - models.ca_step(local, s, m_local)).max(-1)[0]
    )
    assert changed[15:18, 15:18].all() and (changed > 0).sum() == 9
    gate_only = models.gate_delta(local["gate"], s2, m_local) - models.gate_delta(
        local["gate"], s, m_local
    )
    assert float(jnp.abs(gate_only).max()) > 1e-3  # the local gate does act
    hy = dict(ca, gate=dict(params["hybrid"]["gate"]))
    hy["gate"]["delta"] = {"w": jnp.full((1024, 256), 0.01), "b": jnp.zeros(256)}
    changed = np.asarray(jnp.abs(models.ca_step(hy, s2, m) - models.ca_step(hy, s, m)).max(-1)[0])
    assert (changed > 0).mean() > 0.9


def test_damage_changes_only_damaged_runs(configs, params):
    m = configs["hybrid_ca_only"].model
    p = params["hybrid_ca_only"]
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 28, 28))
    keep = masking.keep_mask(jax.random.PRNGKey(1), 2)
    clean = models.restore(p, x, keep, m)
    np.testing.assert_allclose(
        models.restore(p, x, keep, m, damage=jnp.ones((2, 32, 32, 1))), clean, atol=1e-6
    )
    damage = masking.cell_damage_mask(jax.random.PRNGKey(2), 2)
    assert float(jnp.abs(models.restore(p, x, keep, m, damage=damage) - clean).max()) > 1e-3


def test_classifier_shapes(params):
    logits = models.classifier_logits(params["digit_classifier"], jnp.zeros((3, 28, 28)))
    assert logits.shape == (3, 10)


def test_bad_configs_are_refused(configs):
    with pytest.raises(ConfigError, match="unknown config option"):
        load_config("hybrid:gate_nope")
    c = configs["hybrid"].copy_and_resolve_references()
    c.model.gate = "nope"
    with pytest.raises(ConfigError, match="model.gate"):
        train.validate_config(c)
    c = configs["hybrid"].copy_and_resolve_references()
    c.model.arch = "nope"
    with pytest.raises(ConfigError, match="model.arch"):
        train.validate_config(c)


# --------------------------------------------------------------------------------------------
# FLOPs


@pytest.mark.parametrize(
    "name",
    ["hybrid:smoke", "hybrid_ca_only:smoke", "cnn_autoencoder:smoke", "digit_classifier:smoke",
     "hybrid:gate_patch,smoke", "hybrid:gate_channel,smoke", "hybrid:gate_local,smoke"],
)  # fmt: skip
def test_flop_count_matches_xla(name):
    m = load_config(name).model
    p = models.init_params(jax.random.PRNGKey(0), m)
    analytic = metrics.analytic_flops(m)
    xla = metrics.xla_cost(m, p, batch=2)
    # The issue allows 10 %. For the local gate XLA counts 0.73 MFLOPs more per chained CA step
    # than for one step alone (which matches the analytic count to 0.1 %): 9 % in all, most
    # likely the previous step's elementwise LayerNorm fused into each of the nine shifted
    # copies of the state that the gate's im2col reads.
    rel = 0.1 if "gate_local" in name else 0.05
    assert analytic["total"] == pytest.approx(xla["flops"], rel=rel)
    assert analytic["matmul"] <= xla["flops"]


def test_flop_count_scales_with_steps_and_gate(configs):
    h, c = (
        metrics.analytic_flops(configs["hybrid"].model),
        metrics.analytic_flops(configs["hybrid_ca_only"].model),
    )
    # the global gate per step: MLP 2 * (1024*1024 + 1024*256), 1x1 convs 16->1 and 1->16
    assert h["matmul"] - c["matmul"] == 10 * 2 * (1_310_720 + 2 * 1024 * 16)
    # the patch gate: the MLP on 16 patches, 1x1 conv 4->16
    patch = metrics.analytic_flops(configs["hybrid:gate_patch"].model)
    assert patch["matmul"] - c["matmul"] == 10 * 2 * (16 * 1_310_720 + 1024 * 4 * 16)
    # the local gate: 3x3 conv 16->8 as an im2col product (all 9 taps), 1x1 conv 8->16
    local = metrics.analytic_flops(configs["hybrid:gate_local"].model)
    assert local["matmul"] - c["matmul"] == 10 * 2 * (1024 * 9 * 16 * 8 + 1024 * 8 * 16)


def test_kmeans_purity_on_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.eye(10) * 10
    x = np.concatenate([c + rng.normal(0, 0.1, (10, 10)) for c in centres])
    classes = np.repeat(np.arange(10), 10)
    purity, clusters = evaluate.kmeans_purity(x, classes)
    assert purity == 1.0 and clusters == 10
    purity, _ = evaluate.kmeans_purity(x, rng.permutation(classes))
    assert purity < 0.6


def test_converged_means_no_gain_over_the_last_fifth(tmp_path):
    steps = np.arange(1, 11) * 1000
    rising = 20 + np.log(steps)  # still gaining at the end
    flat = np.minimum(20 + steps / 1000, 26.0)  # 26 dB reached at 6k, nothing after
    assert not summary.converged(steps, rising)
    assert summary.converged(steps, flat)
    assert summary.converged(steps, flat + np.r_[np.zeros(9), 0.04])  # within the tolerance
    assert not summary.converged(steps, flat + np.r_[np.zeros(9), 0.2])
    assert not summary.converged(steps[:4], flat[:4])  # too few points to tell
    rows = [{"step": int(s), "train/loss": 1.0, **({"val/psnr": float(p)} if s % 2000 == 0
             else {})} for s, p in zip(steps, flat, strict=True)]  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = summary.validation_report([tmp_path, tmp_path / "no_runs_here"])
    assert list(result.data) == [str(tmp_path)]  # a workdir without validation is left out
    run = result.data[str(tmp_path)]
    assert run["steps"] == [2000, 4000, 6000, 8000, 10000] and run["best"] == 26.0
    assert run["converged"] and "| yes |" in result.markdown
    assert summary.validation_report([tmp_path / "no_runs_here"]) is None


def test_local_gate_convolution_is_lax_conv():
    """The local gate's 3x3 convolution (nine shifted copies, one product) against `lax.conv`."""
    p = models._conv(jax.random.PRNGKey(0), 3, 16, 8)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 16))
    np.testing.assert_allclose(models._conv3x3_im2col(p, x), models._apply_conv(p, x), atol=1e-5)


def _ca_update_grouped_conv(p, s):
    """The CA update written plainly: depthwise 3x3 as a grouped `lax.conv`, then two 1x1 layers."""
    c, mult = p["dw"].shape[2:]
    kernel = p["dw"].reshape(3, 3, 1, c * mult)  # HWIO, output channel c * mult + m
    y = jax.lax.conv_general_dilated(
        s, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c
    )
    y = y + p["dw_b"]
    y = jax.nn.relu(models._apply_dense(p["mix"], jax.nn.relu(y)))
    return models._apply_dense(p["out"], y)


def test_ca_update_is_a_grouped_convolution_values_and_gradients(params):
    """`ca_update`'s multiplier-major depthwise layout computes the grouped convolution's
    function (weights in `lax.conv`'s channel order), values and gradients, with every weight
    non-zero and distinct per channel and multiplier."""
    p = jax.tree.map(lambda x: x, params["hybrid_ca_only"]["ca"])
    keys = jax.random.split(jax.random.PRNGKey(2), 4)
    p["dw_b"] = jax.random.normal(keys[0], p["dw_b"].shape)
    p["out"]["w"] = jax.random.normal(keys[1], p["out"]["w"].shape) * 0.1
    p["mix"]["b"] = jax.random.normal(keys[2], p["mix"]["b"].shape) * 0.1
    s = jax.random.normal(keys[3], (2, 32, 32, 16))
    np.testing.assert_allclose(models.ca_update(p, s), _ca_update_grouped_conv(p, s), atol=1e-5)

    def loss(f):
        return lambda p, s: jnp.sum(jnp.sin(f(p, s)))

    got = jax.grad(loss(models.ca_update), argnums=(0, 1))(p, s)
    want = jax.grad(loss(_ca_update_grouped_conv), argnums=(0, 1))(p, s)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------
# Microbatches (the CPU training path)


@pytest.mark.parametrize("name", ["hybrid_ca_only:smoke", "hybrid:smoke"])
def test_microbatches_give_the_batch_s_gradient_with_the_same_random_numbers(name):
    """The batch's gradient summed over microbatches of 2 digits: the same loss (each
    microbatch draws its digits' rows of the batch's noise and dropout; drawing its own moves the
    loss by about 5e-4) and the same gradient up to float rounding, every leaf
    non-zero (params perturbed off the zero-initialised layers)."""
    results = []
    for micro in (8, 2):
        c = load_config(name)
        c.batch_size, c.microbatch = 8, micro
        params = models.init_params(jax.random.PRNGKey(0), c.model)
        params = jax.tree.map(lambda x: x + 0.01 * jax.random.normal(KEY, x.shape), params)
        images = jax.random.uniform(jax.random.PRNGKey(1), (8, 28, 28))
        batch = {"images": images, "labels": jnp.zeros((8,), jnp.int32)}
        results.append(jax.jit(train.make_batch_gradient(c))(params, batch, KEY))
    ((loss, extra), grads), ((loss_mb, extra_mb), grads_mb) = results
    np.testing.assert_allclose(loss_mb, loss, rtol=1e-6)
    np.testing.assert_allclose(extra_mb["train/psnr"], extra["train/psnr"], rtol=1e-6)
    for g, want in zip(jax.tree.leaves(grads_mb), jax.tree.leaves(grads), strict=True):
        assert float(jnp.abs(want).max()) > 0
        np.testing.assert_allclose(g, want, rtol=1e-3, atol=1e-4 * float(jnp.abs(want).max()))


def test_microbatch_size_auto_and_errors(configs):
    c = load_config("hybrid_ca_only:blog_budget")
    assert train.microbatch_size(c) == train.CPU_MICROBATCH  # this CPU
    c.batch_size = 4
    assert train.microbatch_size(c) == 4
    autoencoder = configs["cnn_autoencoder"]
    assert train.microbatch_size(autoencoder) == autoencoder.batch_size
    c.microbatch = 3
    with pytest.raises(ConfigError, match="microbatch must divide batch_size"):
        train.validate_config(c)
    # runs saved before the field resume with it at any value, and may change it
    assert train.resumable("microbatch", None, 0, 100) and train.resumable("microbatch", 8, 4, 100)


def _result(rows, clean=0.99, digits=100):
    protocol = {"test_digits": digits, "hidden_pixels_per_digit": 549, "mask_seed": 1234}
    baselines = {"masked input": {"digit_id": 0.5}}
    groups = evaluate.aggregate(rows)
    return {"protocol": protocol, "classifier": {"clean_test_digit_id": clean}, "models": rows,
            "baselines": baselines, "groups": groups,
            "targets": evaluate.check_targets(groups, baselines)}  # fmt: skip


def test_earlier_runs_join_the_table_s_seeds():
    """Seeds evaluated in another session (workdirs gone) count in the groups; a re-evaluated
    workdir replaces its earlier row; another protocol or classifier is refused."""

    def row(workdir, psnr):
        return {"model": "ca_only", "workdir": workdir, "psnr": psnr, "psnr_hidden": psnr - 1,
                "digit_id": 0.98}  # fmt: skip

    earlier = _result([row("wd/s0", 22.0), row("wd/s1", 20.0)])
    merged = evaluate.with_earlier(_result([row("wd/s1", 23.0)]), earlier, "old/restore.json")
    assert [r["workdir"] for r in merged["models"]] == ["wd/s0", "wd/s1"]
    assert (
        merged["models"][0]["earlier"] == "old/restore.json"
        and "earlier" not in merged["models"][1]
    )
    assert merged["groups"]["ca_only"]["seeds"] == 2
    assert merged["groups"]["ca_only"]["psnr"] == pytest.approx(22.5)
    assert merged["groups"]["ca_only"]["psnr_std"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="not the same classifier"):
        evaluate.with_earlier(_result([row("wd/s1", 23.0)], clean=0.98), earlier, "old")
    with pytest.raises(ValueError, match="test_digits=100"):
        evaluate.with_earlier(_result([row("wd/s1", 23.0)], digits=24), earlier, "old")


def test_earlier_validation_curves_join_the_figure(tmp_path):
    run = tmp_path / "s1"
    run.mkdir()
    lines = [{"step": s, "val/psnr": 20.0 + s / 1000} for s in range(1000, 6000, 1000)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    earlier = {"wd/s0": {"steps": [1, 2], "psnr": [1.0, 2.0], "best": 2.0, "best_step": 2,
                         "converged": False}, str(run): {"stale": True}}  # fmt: skip
    runs = summary.validation_report([run], earlier).data
    assert list(runs) == ["wd/s0", str(run)] and runs[str(run)]["best"] == pytest.approx(25.0)


def test_earlier_figure_rows_join_the_figure():
    """`restore_panels.npz` round trip: a later evaluation draws the earlier runs' rows (8-bit,
    as stored) first, keeps each model's first row, and refuses other test digits."""
    rng = np.random.default_rng(0)

    def run(*labels):
        images = {label: rng.uniform(size=(10, 28, 28)) for label in labels}
        return {"clean": clean, "masked": clean * 0.5, "panels": images,
                "noise_panels": {labels[0]: rng.uniform(size=(10, 28, 28))}}  # fmt: skip

    clean = rng.uniform(size=(10, 28, 28))
    before, now = run("CA only", "CA only damaged"), run("local gate", "CA only")
    stored = summary.panel_arrays(before)
    assert stored["panel/CA only"].dtype == np.uint8
    merged = summary.with_earlier_panels(now, stored, "old")
    assert list(merged["panels"]) == ["CA only", "CA only damaged", "local gate"]
    np.testing.assert_allclose(
        merged["panels"]["CA only"], before["panels"]["CA only"], atol=0.5 / 255
    )
    assert merged["panels"]["local gate"] is now["panels"]["local gate"]
    assert list(merged["noise_panels"]) == ["CA only", "local gate"]
    with pytest.raises(ValueError, match="other test digits"):
        summary.with_earlier_panels(now | {"clean": clean[:5]}, stored, "old")
