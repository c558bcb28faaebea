"""The runtime apps embed: ``from runtime import Deblurrer``."""

from runtime.backends.base import BackendUnavailableError, IncompatibleArtifactError
from runtime.deblurrer import Deblurrer
from runtime.images import ImageReadError
from runtime.loading import ModelNotFoundError

__all__ = ["BackendUnavailableError", "Deblurrer", "ImageReadError", "IncompatibleArtifactError",
           "ModelNotFoundError"]
