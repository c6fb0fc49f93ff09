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
    """Generate one patient of ``profile`` and their L3 slice (``profile.matrix`` a side, 512 by default, ~80 ms).

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
    shape = (profile.matrix, profile.matrix)
    margin = rng.uniform(1.25, 1.6)  # field of view / body width
    warp_mm = rng.uniform(2.0, 4.5)
    shift = rng.normal(0.0, 6.0, 2)
    rotation = float(np.deg2rad(rng.normal(0.0, 2.0)))
    # Scanners widen the field of view for wide patients up to ~500 mm; beyond it the body is cut off.
    px_range = (min(0.6, profile.spacing_mm[0]), max(0.98 * 512 / shape[1], profile.spacing_mm[1]))
    made: dict[str, float] = {}

    def canvas_factory(body_width: float, centre: tuple[float, float]) -> Canvas:
        px = float(np.clip(body_width * margin / shape[1], *profile.spacing_mm))
        px = float(np.clip(max(px, body_width * 1.04 / shape[1]), *px_range))
        px = round(px, 4)
        made["px"] = px
        warp = field_pair(rng, gaussian_transfer(shape, px, 45.0))
        warp = (warp[0] * warp_mm, warp[1] * warp_mm)
        return Canvas.create(shape, px, (centre[0] + shift[0], centre[1] + shift[1]), warp, -1000.0, rotation)

    def tex_factory(canvas: Canvas) -> Textures:
        soft, fat = field_pair(rng, gaussian_transfer(shape, canvas.px, 2.5))
        streak, stool = field_pair(rng, bandpass_transfer(shape, canvas.px, rng.uniform(2.5, 4.0)))
        return Textures(soft=soft, fat=fat, streak=streak, stool=stool)

    canvas, body = anatomy.build_and_paint(rng, patient, canvas_factory, tex_factory)
    px = made["px"]

    # ---- scanner: artefacts, reconstruction blur (partial volume), correlated noise, offset -----------
    _beam_hardening(rng, canvas, body.dense)
    if body.arms:
        _arm_streaks(rng, canvas, body.arms)
    if body.metal:
        _metal_streaks(rng, canvas, body.metal)
    blur = np.hypot(profile.blur_mm, 0.15 * profile.thickness_mm) / px
    image = gaussian_filter(canvas.hu, blur, mode="nearest", truncate=3.0)
    noise_sd = rng.uniform(*profile.noise_hu) * float(np.clip(body.body_width_mm / 340.0, 0.8, 1.5)) ** 1.2
    noise_sd = float(np.clip(noise_sd, 8.0, 30.0))
    noise_sd *= (1.3 if body.arms else 1.0) * min(1.0, 1.0 / px) ** 0.75  # arms in the beam; coarse pixels average
    noise, _ = field_pair(rng, ct_noise_transfer(shape, px, profile.noise_grain_mm * rng.uniform(0.9, 1.1)))
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


def _band(canvas: Canvas, p0: tuple[float, float], p1: tuple[float, float], width_mm: float, amp: float) -> None:
    """Add ``amp`` HU along the segment p0-p1, fading over ``width_mm`` (Gaussian profile across it)."""
    box = canvas.box(
        min(p0[0], p1[0]) - 3 * width_mm,
        max(p0[0], p1[0]) + 3 * width_mm,
        min(p0[1], p1[1]) - 3 * width_mm,
        max(p0[1], p1[1]) + 3 * width_mm,
    )
    if box is None:
        return
    vx, vy = np.float32(p1[0] - p0[0]), np.float32(p1[1] - p0[1])
    dx, dy = canvas.X[box] - np.float32(p0[0]), canvas.Y[box] - np.float32(p0[1])
    t = np.clip((dx * vx + dy * vy) / np.float32(vx * vx + vy * vy + 1e-9), 0.0, 1.0)
    dist2 = (dx - t * vx) ** 2 + (dy - t * vy) ** 2
    canvas.hu[box] += np.float32(amp) * np.exp(-dist2 / np.float32(width_mm**2))


def _beam_hardening(rng: np.random.Generator, canvas: Canvas, dense: tuple[tuple[float, float], ...]) -> None:
    """Subtle dark streaks joining dense structures (vertebral body, enhanced aorta, arm bones)."""
    for i, a in enumerate(dense):
        for b in dense[i + 1 :]:
            if rng.random() < 0.7:
                _band(canvas, a, b, rng.uniform(2.0, 5.0), -rng.uniform(8.0, 25.0))


def _arm_streaks(rng: np.random.Generator, canvas: Canvas, arms: tuple[tuple[float, float, float], ...]) -> None:
    """Photon starvation with the arms down: near-horizontal dark and bright bands across the trunk.

    The long lateral path through both arms and the trunk starves a fan of projections; filtered back
    projection turns their noise into thin lines along that direction, densest at the arms' level.
    """
    y_arm = float(np.mean([y for _, y, _ in arms]))
    r_arm = float(np.mean([r for *_, r in arms]))
    profile_px = 0.5
    n = int(np.ceil(4.0 * r_arm / profile_px))
    for tilt in rng.normal(0.0, 0.04, 3):
        white = rng.normal(0.0, 1.0, n)
        bands = gaussian_filter(white, 1.2 / profile_px, mode="wrap")
        bands /= float(bands.std()) + 1e-6
        u = (canvas.Y - np.float32(y_arm)) * np.float32(np.cos(tilt)) - canvas.X * np.float32(np.sin(tilt))
        idx = np.clip(((u + 2.0 * r_arm) / profile_px).astype(np.intp), 0, n - 1)
        envelope = np.exp(-((u / np.float32(1.1 * r_arm)) ** 2))
        canvas.hu += np.float32(rng.uniform(12.0, 28.0)) * bands[idx].astype(np.float32) * envelope
    _band(canvas, (arms[0][0], y_arm), (arms[-1][0], y_arm), rng.uniform(4.0, 10.0), -rng.uniform(15.0, 40.0))


def _metal_streaks(rng: np.random.Generator, canvas: Canvas, metal: tuple[tuple[float, float], ...]) -> None:
    """Metal artefact: bright and dark rays through each implant, and a dark band between implants."""
    for cx, cy in metal:
        dx, dy = canvas.X - np.float32(cx), canvas.Y - np.float32(cy)
        fade = np.exp(-np.hypot(dx, dy) / np.float32(rng.uniform(60.0, 120.0)))
        for ang in rng.uniform(0.0, np.pi, int(rng.integers(6, 12))):
            perp = dx * np.float32(np.sin(ang)) - dy * np.float32(np.cos(ang))
            amp = rng.choice([-1.0, 1.0]) * rng.uniform(80.0, 300.0)
            canvas.hu += np.float32(amp) * np.exp(-((perp / np.float32(rng.uniform(0.6, 1.6))) ** 2)) * fade
    for i, a in enumerate(metal):
        for b in metal[i + 1 :]:
            _band(canvas, a, b, rng.uniform(2.0, 4.0), -rng.uniform(100.0, 300.0))
