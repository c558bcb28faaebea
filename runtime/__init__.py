"""The runtime apps embed: ``from runtime import Deblurrer`` (and the errors it raises, to catch them by name)."""

from banet.errors import ArtifactError, CheckpointError, DeblurrerClosedError, OptionError
from banet.processing import ImageFormatError, NonFiniteOutputError
from runtime.backends.base import BackendUnavailableError, IncompatibleArtifactError
from runtime.deblurrer import Deblurrer
from runtime.images import ImageReadError, ImageWriteError
from runtime.loading import ModelNotFoundError

__all__ = ["ArtifactError", "BackendUnavailableError", "CheckpointError", "Deblurrer", "DeblurrerClosedError",
           "ImageFormatError", "ImageReadError", "ImageWriteError", "IncompatibleArtifactError", "ModelNotFoundError",
           "NonFiniteOutputError", "OptionError"]
