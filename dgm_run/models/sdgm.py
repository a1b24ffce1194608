"""SDGM: the skip deep generative model of Maaløe et al. 2016 (arXiv 1602.05473).

As ADGM, but the generative model is p(a|y,z) p(x|a,y,z): the auxiliary variable is
generated first and the pixels see it, which makes the generative model richer.
"""

from __future__ import annotations

from dataclasses import dataclass

from dgm_run.models.adgm import ADGM


class SDGM(ADGM):
    skip = True

    @dataclass
    class Config(ADGM.Config):
        _target_: str = "dgm_run.models.sdgm.SDGM"
