"""Synthetic hospitals: L3 CT slices with ground-truth muscle masks, site profiles and writers.

Real hospital CT cannot be shipped, so tests, demos and simulations run on synthetic patients whose
anatomy, physiology and scanners vary the way real ones do.

    >>> from common.phantom import PROFILES, synth_case
    >>> case = synth_case(0, PROFILES["general-surgery"])
    >>> case.hu.shape, case.sma_cm2 > 50
    ((512, 512), True)
"""

from common.phantom.case import PhantomCase, synth_case
from common.phantom.montage import write_montage
from common.phantom.profiles import PROFILES, SiteProfile, get_profile
from common.phantom.site import (
    GENERATOR_VERSION,
    ensure_consortium,
    load_consortium,
    write_consortium,
    write_site,
)

__all__ = [
    "GENERATOR_VERSION",
    "PROFILES",
    "PhantomCase",
    "SiteProfile",
    "ensure_consortium",
    "get_profile",
    "load_consortium",
    "synth_case",
    "write_consortium",
    "write_montage",
    "write_site",
]
