"""The base config of the hybrid restorer family (issue 8) and the options its configs accept.

All four configs (`hybrid`, `hybrid_ca_only`, `cnn_autoencoder`, `digit_classifier`) have
`model.kind = "hybrid"` (trained by `nca.hybrid.train`) and differ in `model.arch`. Options,
comma-separated after the name:
- `smoke`: a run of seconds (tiny batch, few steps, 2,000 training digits);
- `gate_channel`, `gate_patch`: the per-channel / patch-wise gate readings (ablation; `hybrid`
  only; the default is the global gate);
- `blog_budget`: the blog's training budget, 40k steps x batch 64, with 5,000 training digits
  held out for a validation PSNR every 1,000 steps (the convergence study of issue 21);
- `gate_local`: a local gate of about the CA's size instead (a 3x3 conv and a 1x1 conv per cell;
  not in the blog: it separates "CA + local capacity" from "CA + a global 1M-param layer").
"""

from __future__ import annotations

import ml_collections

from configs import common

OPTIONS = ("smoke", "blog_budget", "gate_channel", "gate_patch", "gate_local")


def parse_options(arg: str | None) -> set[str]:
    return common.parse_options(arg, OPTIONS, "hybrid:gate_patch,smoke")


def hybrid_config(arch: str, arg: str | None) -> ml_collections.ConfigDict:
    options = parse_options(arg)
    c = common.base_config("hybrid", log_every=25, checkpoint_every=250, max_checkpoints_to_keep=2)
    m = c.model
    m.arch = arch  # hybrid | ca_only | autoencoder | classifier
    # Lattice models (hybrid, ca_only).
    m.channels = 16
    m.hidden = 32
    m.dw_multiplier = 2
    m.num_ca_steps = 10
    m.state_noise_std = 0.02  # Gaussian state noise while training
    m.damage_step = 5  # the damage test zeroes cells after this many steps
    m.gate = "global"  # global | channel | patch | local (hybrid only)
    for gate in ("channel", "patch", "local"):
        if f"gate_{gate}" in options:
            m.gate = gate
    m.gate_in = 1024
    m.gate_hidden = 1024
    m.gate_out = 256
    m.gate_dropout = 0.5
    m.patch_size = 8
    m.gate_local_hidden = 8  # the local gate's hidden channels
    # CNN autoencoder.
    m.ae_widths = (32, 64, 128)
    # Digit-ID classifier.
    m.classifier_widths = (32, 64)
    m.classifier_dense = 128

    # Training corruption: fresh masks per sample hiding `train_mask_rate` of the pixels (the
    # test's 70 %), plus Gaussian noise of `input_noise_std` on the observed pixels.
    c.train_mask_rate = 0.7
    c.input_noise_std = 0.05

    c.batch_size = 32
    c.num_train_steps = 2000  # x batch 32 = 64k digits (about 1 epoch), for every restorer
    c.learning_rate = 2e-3
    c.warmup_steps = 50
    c.final_lr_fraction = 0.05  # cosine decay to this fraction of the rate at num_train_steps
    c.grad_clip = 1.0
    # Digits per forward and backward pass, the batch's gradient summed over them (the same
    # gradient and random numbers); 0: 8 for the lattice models on a CPU (1.6-2.3x faster
    # there), the whole batch otherwise (nca/hybrid/train.py).
    c.microbatch = 0

    c.data = ml_collections.ConfigDict()
    c.data.mnist_dir = ""
    c.data.max_train_images = 0
    c.data.validation_images = 0  # held out from the training digits for `val/psnr`
    c.validate_every = 0
    if "blog_budget" in options:
        c.batch_size, c.num_train_steps = 64, 40_000
        c.data.validation_images, c.validate_every, c.checkpoint_every = 5000, 1000, 1000

    common.apply_smoke(c, options, batch_size=4, num_train_steps=6, warmup_steps=2,
                       checkpoint_every=3, data__max_train_images=2000, model__num_ca_steps=4,
                       model__damage_step=2)  # fmt: skip
    if "smoke" in options and "blog_budget" in options:
        c.data.validation_images, c.validate_every = 40, 2

    return c
