"""nca: neural cellular automata in JAX.

The package root is the core, which knows no system: `nca.config` (config names), `nca.loop`
(the one training loop), `nca.checkpoint` (all Orbax code), `nca.workdir` (locks, metrics
files), `nca.data` (MNIST) and `nca.report` (tables, JSON, Markdown, figures). Each system is a
subpackage named by its `config.model.kind`: `nca.selforg_mnist` (the self-classifying MNIST CA),
`nca.metanca`, `nca.hybrid`.

The self-classifying CA's modules used to sit at the root (`nca.model`, `nca.pretrained`, ...);
those names still import, as aliases of the modules in `nca.selforg_mnist`, so old notebooks and
scripts (`from nca import pretrained`, `import nca.fast`) keep working.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

_MOVED = ("demo", "evaluate", "fast", "losses", "model", "plots", "pretrained", "reference",
          "render", "robustness", "train")  # fmt: skip


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports `nca.<old name>` as the module `nca.selforg_mnist.<old name>` (one module object
    under both names)."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, name = fullname.partition(".")
        if prefix == __name__ and name in _MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(f"{__name__}.selforg_mnist.{spec.name.split('.')[1]}")

    def exec_module(self, module):
        pass


sys.meta_path.append(_MovedModules())


def __getattr__(name: str):
    if name in _MOVED:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
