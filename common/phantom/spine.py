"""The lower thoracic and lumbar spine of one synthetic patient: vertebrae by level, ribs, iliac crests.

z is in millimetres along the body's long axis (LPS: toward the head), 0 at the top endplate of the
first sacral segment that is fused into the sacrum. Vertebrae are named as anatomists count them, from
the top: the twelfth vertebra below C7 is T12 whether or not it bears a rib. That name is the ground
truth an L3 locator is scored against.

Transitional anatomy is what makes counting fail on real CT, and each variant breaks one of the two
counts a reader (or a network) can make:

* ``11 ribs``: T12 bears no rib; counting down from the last rib finds L3 one level too high.
* ``13 ribs``: L1 bears a short rib; counting down from the last rib finds L3 one level too low.
* ``lumbarised S1``: S1 is a free, lumbar-like vertebra with a disc below it; counting up from the
  sacrum finds L3 one level too low.
* ``sacralised L5``: L5 is fused into the sacrum; counting up from the sacrum finds L3 one level too high.

The iliac crests stay at the true L4/L5 disc (the intercristal line clinicians use), so every variant
leaves one honest cue besides the count it breaks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VARIANTS = ("normal", "11 ribs", "13 ribs", "lumbarised S1", "sacralised L5")
# Names from the top of the volumes drawn (ribs of T7-T9 still cross the upper slices) to the sacrum.
NAMES = ("T7", "T8", "T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1")
# Body heights and the disc below each, mm at a height of 1.70 m (lumbar bodies ~27 mm, discs ~10 mm).
_BODY_MM = {"T7": 19, "T8": 20, "T9": 20.5, "T10": 21, "T11": 22, "T12": 23.5}
_BODY_MM.update({"L1": 25.5, "L2": 26.5, "L3": 27, "L4": 27, "L5": 26})
_DISC_MM = {"T7": 5, "T8": 5.5, "T9": 6, "T10": 6.5, "T11": 7, "T12": 8}
_DISC_MM.update({"L1": 9, "L2": 10, "L3": 10.5, "L4": 11, "L5": 11})
# Rib length as a share of the half circumference (1 = reaches the front): the lowest ribs float.
_RIB_REACH = {"T7": 0.95, "T8": 0.9, "T9": 0.82, "T10": 0.72, "T11": 0.52, "T12": 0.34}


@dataclass(frozen=True)
class Vertebra:
    """One vertebral body: its anatomical name, its extent along z, its rib and its shape class."""

    name: str
    z_lo: float
    z_hi: float
    rib_reach: float  # 0 without a rib, else the share of the half circumference the rib spans
    fused: bool = False  # part of the sacrum (no disc below, alae toward the iliac bones)

    @property
    def z_mid(self) -> float:
        return 0.5 * (self.z_lo + self.z_hi)


@dataclass(frozen=True)
class Spine:
    """A patient's vertebrae from T7 down to the sacrum, the iliac crest height and the variant."""

    vertebrae: tuple[Vertebra, ...]
    variant: str
    crest_z: float  # top of the iliac crests
    scale: float  # skeletal scale (height / 1.70 m)

    def level(self, name: str) -> Vertebra:
        return next(v for v in self.vertebrae if v.name == name)

    @property
    def l3(self) -> tuple[float, float]:
        """The true L3 body's z range (mm)."""
        v = self.level("L3")
        return (v.z_lo, v.z_hi)

    def at(self, z: float) -> tuple[Vertebra | None, Vertebra | None]:
        """(the body that z cuts, or None) and (the body just above z when z lies in a disc, else None)."""
        for k, v in enumerate(self.vertebrae):
            if v.z_lo <= z <= v.z_hi:
                return v, None
            if k > 0 and v.z_hi < z < self.vertebrae[k - 1].z_lo:
                return None, self.vertebrae[k - 1]
        return None, None

    def level_coordinate(self, z: float) -> float:
        """A continuous level: 0 at the middle of L3, +1 per vertebra upward (T12 = 3), interpolated."""
        mids = np.array([v.z_mid for v in self.vertebrae])  # descending
        index = np.arange(len(mids), dtype=float)
        l3 = NAMES.index("L3")
        k = np.interp(-z, -mids, index, left=np.nan, right=np.nan)
        if np.isnan(k):  # beyond the first / last body: extrapolate with the nearest spacing
            if z > mids[0]:
                k = 0.0 - (z - mids[0]) / (mids[0] - mids[1])
            else:
                k = index[-1] + (mids[-1] - z) / (mids[-2] - mids[-1])
        return float(l3 - k)


def build_spine(rng: np.random.Generator, height_m: float, variant: str = "normal") -> Spine:
    """Lay out the vertebrae of a patient ``height_m`` tall with ``variant`` (see VARIANTS)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown spine variant {variant!r}; choose one of {VARIANTS}")
    scale = height_m / 1.70
    names = list(NAMES)
    sacrum_from = "S1"
    if variant == "lumbarised S1":
        names.append("S2")  # S1 is free; the sacrum starts one segment lower
        sacrum_from = "S2"
    if variant == "sacralised L5":
        sacrum_from = "L5"
    heights = {**_BODY_MM, "S1": 26.0, "S2": 24.0}
    discs = {**_DISC_MM, "S1": 10.0, "S2": 0.0}
    if variant == "lumbarised S1":
        heights["S1"] = 25.0  # a lumbar-like body
    split = names.index(sacrum_from)
    free, fused = names[:split], names[split:]
    jitter = rng.normal(1.0, 0.04, len(names))
    h = {name: heights[name] * scale * float(j) for name, j in zip(names, jitter, strict=True)}
    vertebrae: list[Vertebra] = []
    z = 0.0
    for name in fused:  # the sacrum, from its top endplate (z = 0) down
        vertebrae.append(Vertebra(name, z - h[name], z, 0.0, fused=True))
        z -= h[name]
    z = 0.0
    for name in reversed(free):  # free vertebrae from the lowest up, each above its disc
        reach = _RIB_REACH.get(name, 0.0)
        if variant == "11 ribs" and name == "T12":
            reach = 0.0
        if variant == "13 ribs" and name == "L1":
            reach = 0.22
        lo = z + discs[name] * scale
        vertebrae.append(Vertebra(name, lo, lo + h[name], reach))
        z = lo + h[name]
    ordered = sorted(vertebrae, key=lambda v: -v.z_hi)
    l4 = next(v for v in ordered if v.name == "L4")
    l5 = next(v for v in ordered if v.name == "L5")
    crest = 0.5 * (l4.z_lo + l5.z_hi) + rng.normal(0.0, 4.0) * scale
    return Spine(tuple(ordered), variant, float(crest), float(scale))
