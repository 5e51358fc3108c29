"""facenms.reference is facenms.core.reference (the public name)."""
import sys

from .core import reference

sys.modules[__name__] = reference
