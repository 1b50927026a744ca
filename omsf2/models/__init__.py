"""Models: the OMSF2 network, its parts, the registry and checkpoints.

Importing this package imports the network modules, whose ``@register_model`` builders fill the
registry (the registry itself imports no network).
"""

from omsf2.models.omsf2 import OMSF2, ModelOutput, OMSF2Features, model_config
from omsf2.models.registry import create_model, list_models, model_description, register_model

__all__ = [
    "OMSF2",
    "ModelOutput",
    "OMSF2Features",
    "create_model",
    "list_models",
    "model_config",
    "model_description",
    "register_model",
]
