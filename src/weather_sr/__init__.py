"""weather-sr: probabilistic super-resolution of weather fields with diffusion models."""

__version__ = "0.1.0"
