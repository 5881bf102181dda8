"""The restoration experiment of issue 8 on trained workdirs: PSNR, digit-ID, damage, FLOPs,
throughput, trivial baselines, the blog's numbers beside ours, and the noise-valley count.

`experiments/restore.py` is the command, `nca.hybrid.summary` formats the results; everything here
is importable and tested on tiny data.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from nca.hybrid import masking, metrics, models

DAMAGE_RATE = 0.3
DAMAGE_SEED = 4321
NOISE_SEED = 777
# The blog's claims: PSNR (dB), digit-ID accuracy, GFLOPs per sample.
BLOG = {
    "autoencoder": {"psnr": 24.3, "digit_id": 0.82, "gflops": 4.8},
    "hybrid": {"psnr": 26.7, "digit_id": 0.94, "gflops": 2.4},
    "ca_only": {"psnr": 21.1, "digit_id": 0.64, "gflops": 0.02},
}


def model_label(m: ml_collections.ConfigDict) -> str:
    """`hybrid` (global gate), `hybrid/patch`, `ca_only`, `autoencoder`."""
    if m.arch == "hybrid" and m.gate != "global":
        return f"hybrid/{m.gate}"
    return m.arch


def batched(fn: Callable, arrays: tuple, batch_size: int, desc: str = "") -> np.ndarray:
    """`fn(*chunk)` over the leading axis in chunks of `batch_size` (last chunk padded, so one
    compiled shape), concatenated on the host."""
    n = arrays[0].shape[0]
    out = []
    for start in tqdm(range(0, n, batch_size), desc=desc, leave=False, disable=not desc):
        chunk = [a[start : start + batch_size] for a in arrays]
        size = chunk[0].shape[0]
        if size < batch_size:
            chunk = [np.concatenate([c, np.repeat(c[-1:], batch_size - size, 0)]) for c in chunk]
        out.append(np.asarray(fn(*chunk))[:size])
    return np.concatenate(out)


def make_classify(classifier_params, batch_size: int = 1000) -> Callable:
    """`images (N, 28, 28) -> predicted digits (N,)` with the frozen classifier."""
    logits = jax.jit(models.classifier_logits)
    return lambda images: batched(
        lambda x: logits(classifier_params, x).argmax(-1), (images,), batch_size
    )


def mean_fill(images: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Hidden pixels filled with the mean of that image's observed pixels."""
    mean = (images * keep).sum((1, 2), keepdims=True) / keep.sum((1, 2), keepdims=True)
    return images * keep + mean * (1 - keep)


def image_scores(out, images, keep, labels, classify) -> dict:
    """PSNR (per-image mean over all pixels; over hidden pixels; pooled) and digit-ID."""
    return {
        "psnr": metrics.mean_psnr(out, images),
        "psnr_hidden": metrics.mean_psnr(out, images, 1 - keep),
        "psnr_pooled": metrics.pooled_psnr(out, images),
        "digit_id": float(np.mean(classify(out) == labels)),
    }


def throughput(fn: Callable, args: tuple, reps: int = 5) -> float:
    """Samples per second of the jitted `fn(*args)` (after one warm-up call)."""
    jax.block_until_ready(fn(*args))
    t = time.perf_counter()
    for _ in range(reps):
        jax.block_until_ready(fn(*args))
    return reps * args[1].shape[0] / (time.perf_counter() - t)


