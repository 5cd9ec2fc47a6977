"""The sampler names and the one set of sampling defaults, without importing torch.

The command line builds its parser (``--help``, choices, defaults) from these, so they live apart
from the samplers in :mod:`weather_sr.core.sampling`, which checks at import that its
``SAMPLERS`` are exactly :data:`SAMPLER_NAMES`.
"""

SAMPLER_NAMES: tuple[str, ...] = ("ancestral", "ddim", "dpmpp_2m")
DEFAULT_SAMPLER = "dpmpp_2m"
DEFAULT_STEPS = 20
DEFAULT_ETA = 0.0

# Network arithmetic while sampling: "auto" resolves per device (weather_sr.inference.precision)
PRECISIONS: tuple[str, ...] = ("auto", "float32", "bf16")
DEFAULT_PRECISION = "auto"

# --constrain: the members' block means against the LR input (docs/method.md §8, "Constraint")
CONSTRAINTS: tuple[str, ...] = ("none", "lr-mean", "lr-mean-x0")
DEFAULT_CONSTRAINT = "none"
# the members' coherence in time (inference.coherence): off, every time sampled on its own;
# noise, correlated initial noise; ar, each member conditioned on its own previous field (a
# model trained with data.previous); on, ar where the model allows, else noise; auto, ar where
# the model allows, else off
COHERENCE: tuple[str, ...] = ("auto", "on", "off", "noise", "ar")
DEFAULT_COHERENCE = "auto"
