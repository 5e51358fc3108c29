"""facenms.baselines is facenms.eval.baselines (the public name)."""
import sys

from .eval import baselines

sys.modules[__name__] = baselines
