"""A trained downscaling model and its checkpoint format."""

from weather_sr.model.downscaling_model import DownscalingModel
from weather_sr.model.loading import load_model, model_from_payload

__all__ = ["DownscalingModel", "load_model", "model_from_payload"]
