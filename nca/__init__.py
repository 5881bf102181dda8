"""nca: neural cellular automata in JAX.

`nca.model` (the CA), `nca.fast` (fast rollouts), `nca.train` (training loop), `nca.checkpoint`
(Orbax), `nca.evaluate` (the article's protocol), `nca.pretrained` (shipped models).
"""