def evaluate_restorer(
    config: ml_collections.ConfigDict,
    params,
    images: np.ndarray,
    labels: np.ndarray,
    keep: np.ndarray,
    classify: Callable,
    batch_size: int = 500,
    throughput_batch: int = 256,
    progress: bool = True,
) -> tuple[dict, np.ndarray, np.ndarray | None]:
    """All measurements of one trained restorer. Returns (results, restored, damaged restored
    or None)."""
    m = config.model
    params = jax.tree.map(jnp.asarray, params)
    forward = jax.jit(lambda p, x, k: models.restore(p, x, k, m))
    label = model_label(m)
    restored = batched(lambda x, k: forward(params, x, k), (images, keep), batch_size,
                       desc=f"{label} restore" if progress else "")  # fmt: skip
    res = {"model": label, "params": models.count_params(params), **image_scores(
        restored, images, keep, labels, classify)}  # fmt: skip
    damaged = None
    if m.arch != "autoencoder":
        damage = np.asarray(
            masking.cell_damage_mask(jax.random.PRNGKey(DAMAGE_SEED), len(images), DAMAGE_RATE)
        )
        fwd_damage = jax.jit(lambda p, x, k, d: models.restore(p, x, k, m, damage=d))
        damaged = batched(lambda x, k, d: fwd_damage(params, x, k, d), (images, keep, damage),
                          batch_size, desc=f"{label} damaged" if progress else "")  # fmt: skip
        scores = image_scores(damaged, images, keep, labels, classify)
        res["damaged"] = scores
        res["damage_psnr_drop"] = res["psnr"] - scores["psnr"]
        res["damage_digit_id_drop"] = res["digit_id"] - scores["digit_id"]
    analytic = metrics.analytic_flops(m)
    xla = metrics.xla_cost(m, params)
    res["flops"] = {"analytic": analytic, "xla": xla["flops"],
                    "xla_transcendentals": xla["transcendentals"],
                    "analytic_over_xla": analytic["total"] / xla["flops"]}  # fmt: skip
    tb = min(throughput_batch, len(images))
    res["throughput_per_s"] = throughput(forward, (params, images[:tb], keep[:tb]))
    res["throughput_batch"] = tb
    return res, restored, damaged


