"""Baselines, one package per method (``baselines/<name>/``): its networks, LightningModules, bench methods and
registry entries in one folder. :func:`dreamhead_lit.registry.discover` imports each package here, so its
``registry.register(...)`` and ``bench.register_method(...)`` calls are all it takes for ``train``, ``generate``,
``bench`` and ``ablate`` to know it; its configs go under ``experiments/<model name>/``."""
