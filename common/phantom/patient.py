"""Synthetic patients: demographics and the body composition they imply.

The skeletal muscle index is drawn from sex, BMI, age and the site's disease burden, so that SMA lands
near 120-200 cm2 in men and 80-140 cm2 in women and the share of sarcopenic patients (Prado 2008)
differs by site; the anatomy then builds muscles of that total area. Muscle attenuation falls with age
and BMI (fat infiltration), as do the intermuscular fat streaks.
The scan itself is drawn here too: contrast phase (arterial or portal venous as the site's protocol
mixes them), the slice's position along the L3 body, arms down and spinal hardware.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.phantom.profiles import SiteProfile

PHASES = ("none", "arterial", "portal")


@dataclass(frozen=True)
class Patient:
    """One synthetic patient; areas in cm2, lengths in metres / mm as named, HU for attenuation."""

    sex: str
    age_years: float
    height_m: float
    weight_kg: float
    bmi: float
    smi_target: float  # cm2/m2, what the anatomy aims at (the reference SMI comes from the mask)
    sma_target_cm2: float
    muscle_hu: float  # mean attenuation of lean muscle tissue, before scanner offset
    fat_infiltration: float  # area share of intermuscular fat streaks inside the muscle outline, 0..1
    sat_mm: float  # mean subcutaneous fat thickness, mm
    vat_level: float  # 0 (lean) .. 1 (much visceral fat)
    contrast: bool  # phase != "none"
    phase: str = "none"  # contrast phase: "none", "arterial" or "portal"
    level: float = 0.5  # where along the L3 body the slice lies: 0 upper endplate .. 1 lower endplate
    arms_down: bool = False  # arms beside the trunk instead of above the head
    hardware: bool = False  # pedicle screws from a spinal fusion


def _truncnorm(rng: np.random.Generator, mean: float, sd: float, low: float, high: float) -> float:
    value = rng.normal(mean, sd)
    for _ in range(20):
        if low <= value <= high:
            return float(value)
        value = rng.normal(mean, sd)
    return float(np.clip(value, low, high))


def sample_patient(rng: np.random.Generator, profile: SiteProfile) -> Patient:
    """Draw one patient of ``profile``'s population."""
    male = bool(rng.random() < profile.male_fraction)
    sex = "M" if male else "F"
    age = _truncnorm(rng, profile.age_mean, profile.age_sd, profile.age_min, profile.age_max)
    # Height: sex-specific, with the few cm lost after 50.
    height = rng.normal(1.765 if male else 1.635, 0.07 if male else 0.065) - 0.0012 * max(age - 50.0, 0.0)
    height = float(np.clip(height, 1.45 if male else 1.38, 2.05 if male else 1.90))
    sigma = np.sqrt(np.log(1.0 + (profile.bmi_sd / profile.bmi_mean) ** 2))
    bmi = float(np.clip(rng.lognormal(np.log(profile.bmi_mean) - sigma**2 / 2, sigma), 15.0, 55.0))
    weight = bmi * height**2

    # SMI: sex base, heavier people carry more muscle, it falls after 40, disease lowers it.
    old = max(age - 40.0, 0.0)
    if male:
        smi = 58.5 + 0.85 * (min(bmi, 40.0) - 25.0) - 0.13 * old + rng.normal(0.0, 6.0)
    else:
        smi = 45.0 + 0.55 * (min(bmi, 40.0) - 25.0) - 0.09 * old + rng.normal(0.0, 5.0)
    smi = float(np.clip(smi + profile.smi_shift * (1.0 if male else 0.75), 26.0, 85.0))

    # Attenuation of lean muscle 35-50 HU, lower with age and BMI (myosteatosis).
    # Men run ~4 HU above women at the same age and BMI (Derstine 2018's L3 cutoffs: 38.5 vs 34.3 HU).
    muscle_hu = 54.0 + (2.0 if male else -2.0) - 0.17 * old - 0.35 * max(bmi - 24.0, 0.0) + rng.normal(0.0, 3.0)
    muscle_hu = float(np.clip(muscle_hu, 32.0, 62.0))
    infiltration = 0.015 + 0.0009 * max(age - 30.0, 0.0) + 0.0025 * max(bmi - 23.0, 0.0) + rng.normal(0.0, 0.008)
    infiltration = float(np.clip(infiltration, 0.005, 0.12))

    # Fat: women store more subcutaneous fat, men more visceral fat.
    excess = max(bmi - 18.5, 0.0)
    sat = (4.0 + 2.0 * excess) if male else (7.0 + 2.7 * excess)
    sat = float(np.clip(sat * rng.lognormal(0.0, 0.2), 3.0, 95.0))
    vat = (0.045 * excess + 0.004 * max(age - 30.0, 0.0)) * (1.0 if male else 0.6) + rng.normal(0.0, 0.08)
    vat = float(np.clip(vat, 0.0, 1.0))
    phase = "none"
    if rng.random() < profile.contrast_fraction:
        phase = "arterial" if rng.random() < profile.arterial_share else "portal"
    return Patient(
        sex=sex,
        age_years=round(age, 1),
        height_m=round(height, 3),
        weight_kg=round(weight, 1),
        bmi=bmi,
        smi_target=smi,
        sma_target_cm2=smi * height**2,
        muscle_hu=muscle_hu,
        fat_infiltration=infiltration,
        sat_mm=sat,
        vat_level=vat,
        contrast=phase != "none",
        phase=phase,
        level=float(rng.random()),
        arms_down=bool(rng.random() < profile.arms_down_fraction),
        hardware=bool(rng.random() < profile.hardware_fraction),
    )
