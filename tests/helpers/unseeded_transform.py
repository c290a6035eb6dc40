"""A transform that ignores the sample's seeded generator: the kind of nondeterminism train.deterministic's
test must catch (loaded through --import / imports, as a user's module would be)."""
import random

import numpy as np

from retdet.data.transforms import RandomFlip
from retdet.registry import TRANSFORMS

_ENTROPY = random.SystemRandom()  # the operating system's entropy: different in every run


@TRANSFORMS.register()
class UnseededFlip(RandomFlip):
    def __call__(self, sample, rng, source=None):
        return super().__call__(sample, np.random.default_rng(_ENTROPY.getrandbits(64)), source)
