"""mambaout: MambaOut vision backbones, the paper's training recipe, and a study tool for "is the SSM worth it?".

Example:
    >>> import mambaout
    >>> model = mambaout.create_model("mambaout_femto", num_classes=10)
"""

from mambaout.errors import UserError
from mambaout.models import MambaOut, create_model, list_models, load_pretrained

__version__ = "0.1.0"
__all__ = ["MambaOut", "UserError", "create_model", "list_models", "load_pretrained", "__version__"]