def kmeans_purity(x: np.ndarray, classes: np.ndarray, k: int = 10, seed: int = 0, iters: int = 50):
    """k-means (k-means++ start) of rows of `x`; purity = share of samples whose class is their
    cluster's majority class."""
    rng = np.random.default_rng(seed)
    x = x.reshape(len(x), -1).astype(np.float64)
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, min(k, len(x))):
        d = np.min([((x - c) ** 2).sum(1) for c in centres], 0)
        p = d / d.sum() if d.sum() > 0 else None
        centres.append(x[rng.choice(len(x), p=p)])
    centres = np.array(centres)
    for _ in range(iters):
        assign = ((x[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        for j in range(len(centres)):
            if np.any(assign == j):
                centres[j] = x[assign == j].mean(0)
    majority = sum(np.bincount(classes[assign == j]).max() for j in set(assign.tolist()))
    return float(majority / len(x)), int(len(set(assign.tolist())))


def noise_valleys(config, params, classify: Callable, n: int = 100, seed: int = NOISE_SEED):
    """Report only: `n` lattices of N(0, 1) noise run `num_ca_steps` steps with no input; the
    read-outs classified (distinct classes, counts) and clustered (k-means k=10 purity)."""
    m = config.model
    params = jax.tree.map(jnp.asarray, params)
    s0 = jax.random.normal(jax.random.PRNGKey(seed), (n, 32, 32, m.channels))
    out = np.asarray(jax.jit(lambda p, s: models.readout(p, models.run_lattice(p, s, m)))(
        params, s0))  # fmt: skip
    classes = classify(out)
    purity, clusters = kmeans_purity(out, classes)
    return {
        "num_lattices": n,
        "distinct_classes": int(len(set(classes.tolist()))),
        "class_counts": np.bincount(classes, minlength=10).tolist(),
        "kmeans_purity": purity,
        "kmeans_clusters": clusters,
        "mean_output": float(out.mean()),
        "output_std_across_lattices": float(out.std(0).mean()),
    }, out


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}; jax {jax.__version__}; {jax.devices()[0].platform}"


def aggregate(rows: list[dict]) -> dict[str, dict]:
    """Mean and std over seeds of the headline numbers, per model label."""
    keys = ("psnr", "psnr_hidden", "digit_id")
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["model"], []).append(r)
    out = {}
    for label, rs in groups.items():
        g = {"seeds": len(rs)}
        for k in keys:
            v = np.array([r[k] for r in rs])
            g[k], g[k + "_std"] = float(v.mean()), float(v.std())
        if "damaged" in rs[0]:
            v = np.array([r["damage_digit_id_drop"] for r in rs])
            g["damage_digit_id_drop"], g["damage_digit_id_drop_std"] = (
                float(v.mean()),
                float(v.std()),
            )
            v = np.array([r["damage_psnr_drop"] for r in rs])
            g["damage_psnr_drop"] = float(v.mean())
        out[label] = g
    return out


def check_targets(groups: dict[str, dict], baselines: dict[str, dict]) -> dict[str, dict]:
    """Issue 8's targets on the seed means: `{target: {"value": ..., "met": bool}}`."""
    t = {}
    h, c, a = groups.get("hybrid"), groups.get("ca_only"), groups.get("autoencoder")
    masked = baselines["masked input"]
    if h and c:
        t["PSNR hybrid >= CA only + 1 dB"] = (h["psnr"] - c["psnr"], h["psnr"] - c["psnr"] >= 1)
        t["PSNR both >= 15 dB"] = (min(h["psnr"], c["psnr"]), min(h["psnr"], c["psnr"]) >= 15)
        d = h["digit_id"] - c["digit_id"]
        t["digit-ID hybrid >= CA only + 5 points"] = (100 * d, d >= 0.05)
    if h and a:
        d = h["psnr"] - a["psnr"]
        t["PSNR hybrid within 1.5 dB of autoencoder or better"] = (d, d >= -1.5)
        t["report: hybrid beats autoencoder (PSNR)"] = (d, d > 0)
    if h:
        t["digit-ID hybrid >= 0.80"] = (h["digit_id"], h["digit_id"] >= 0.80)
        d = h["digit_id"] - masked["digit_id"]
        t["digit-ID hybrid >= masked input + 10 points"] = (100 * d, d >= 0.10)
        if "damage_digit_id_drop" in h:
            d = h["damage_digit_id_drop"]
            t["damage costs hybrid <= 10 points of digit-ID"] = (100 * d, d <= 0.10)
    return {k: {"value": float(v), "met": bool(ok)} for k, (v, ok) in t.items()}


def with_earlier(result: dict, earlier: dict, source: str) -> dict:
    """`result` (`run_experiment`'s) with the `models` rows of an earlier `restore.json`
    (`earlier`) it did not re-evaluate (same workdir), marked `"earlier": source`, counted in its
    groups and targets: one table's seeds trained in different sessions, whose workdirs are gone.
    Raises ValueError unless both used the same test digits, masks and classifier."""
    for key in ("test_digits", "hidden_pixels_per_digit", "mask_seed"):
        if earlier["protocol"][key] != result["protocol"][key]:
            raise ValueError(
                f"{source} was measured with {key}={earlier['protocol'][key]}, this run with "
                f"{result['protocol'][key]}; evaluate with the same protocol to combine them."
            )
    then, now = earlier["classifier"], result["classifier"]
    if then["clean_test_digit_id"] != now["clean_test_digit_id"]:
        raise ValueError(
            f"{source}'s classifier scored {then['clean_test_digit_id']} on clean test digits, "
            f"--classifier {now['clean_test_digit_id']}: not the same classifier, so digit-ID "
            f"would not compare; retrain it with its recipe (digit_classifier) or pass its workdir."
        )
    fresh = {r["workdir"] for r in result["models"]}
    kept = [r | {"earlier": r.get("earlier", source)} for r in earlier["models"]
            if r["workdir"] not in fresh]  # fmt: skip
    rows = kept + result["models"]
    groups = aggregate(rows)
    return result | {"models": rows, "groups": groups,
                     "targets": check_targets(groups, result["baselines"])}  # fmt: skip


# --------------------------------------------------------------------------------------------
# The whole experiment: files in `out`


def figure_indices(labels: np.ndarray) -> np.ndarray:
    """The first test digit of each class 0-9 (the first ten digits where a class is absent)."""
    idx = [int(np.flatnonzero(labels == k)[0]) for k in range(10) if np.any(labels == k)]
    return np.array(idx if len(idx) == 10 else list(range(min(10, len(labels)))))


def run_experiment(
    models_: list[tuple],
    classifier: tuple,
    *,
    num_digits: int = 10_000,
    mask_seed: int = masking.TEST_MASK_SEED,
    batch_size: int = 500,
    mnist_dir: str | None = None,
    progress: bool = True,
) -> dict:
    """models_: `(workdir, config, params, step)` per trained restorer; classifier: `(workdir,
    params, step)`. Returns the results (`restore.json`'s content) and the images the figures
    show: `{"result", "clean", "masked", "panels", "noise_panels"}` (see `nca.hybrid.summary`)."""
    from nca import data

    raw, labels = data.load_mnist("test", mnist_dir)
    images, labels = data.to_grey(raw[:num_digits]), labels[:num_digits]
    keep = masking.eval_masks(len(images), mask_seed)
    cls_workdir, cls_params, cls_step = classifier
    classify = make_classify(jax.tree.map(jnp.asarray, cls_params))
    clean = {"digit_id": float(np.mean(classify(images) == labels))}
    masked_in = images * keep
    baselines = {
        "masked input": image_scores(masked_in, images, keep, labels, classify),
        "mean fill": image_scores(mean_fill(images, keep), images, keep, labels, classify),
    }
    idx = figure_indices(labels)
    rows, panels, noise_panels = [], {}, {}
    for workdir, config, params, step in models_:
        res, restored, damaged = evaluate_restorer(
            config, params, images, labels, keep, classify, batch_size, progress=progress
        )
        res.update(workdir=str(workdir), checkpoint_step=int(step), seed=int(config.seed),
                   config=config.name, batch_size=int(config.batch_size),
                   samples_seen=int(step) * int(config.batch_size))  # fmt: skip
        label = res["model"]
        if config.model.arch != "autoencoder":
            res["noise_valleys"], noise_out = noise_valleys(config, params, classify)
            noise_panels.setdefault(label, noise_out[:10])
        if label not in panels:
            panels[label] = restored[idx]
            if damaged is not None:
                panels[label + " damaged"] = damaged[idx]
        rows.append(res)
    groups = aggregate(rows)
    result = {
        "protocol": {
            "test_digits": len(images),
            "hidden_pixels_per_digit": masking.num_masked(),
            "mask_seed": mask_seed,
            "psnr": "per-image 10*log10(1/MSE), peak 1.0, all 784 pixels, observed pixels not "
            "pasted back, mean over images; psnr_hidden: MSE over the hidden pixels only; "
            "psnr_pooled: one MSE over all images",
            "damage": f"{DAMAGE_RATE:.0%} of the 32x32 lattice cells (all channels) zeroed after "
            f"step `damage_step` (5) of `num_ca_steps` (10), seed {DAMAGE_SEED}",
            "flops": "per sample, eval-mode forward; XLA cost analysis with the CA loop unrolled",
            "machine": machine(),
        },
        "classifier": {
            "workdir": str(cls_workdir),
            "checkpoint_step": int(cls_step),
            "clean_test_digit_id": clean["digit_id"],
        },  # fmt: skip
        "baselines": baselines,
        "models": rows,
        "groups": groups,
        "targets": check_targets(groups, baselines),
        "blog": BLOG,
    }
    return {"result": result, "clean": images[idx], "masked": masked_in[idx], "panels": panels,
            "noise_panels": noise_panels}  # fmt: skip
