"""The ground floor: what every layer shares and no layer owns.

``configs`` (``StrictModel``, YAML with overrides), ``registry`` (name -> factory), ``launch`` (the
torchrun environment), ``devices``, ``collectives`` (the process group and its reductions),
``atomic`` (atomic files, weights-only checkpoint loading). ``core`` imports nothing else of
histocam (docs/ARCHITECTURE.md).
"""
