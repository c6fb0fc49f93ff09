"""Site profiles: who a synthetic hospital scans and with which scanner.

Federated learning only earns its keep when hospitals differ, so each profile moves the things that
really differ between sites: age and sex mix, body habitus, disease burden (and with it the share of
sarcopenic patients), and the scanner (pixel spacing, noise level and texture, reconstruction blur,
HU calibration, contrast protocol, row order in the file).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from common.errors import ConfigError


@dataclass(frozen=True)
class SiteProfile:
    """Demographics and scanner of one synthetic hospital.

    Parameters
    ----------
    name : str
        Profile key (kebab-case).
    description : str
        One line for tables and reports.
    male_fraction : float
        Share of men, 0..1.
    age_mean, age_sd, age_min, age_max : float
        Truncated normal age distribution, years.
    bmi_mean, bmi_sd : float
        Log-normal BMI with this mean and SD, kg/m2 (clipped to 15..55).
    smi_shift : float
        Disease effect on the skeletal muscle index, cm2/m2 (negative = cachexia); this is what moves
        the share of sarcopenic patients between sites.
    spacing_mm : (float, float)
        Range of the scanner's preferred in-plane pixel spacing, mm, within 0.5..3.0 (a patient wider
        than the field of view gets a larger spacing, up to a 500 mm field of view).
    noise_hu : (float, float)
        Range of image noise SD in water for an average-sized patient, HU (larger patients are noisier).
    noise_grain_mm : float
        Spatial scale of the noise grain, mm: sharp kernels ~0.8, soft kernels ~1.6.
    blur_mm : float
        Reconstruction blur (Gaussian sigma), mm.
    hu_offset : float
        Calibration offset of the scanner, HU (added to every pixel).
    contrast_fraction : float
        Share of contrast-enhanced scans, 0..1.
    arterial_share : float (default: 0.2)
        Share of the contrast scans taken in the arterial (corticomedullary) phase, the rest portal
        venous, 0..1.
    arms_down_fraction : float (default: 0.1)
        Share of patients scanned with the arms beside the trunk (trauma, frail patients), 0..1.
    hardware_fraction : float (default: 0.03)
        Share of patients with pedicle screws in L3, 0..1.
    matrix : int (default: 512)
        Image matrix (rows = columns) the site exports, 128..1024; 256 with 1.2-1.9 mm pixels is a
        typical reduced export.
    thickness_mm : float
        Slice thickness written to DICOM, mm.
    rows_bottom_up : bool
        Store rows bottom-up (ImageOrientationPatient 1,0,0,0,-1,0), as some scanners do.
    """

    name: str
    description: str
    male_fraction: float
    age_mean: float
    age_sd: float
    age_min: float
    age_max: float
    bmi_mean: float
    bmi_sd: float
    smi_shift: float
    spacing_mm: tuple[float, float]
    noise_hu: tuple[float, float]
    noise_grain_mm: float
    blur_mm: float
    hu_offset: float
    contrast_fraction: float
    thickness_mm: float = 2.5
    rows_bottom_up: bool = False
    arterial_share: float = 0.2
    arms_down_fraction: float = 0.1
    hardware_fraction: float = 0.03
    matrix: int = 512

    def __post_init__(self) -> None:
        checks = [
            (0.0 <= self.male_fraction <= 1.0, "male_fraction must be within 0..1"),
            (18.0 <= self.age_min < self.age_max <= 100.0, "ages must satisfy 18 <= age_min < age_max <= 100"),
            (self.age_sd > 0 and self.bmi_sd > 0, "age_sd and bmi_sd must be positive"),
            (15.0 <= self.bmi_mean <= 50.0, "bmi_mean must be within 15..50 kg/m2"),
            (0.5 <= self.spacing_mm[0] <= self.spacing_mm[1] <= 3.0, "spacing_mm must be a range within 0.5..3.0 mm"),
            (5.0 <= self.noise_hu[0] <= self.noise_hu[1] <= 40.0, "noise_hu must be a range within 5..40 HU"),
            (0.3 <= self.noise_grain_mm <= 4.0, "noise_grain_mm must be within 0.3..4 mm"),
            (0.0 <= self.blur_mm <= 3.0, "blur_mm must be within 0..3 mm"),
            (abs(self.hu_offset) <= 30.0, "hu_offset must be within -30..30 HU"),
            (0.0 <= self.contrast_fraction <= 1.0, "contrast_fraction must be within 0..1"),
            (0.5 <= self.thickness_mm <= 10.0, "thickness_mm must be within 0.5..10 mm"),
            (0.0 <= self.arterial_share <= 1.0, "arterial_share must be within 0..1"),
            (0.0 <= self.arms_down_fraction <= 1.0, "arms_down_fraction must be within 0..1"),
            (0.0 <= self.hardware_fraction <= 1.0, "hardware_fraction must be within 0..1"),
            (
                128 <= int(self.matrix) <= 1024 and int(self.matrix) == self.matrix,
                "matrix must be an integer 128..1024",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"site profile {self.name!r}: {message}")
        object.__setattr__(self, "spacing_mm", tuple(float(v) for v in self.spacing_mm))
        object.__setattr__(self, "noise_hu", tuple(float(v) for v in self.noise_hu))
        object.__setattr__(self, "matrix", int(self.matrix))

    def with_overrides(self, **changes: object) -> SiteProfile:
        """A copy with some fields changed (config files use this); unknown names raise ConfigError."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"site profile {self.name!r}: unknown field(s) {unknown}; known: {sorted(known)}")
        # Values come from config files untyped; __post_init__ validates them after the replace.
        fixed: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}
        return replace(self, **fixed)

    def to_dict(self) -> dict[str, object]:
        """Plain values (lists for ranges), for JSON/TOML fingerprints."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


PROFILES: dict[str, SiteProfile] = {
    p.name: p
    for p in (
        SiteProfile(
            name="geriatric-oncology",
            description="older cancer patients, contrast CT, many sarcopenic",
            male_fraction=0.55,
            age_mean=72.0,
            age_sd=8.0,
            age_min=50.0,
            age_max=95.0,
            bmi_mean=24.5,
            bmi_sd=4.5,
            smi_shift=-4.0,
            spacing_mm=(0.70, 0.86),
            noise_hu=(14.0, 20.0),
            noise_grain_mm=1.1,
            blur_mm=0.55,
            hu_offset=3.0,
            contrast_fraction=0.9,
            thickness_mm=2.5,
            arterial_share=0.15,
            arms_down_fraction=0.12,
            hardware_fraction=0.03,
        ),
        SiteProfile(
            name="general-surgery",
            description="mixed adult surgical patients, half with contrast",
            male_fraction=0.5,
            age_mean=58.0,
            age_sd=15.0,
            age_min=20.0,
            age_max=92.0,
            bmi_mean=27.5,
            bmi_sd=5.5,
            smi_shift=-1.0,
            spacing_mm=(0.74, 0.94),
            noise_hu=(11.0, 17.0),
            noise_grain_mm=1.4,
            blur_mm=0.7,
            hu_offset=-2.0,
            contrast_fraction=0.5,
            thickness_mm=3.0,
            arterial_share=0.2,
            arms_down_fraction=0.08,
            hardware_fraction=0.05,
        ),
        SiteProfile(
            name="young-trauma",
            description="young trauma patients, mostly men, low-dose sharp-kernel CT stored bottom-up",
            male_fraction=0.75,
            age_mean=33.0,
            age_sd=11.0,
            age_min=18.0,
            age_max=70.0,
            bmi_mean=25.5,
            bmi_sd=4.0,
            smi_shift=3.0,
            spacing_mm=(0.62, 0.80),
            noise_hu=(18.0, 25.0),
            noise_grain_mm=0.8,
            blur_mm=0.4,
            hu_offset=6.0,
            contrast_fraction=0.7,
            thickness_mm=1.25,
            rows_bottom_up=True,
            arterial_share=0.45,
            arms_down_fraction=0.35,
            hardware_fraction=0.02,
        ),
        SiteProfile(
            name="obesity-clinic",
            description="bariatric and metabolic patients, large bodies, wide field of view",
            male_fraction=0.35,
            age_mean=47.0,
            age_sd=12.0,
            age_min=20.0,
            age_max=80.0,
            bmi_mean=36.0,
            bmi_sd=6.0,
            smi_shift=-3.0,
            spacing_mm=(0.86, 0.98),
            noise_hu=(12.0, 18.0),
            noise_grain_mm=1.6,
            blur_mm=0.8,
            hu_offset=-4.0,
            contrast_fraction=0.2,
            thickness_mm=5.0,
            arterial_share=0.1,
            arms_down_fraction=0.05,
            hardware_fraction=0.02,
        ),
    )
}


def get_profile(name: str) -> SiteProfile:
    """Look a profile up by name; the error lists the names that exist."""
    key = name.strip().lower().replace("_", "-")
    if key not in PROFILES:
        raise ConfigError(f"unknown site profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[key]
