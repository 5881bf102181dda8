"""`l2_noise` trained against adversarial reprogramming: an adversary trains beside it and holds
10 % of the cells of half of the pool members (nca/selforg_mnist/defence.py).

    python -m experiments.train --config=l2_noise_defended --workdir=workdirs/l2_noise_defended
    # the test: a fresh adversary against the frozen defender, then the attack
    python -m experiments.train --config=adversary_eight --config.num_train_steps=50000 \
        --config.adversary.original=workdirs/l2_noise_defended --workdir=workdirs/adversary_def
    python -m experiments.attack --workdir=workdirs/l2_noise_defended \
        --adversary=workdirs/adversary_def --out=docs/selforg_mnist/adversarial/defended

    # or fine-tune the shipped l2_noise against the shipped adversary of it (a fresh optimizer
    # and pool; both players at 1e-4, as the study's fine-tune)
    python -m experiments.train --config=l2_noise_defended --config.init_from=l2_noise \
        --config.defence.adversary_init=adversary_eight --config.learning_rate=1e-4 \
        --config.num_train_steps=10000 --config.lr_boundaries="(8000,)" \
        --workdir=workdirs/l2_noise_defended_ft

    # or release attacked members and hijack formed ones (each member taken from the pool draws
    # a new mask with chance 0.25), continuing the shipped defender's game; its adversary
    # starts from the 10k adversary of the polished defender (docs/selforg_mnist/README.md)
    python -m experiments.train --config=l2_noise_defended --config.init_from=l2_noise_defended \
        --config.defence.adversary_init=workdirs/adversary_def_polish --config.learning_rate=1e-4 \
        --config.num_train_steps=5000 --config.lr_boundaries="(4000,)" \
        --config.defence.redraw=0.25 --workdir=workdirs/l2_noise_defended_redraw

    # or no game: fine-tune the shipped l2_noise against a fresh random rule each iteration
    # (defence.random_rules: the random rules' output scale; nobody trains them)
    python -m experiments.train --config=l2_noise_defended --config.init_from=l2_noise \
        --config.defence.random_rules=0.1 --config.learning_rate=1e-4 \
        --config.num_train_steps=10000 --config.lr_boundaries="(8000,)" \
        --workdir=workdirs/l2_noise_defended_random

    # or the fine-tune above, where attacked members only must not vote 8 (their loss counts the
    # target's class channel alone: defence.attacked_loss)
    python -m experiments.train --config=l2_noise_defended --config.init_from=l2_noise \
        --config.defence.adversary_init=adversary_eight --config.learning_rate=1e-4 \
        --config.num_train_steps=10000 --config.lr_boundaries="(8000,)" \
        --config.defence.attacked_loss=not_target --workdir=workdirs/l2_noise_defended_nt

    # or the game fine-tune above, anchored: on clean members the defender also keeps
    # l2_noise's states (every mutable channel after 20 steps from the same start and draws)
    python -m experiments.train --config=l2_noise_defended --config.init_from=l2_noise \
        --config.defence.adversary_init=adversary_eight --config.learning_rate=1e-4 \
        --config.num_train_steps=10000 --config.lr_boundaries="(8000,)" \
        --config.defence.anchor=l2_noise --config.defence.anchor_weight=1.0 \
        --workdir=workdirs/l2_noise_defended_anchor

    # or the shipped defender's game continued with a weak anchor to l2_noise (the weight puts
    # the anchor's term near the L2 loss at the start); its adversary starts from a 10k
    # adversary of the shipped defender (docs/selforg_mnist/README.md, "Defence")
    python -m experiments.train --config=l2_noise_defended --config.init_from=l2_noise_defended \
        --config.defence.adversary_init=workdirs/adversary_def_shipped --config.learning_rate=1e-4 \
        --config.num_train_steps=5000 --config.lr_boundaries="(4000,)" \
        --config.defence.anchor=l2_noise --config.defence.anchor_weight=0.003 \
        --workdir=workdirs/l2_noise_defended_anchor_cont

    # or the defended_ft fine-tune with a defender twice as wide (160 perception and hidden
    # filters; l2_noise widened to it computes the same function, model.widen), against the
    # article's 80-filter adversary; its test adversary needs the original's width
    python -m experiments.train --config=l2_noise_defended --config.init_from=l2_noise \
        --config.model.perception_filters=160 \
        --config.defence.adversary_init=adversary_eight --config.learning_rate=1e-4 \
        --config.num_train_steps=10000 --config.lr_boundaries="(8000,)" \
        --workdir=workdirs/l2_noise_defended_wide
    python -m experiments.train --config=adversary_eight --config.num_train_steps=10000 \
        --config.adversary.original=workdirs/l2_noise_defended_wide \
        --config.adversary.original_filters=160 --workdir=workdirs/adversary_def_wide

The article's recipe for both players (batch 16, pool 160 with mutation, L2 after 20 steps,
Adam 1e-3 x0.1 at 30k and 70k of 100k iterations); the defender's loss counts only its own
cells. Options: `smoke`, `short`, `20k` (as for `l2_noise`; the ablations do not apply). The
test's adversary trains 50k iterations, as the shipped `adversary_eight` against `l2_noise` did.
"""

import ml_collections

from configs.common import parse_options, selforg_mnist_config


def get_config(arg=None):
    parse_options(arg, ("smoke", "short", "20k"), example="l2_noise_defended:smoke")
    c = selforg_mnist_config(loss="l2", noise_std=0.02, arg=arg)
    c.defence = ml_collections.ConfigDict()
    c.defence.fraction = 0.1  # share of an attacked member's cells the adversary holds
    c.defence.attacked_share = 0.5  # share of the pool members with adversaries; the rest clean
    # Chance that a member taken from the pool draws a new mask (0: it keeps its own until it is
    # replaced): attacked digits are then released and must recover, formed ones hijacked.
    c.defence.redraw = 0.0
    # > 0: no game; every iteration the foreign cells run a fresh random rule whose output layer
    # is Glorot-uniform times this scale (defence.random_rule), and no adversary trains.
    c.defence.random_rules = 0.0
    c.defence.target = 8  # the label the adversary pushes to
    # The defender's loss on attacked members: "label" (all class channels, as on clean ones) or
    # "not_target" (only the target's channel: their cells must not vote for it).
    c.defence.attacked_loss = "label"
    # The game's adversary starts from a shipped adversary or an adversary's workdir (e.g.
    # adversary_eight, trained against l2_noise) instead of a fresh init; with init_from=l2_noise
    # the game fine-tunes the shipped model against its own attacker.
    c.defence.adversary_init = ""
    # Keep the clean dynamics of this model (a shipped name or a workdir; "" for none): on clean
    # members the defender's loss adds anchor_weight times the squared distance of its final
    # states from the anchor's rollout from the same start and draws (defence.anchor_drift).
    c.defence.anchor = ""
    c.defence.anchor_weight = 0.0
    return c
