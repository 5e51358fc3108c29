"""facenms: Face-NMS core-set selection for face-recognition training sets."""
from ._ext import BUILD as _BUILD

__version__ = "0.1.0"
