"""One synthetic L3 CT slice with its ground truth: anatomy, then the scanner, then the masks.

Ground-truth convention (Alberta protocol, as in Slice-O-Matic-style annotation): the muscle mask is
every pixel inside a skeletal muscle outline (at least half covered, native resolution) whose final
HU lies within -29..+150. Intermuscular fat streaks and noise excursions inside an outline fall out of
the mask exactly as they would for a human annotator using the HU window; every mask pixel is
therefore inside the window by construction. IMAT is the rest of the muscle outline that lies in the fat
window (-190..-30 HU); SAT and VAT masks follow the same rule with their own outlines and windows
(-190..-30 and -150..-50 HU). ``PhantomCase.tissue_map`` joins the four into one label map (0-4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter

from common.clinical import (
    FAT_HU_RANGE,
    IMAT,
    MUSCLE,
    MUSCLE_HU_RANGE,
    SAT,
    VAT,
    VISCERAL_FAT_HU_RANGE,
    area_cm2,
    get_cutoff,
    smi,
)
from common.phantom import anatomy
from common.phantom.anatomy import Textures
from common.phantom.fields import bandpass_transfer, ct_noise_transfer, field_pair, gaussian_transfer
from common.phantom.patient import Patient, sample_patient
from common.phantom.profiles import SiteProfile
from common.phantom.shapes import Canvas

IMAGE_SHAPE = (512, 512)
HU_MIN, HU_MAX = -1024.0, 3071.0


@dataclass
class PhantomCase:
    """A synthetic slice in canonical orientation (row -> posterior, column -> patient left).

    ``hu``: (H, W) float32 integer-valued HU (as a DICOM file would hold them); ``muscle``, ``imat``,
    ``sat``, ``vat``: (H, W) uint8 {0, 1}, disjoint; ``labels``: (H, W) uint8 tissue map (values in
    ``common.phantom.anatomy``); ``spacing_mm``: (row, column) mm.
    """

    hu: np.ndarray
    muscle: np.ndarray
    imat: np.ndarray
    sat: np.ndarray
    vat: np.ndarray
    labels: np.ndarray
    spacing_mm: tuple[float, float]
    sex: str
    height_m: float
    weight_kg: float
    age_years: float
    contrast: bool
    noise_hu: float
    hu_offset: float
    thickness_mm: float
    rows_bottom_up: bool
    patient: Patient = field(repr=False)

    @property
    def sma_cm2(self) -> float:
        """Reference skeletal muscle area: mask pixels x native pixel area, cm2."""
        return area_cm2(self.muscle, self.spacing_mm)

    @property
    def smi_cm2_m2(self) -> float:
        value = smi(self.sma_cm2, self.height_m)
        return float("nan") if value is None else value  # generated heights (1.38-2.05 m) always give one

    def sarcopenic(self, cutoff: str = "prado2008") -> bool:
        """Verdict under a named cutoff rule (default Prado 2008)."""
        bmi = self.weight_kg / self.height_m**2
        return bool(get_cutoff(cutoff).is_sarcopenic(self.smi_cm2_m2, self.sex, bmi))

    @property
    def sat_cm2(self) -> float:
        return area_cm2(self.sat, self.spacing_mm)

    @property
    def vat_cm2(self) -> float:
        return area_cm2(self.vat, self.spacing_mm)

    @property
    def imat_cm2(self) -> float:
        return area_cm2(self.imat, self.spacing_mm)

    @property
    def tissue_map(self) -> np.ndarray:
        """(H, W) uint8 body-composition label map: 0 background, 1 muscle, 2 IMAT, 3 VAT, 4 SAT."""
        out = np.zeros(self.hu.shape, np.uint8)
        for mask, value in ((self.muscle, MUSCLE), (self.imat, IMAT), (self.vat, VAT), (self.sat, SAT)):
            out[mask > 0] = value
        return out


def _rng(rng_or_seed: np.random.Generator | int | np.random.SeedSequence | tuple[int, ...]) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    if isinstance(rng_or_seed, tuple):
        return np.random.default_rng(np.random.SeedSequence(list(rng_or_seed)))
    return np.random.default_rng(rng_or_seed)


def synth_case(
    rng_or_seed: np.random.Generator | int | np.random.SeedSequence | tuple[int, ...], profile: SiteProfile
) -> PhantomCase:
    """Generate one patient of ``profile`` and their L3 slice (512 x 512, about 50 ms).

    Parameters
    ----------
    rng_or_seed : Generator, int, SeedSequence or tuple of ints
        Source of randomness; the same seed gives identical arrays. Sites seed each patient with
        ``(seed, index)``.
    profile : SiteProfile
        Population and scanner of the site.
    """
    rng = _rng(rng_or_seed)
    patient = sample_patient(rng, profile)
    margin = rng.uniform(1.25, 1.6)  # field of view / body width
    warp_mm = rng.uniform(2.0, 4.5)
    shift = rng.normal(0.0, 6.0, 2)
    rotation = float(np.deg2rad(rng.normal(0.0, 2.0)))
    made: dict[str, float] = {}

    def canvas_factory(body_width: float, centre: tuple[float, float]) -> Canvas:
        # Scanners widen the field of view for wide patients; beyond 0.98 mm the body is cut off.
        px = float(np.clip(body_width * margin / IMAGE_SHAPE[1], *profile.spacing_mm))
        px = float(np.clip(max(px, body_width * 1.04 / IMAGE_SHAPE[1]), 0.6, 0.98))
        px = round(px, 4)
        made["px"] = px
        warp = field_pair(rng, gaussian_transfer(IMAGE_SHAPE, px, 45.0))
        warp = (warp[0] * warp_mm, warp[1] * warp_mm)
        return Canvas.create(IMAGE_SHAPE, px, (centre[0] + shift[0], centre[1] + shift[1]), warp, -1000.0, rotation)

    def tex_factory(canvas: Canvas) -> Textures:
        soft, fat = field_pair(rng, gaussian_transfer(IMAGE_SHAPE, canvas.px, 2.5))
        streak, stool = field_pair(rng, bandpass_transfer(IMAGE_SHAPE, canvas.px, rng.uniform(2.5, 4.0)))
        return Textures(soft=soft, fat=fat, streak=streak, stool=stool)

    canvas, body = anatomy.build_and_paint(rng, patient, canvas_factory, tex_factory)
    px = made["px"]

    # ---- scanner: reconstruction blur (partial volume), correlated noise, calibration offset -------
    blur = np.hypot(profile.blur_mm, 0.15 * profile.thickness_mm) / px
    image = gaussian_filter(canvas.hu, blur, mode="nearest", truncate=3.0)
    noise_sd = rng.uniform(*profile.noise_hu) * float(np.clip(body.body_width_mm / 340.0, 0.8, 1.5)) ** 1.2
    noise_sd = float(np.clip(noise_sd, 8.0, 30.0))
    noise, _ = field_pair(rng, ct_noise_transfer(IMAGE_SHAPE, px, profile.noise_grain_mm * rng.uniform(0.9, 1.1)))
    offset = profile.hu_offset + rng.normal(0.0, 1.5)
    image += noise * noise_sd + offset
    hu = np.clip(np.rint(image), HU_MIN, HU_MAX).astype(np.float32)

    labels = canvas.label
    in_muscle = np.isin(labels, anatomy.MUSCLE_LABELS)
    muscle = in_muscle & (hu >= MUSCLE_HU_RANGE[0]) & (hu <= MUSCLE_HU_RANGE[1])
    imat = in_muscle & (hu >= FAT_HU_RANGE[0]) & (hu <= FAT_HU_RANGE[1])
    sat = (labels == anatomy.SAT) & (hu >= FAT_HU_RANGE[0]) & (hu <= FAT_HU_RANGE[1])
    vat = (labels == anatomy.VISCERAL_FAT) & (hu >= VISCERAL_FAT_HU_RANGE[0]) & (hu <= VISCERAL_FAT_HU_RANGE[1])
    return PhantomCase(
        hu=hu,
        muscle=muscle.astype(np.uint8),
        imat=imat.astype(np.uint8),
        sat=sat.astype(np.uint8),
        vat=vat.astype(np.uint8),
        labels=labels,
        spacing_mm=(px, px),
        sex=patient.sex,
        height_m=patient.height_m,
        weight_kg=patient.weight_kg,
        age_years=patient.age_years,
        contrast=patient.contrast,
        noise_hu=noise_sd,
        hu_offset=float(offset),
        thickness_mm=profile.thickness_mm,
        rows_bottom_up=profile.rows_bottom_up,
        patient=patient,
    )
