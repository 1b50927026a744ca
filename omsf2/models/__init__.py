"""Models: the OMSF2 network, its parts, the registry and checkpoints."""

from omsf2.models.omsf2 import OMSF2, ModelOutput
from omsf2.models.registry import create_model, list_models, model_config, register_model

__all__ = ["OMSF2", "ModelOutput", "create_model", "list_models", "model_config", "register_model"]
