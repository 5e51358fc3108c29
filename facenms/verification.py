"""facenms.verification is facenms.eval.verification (the public name)."""
import sys

from .eval import verification

sys.modules[__name__] = verification
