"""Synthetic abdominal CT series from about T10 to S1, with the true vertebral levels.

Each slice is drawn from 3-D structures cut at its z (organs and bowel are ellipsoids, ribs descend
around the chest wall, psoas grows caudally, the iliac wings sweep in toward the sacrum), so
neighbouring slices agree and a slice's look depends on its level the way it does in a patient. What
tells levels apart on real CT is all here: vertebral bodies and discs, transverse processes longest at
L3, ribs ending at T12 (or not, see common.phantom.spine), lung bases and liver and spleen above,
kidneys around L1-L3, the aortic bifurcation at L4, the iliac crests and the sacrum below.

The in-plane drawing is coarser than the L3 slice phantom (common.phantom.anatomy): ellipses and
capsules on a 256 x 256 grid, hard edges softened by the scanner blur and by averaging sub-slices
across a thick slice (partial volume along z). It is meant for finding levels, not for measuring
muscle: the detailed L3 phantom stays the segmentation's training data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from common.phantom import anatomy as A
from common.phantom.patient import Patient
from common.phantom.spine import Spine

GRID = 256  # pixels a side (default)
PHASES = ("non-contrast", "arterial", "portal venous")
# Labels beyond the L3 phantom's (common.phantom.anatomy): structures of the other levels.
SPLEEN, LUNG, DISC, GLUTEAL, ARM, STOMACH = 35, 40, 23, 15, 16, 36
SERIES_MUSCLE_LABELS = (*A.MUSCLE_LABELS, GLUTEAL)

# HU by tissue and phase (non-contrast, arterial, portal venous): published ranges for enhanced organs
# (liver ~55 -> ~110, kidney cortex ~30 -> 150-200, aorta ~40 -> 250-300 in the arterial phase).
_ENHANCED = {
    "liver": (55.0, 70.0, 110.0),
    "spleen": (45.0, 120.0, 115.0),
    "cortex": (32.0, 180.0, 160.0),
    "medulla": (32.0, 60.0, 140.0),
    "aorta": (40.0, 280.0, 160.0),
    "cava": (40.0, 60.0, 140.0),
    "bowel_wall": (40.0, 80.0, 90.0),
}


@dataclass(frozen=True)
class Ellipsoid:
    """An organ or a bowel loop: centre and half-axes in mm, and what it is filled with."""

    x: float
    y: float
    z: float
    rx: float
    ry: float
    rz: float
    kind: str  # "gas" | "fluid" | "stool" for bowel, else an organ name

    def cut(self, z: float) -> tuple[float, float] | None:
        """Half-axes of the cross-section at ``z``, None when the plane misses it."""
        t = 1.0 - ((z - self.z) / self.rz) ** 2
        return None if t <= 0.02 else (self.rx * float(np.sqrt(t)), self.ry * float(np.sqrt(t)))


@dataclass(frozen=True)
class Body:
    """Everything about one patient's trunk that does not change from slice to slice."""

    spine: Spine
    patient: Patient
    phase: str
    arms_down: bool
    a: float  # body half-width at L3 (mm)
    b: float  # body half-depth at L3 (mm)
    organs: tuple[Ellipsoid, ...]
    bone_hu: float  # cancellous bone, falls with age


def build_body(rng: np.random.Generator, patient: Patient, spine: Spine, phase: str, arms_down: bool) -> Body:
    """Size the trunk from the patient's height and BMI; place the organs and bowel loops by level."""
    if phase not in PHASES:
        raise ValueError(f"unknown contrast phase {phase!r}; choose one of {PHASES}")
    s = spine.scale
    a = 140.0 * s * (patient.bmi / 25.0) ** 0.55 + rng.normal(0.0, 6.0)
    b = a * float(rng.uniform(0.66, 0.8))
    lv = spine.level
    t10, t12, l1, l2 = (lv(n) for n in ("T10", "T12", "L1", "L2"))
    ca, cb = a - patient.sat_mm - 12.0, b - 0.8 * patient.sat_mm - 12.0  # cavity half-axes
    liver_tip = l2.z_mid + rng.normal(0.0, 12.0) * s
    liver_top = t10.z_hi + 40.0 * s
    organs = [
        Ellipsoid(-0.42 * ca, -0.05 * cb, 0.5 * (liver_top + liver_tip), 0.55 * ca, 0.75 * cb,
                  0.5 * (liver_top - liver_tip), "liver"),
        Ellipsoid(0.58 * ca, 0.35 * cb, t12.z_hi + 10 * s, 0.25 * ca, 0.32 * cb, 55.0 * s, "spleen"),
        Ellipsoid(0.30 * ca, -0.35 * cb, t12.z_hi + 5 * s, 0.30 * ca, 0.30 * cb, 45.0 * s, "stomach"),
    ]  # fmt: skip
    for side, top in ((-1.0, l1.z_lo + 5 * s), (1.0, l1.z_mid + 5 * s)):  # the right kidney sits lower
        organs.append(Ellipsoid(side * (40.0 + 0.1 * ca) * s, 0.42 * cb, top - 55.0 * s, 27 * s, 20 * s, 55.0 * s,
                                "kidney"))  # fmt: skip
    for _ in range(int(rng.integers(10, 18))):  # bowel loops, mostly below the stomach
        z = float(rng.uniform(spine.vertebrae[-1].z_lo, l1.z_hi))
        r = float(rng.uniform(10.0, 24.0))
        kind = str(rng.choice(["gas", "fluid", "stool"], p=[0.3, 0.35, 0.35]))
        organs.append(Ellipsoid(float(rng.uniform(-0.7, 0.7) * ca), float(rng.uniform(-0.8, 0.15) * cb), z, r,
                                r * float(rng.uniform(0.7, 1.2)), r * float(rng.uniform(1.0, 2.5)), kind))  # fmt: skip
    bone = float(np.clip(260.0 - 1.6 * max(patient.age_years - 30.0, 0.0) + rng.normal(0, 20), 90.0, 320.0))
    return Body(spine, patient, phase, arms_down, float(a), float(b), tuple(organs), bone)


def field_of_view_mm(body: Body) -> float:
    """Scanners set the field of view to the widest part of the body (the pelvis), arms included."""
    width = 2.0 * body.a * 1.12 + (2 * 95.0 if body.arms_down else 0.0)
    return float(np.clip(width + 40.0, 320.0, 500.0))


def paint_series(
    rng: np.random.Generator,
    body: Body,
    z_positions: np.ndarray,
    thickness_mm: float,
    noise_hu: float,
    blur_mm: float,
    grid: int = GRID,
) -> tuple[np.ndarray, np.ndarray, float]:
    """(HU (N, H, W) float32, labels (N, H, W) uint8, pixel spacing mm) for slices centred at ``z_positions``.

    A slice thicker than 1.5 mm averages sub-slices across its thickness; labels come from its centre.
    """
    px = field_of_view_mm(body) / grid
    coords = (np.arange(grid, dtype=np.float32) - (grid - 1) / 2) * np.float32(px)
    X, Y = np.meshgrid(coords, coords + np.float32(0.1 * body.b))  # (rows = y posterior, cols = x left)
    n_sub = max(1, int(round(thickness_mm / 1.5)))
    offsets = (np.arange(n_sub) - (n_sub - 1) / 2) * (thickness_mm / n_sub)
    hu = np.empty((len(z_positions), grid, grid), np.float32)
    labels = np.empty((len(z_positions), grid, grid), np.uint8)
    for k, z in enumerate(z_positions):
        acc = np.zeros((grid, grid), np.float32)
        for j, dz in enumerate(offsets):
            h, lab = paint_slice(body, float(z + dz), X, Y)
            acc += h
            if j == n_sub // 2:  # the centre sub-slice (the one just above the centre when n_sub is even)
                labels[k] = lab
        img = gaussian_filter(acc / n_sub, blur_mm / px)
        noise = gaussian_filter(rng.normal(0.0, 1.0, (grid, grid)).astype(np.float32), 0.7)
        hu[k] = img + noise * np.float32(noise_hu / max(float(noise.std()), 1e-6))
    np.clip(hu, -1024.0, 3000.0, out=hu)
    return hu, labels, float(px)


def paint_slice(body: Body, z: float, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One axial plane at ``z`` (mm, the spine's frame): HU without noise or blur, and labels."""
    p, sp, s = body.patient, body.spine, body.spine.scale
    phase = PHASES.index(body.phase)
    hu = np.full(X.shape, -1000.0, np.float32)
    lab = np.zeros(X.shape, np.uint8)

    def put(mask: np.ndarray, value: float, label: int) -> None:
        hu[mask] = value
        lab[mask] = label

    def ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return ((X - cx) / max(rx, 0.1)) ** 2 + ((Y - cy) / max(ry, 0.1)) ** 2 <= 1.0

    def capsule(x0: float, y0: float, x1: float, y1: float, r: float) -> np.ndarray:
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((X - x0) * dx + (Y - y0) * dy) / max(dx * dx + dy * dy, 1e-6), 0.0, 1.0)
        return (X - x0 - t * dx) ** 2 + (Y - y0 - t * dy) ** 2 <= r * r

    sacrum_top = max(v.z_hi for v in sp.vertebrae if v.fused)
    pelvis = float(np.clip((sp.crest_z + 20 * s - z) / (sp.crest_z + 20 * s - sacrum_top + 30 * s), 0.0, 1.0))
    thorax = float(np.clip((z - sp.level("L1").z_mid) / (sp.level("T11").z_mid - sp.level("L1").z_mid), 0, 1))
    a = body.a * (1.0 + 0.12 * pelvis + 0.04 * thorax)
    b = body.b * (1.0 - 0.05 * pelvis + 0.08 * thorax)
    sat_side, sat_front = p.sat_mm * (1.0 - 0.3 * thorax), p.sat_mm * 0.8 * (1.0 - 0.3 * thorax)
    wall = (11.0 - 5.0 * thorax) * s

    # table under the back, then the trunk: fat, muscle wall, visceral fat
    put((Y > 1.05 * b + 4) & (Y < 1.05 * b + 14) & (np.abs(X) < 0.8 * a + 60), 80.0, A.TABLE)
    put(ellipse(0, 0, a, b), -105.0 + 0.1 * p.muscle_hu, A.SAT)
    put(ellipse(0, 0.55 * b, 0.55 * a, 0.5 * b), -105.0 + 0.1 * p.muscle_hu, A.SAT)  # the back, flattened below
    ia, ib = a - sat_side, b - sat_front
    put(ellipse(0, 0, ia, ib), p.muscle_hu, A.WALL_MUSCLE)
    ca, cb = ia - wall, ib - wall
    put(ellipse(0, 0, ca, cb), -95.0, A.VISCERAL_FAT)

    # lung bases behind the diaphragm: lowest at the back (about T12), higher toward the front
    lung_floor = sp.level("T12").z_mid + (sp.level("T10").z_mid - sp.level("T12").z_mid) * (-Y / cb + 1) / 2
    rho = np.sqrt((X / ca) ** 2 + (Y / cb) ** 2)
    depth = np.clip((z - lung_floor) / (40.0 * s), 0.0, 1.0)
    put((rho <= 1.0) & (rho > 1.0 - 0.45 * depth) & (depth > 0), -860.0, LUNG)

    # organs and bowel, cut at z
    for o in body.organs:
        cut = o.cut(z)
        if cut is None:
            continue
        rx, ry = cut
        inside = ellipse(o.x, o.y, rx, ry) & (rho < 1.0)
        if o.kind == "kidney":
            put(inside, _ENHANCED["cortex"][phase], A.KIDNEY)
            put(ellipse(o.x, o.y, rx - 6, ry - 6) & inside, _ENHANCED["medulla"][phase], A.KIDNEY)
            put(ellipse(o.x - np.sign(o.x) * rx * 0.6, o.y, rx * 0.35, ry * 0.3) & inside, -60.0, A.VISCERAL_FAT)
        elif o.kind in ("liver", "spleen"):
            put(inside, _ENHANCED[o.kind][phase], A.LIVER if o.kind == "liver" else SPLEEN)
        elif o.kind == "stomach":
            put(inside, _ENHANCED["bowel_wall"][phase], STOMACH)
            put(ellipse(o.x, o.y, rx - 4, ry - 4) & inside, 15.0, STOMACH)
            put(ellipse(o.x, o.y - 0.4 * ry, rx * 0.8, ry * 0.5) & inside, -900.0, A.BOWEL_CONTENT)
        else:
            put(inside, _ENHANCED["bowel_wall"][phase], A.BOWEL_WALL)
            content = {"gas": -900.0, "fluid": 12.0, "stool": -120.0}[o.kind]
            put(ellipse(o.x, o.y, rx - 3, ry - 3) & inside, content, A.BOWEL_CONTENT)

    # spine: body or disc, canal and posterior elements, by level
    here, above = sp.at(z)
    ref = here or above or sp.vertebrae[-1]
    lumbar = ref.name.startswith(("L", "S"))
    vx = (24.0 if lumbar else 18.0) * s * (1.25 if ref.fused else 1.0)
    vy = (17.0 if lumbar else 15.0) * s
    vcy = 0.32 * cb
    canal_y = vcy + vy + 9 * s
    # vessels in front of the spine: the aorta divides at L4
    if z > sp.level("L4").z_mid:
        put(ellipse(8 * s, vcy - vy - 13 * s, 11 * s, 11 * s), _ENHANCED["aorta"][phase], A.VESSEL)
    elif z > sacrum_top - 40 * s:
        for side in (-1.0, 1.0):
            put(ellipse(side * 22 * s, vcy - vy - 6 * s, 6.5 * s, 6.5 * s), _ENHANCED["aorta"][phase], A.VESSEL)
    if z > sp.level("L5").z_mid:
        put(ellipse(-20 * s, vcy - vy - 10 * s, 12 * s, 9 * s), _ENHANCED["cava"][phase], A.VESSEL)

    # muscles: psoas grows from T12 down, quadratus lumborum L1-L4, erector spinae everywhere
    t12, l5 = sp.level("T12"), sp.level("L5")
    grow = float(np.clip((t12.z_lo - z) / (t12.z_lo - l5.z_mid), 0.0, 1.0))
    if grow > 0 and z > sacrum_top - 60 * s:
        r = (6.0 + 17.0 * grow**0.7) * s
        for side in (-1.0, 1.0):
            cx = side * (vx + r * 0.85 + 8 * pelvis * s)
            put(ellipse(cx, vcy - 2 * s - 10 * pelvis * s, r, r * 0.9), p.muscle_hu, A.PSOAS)
    if sp.level("L4").z_lo < z < sp.level("T12").z_lo:
        for side in (-1.0, 1.0):
            put(ellipse(side * (vx + 42 * s), vcy + 16 * s, 19 * s, 9 * s), p.muscle_hu, A.QUADRATUS)
    er = 1.0 + 0.25 * (1.0 - thorax)
    for side in (-1.0, 1.0):
        put(ellipse(side * 27 * s, canal_y + 19 * s * er, 23 * s * er, 18 * s * er), p.muscle_hu, A.ERECTOR)

    if here is not None:
        put(ellipse(0, vcy, vx, vy), 650.0, A.CORTICAL_BONE)
        put(ellipse(0, vcy, vx - 2.5, vy - 2.5), body.bone_hu, A.CANCELLOUS_BONE)
    elif above is not None:
        put(ellipse(0, vcy, vx + 1.5, vy + 1.0), 85.0, DISC)
    if here is not None and not here.fused and z > here.z_lo + 0.3 * (here.z_hi - here.z_lo):
        put(ellipse(0, canal_y, 12 * s, 10 * s), 600.0, A.CORTICAL_BONE)  # pedicles and lamina
        tp = {"L1": 20, "L2": 26, "L3": 33, "L4": 28, "L5": 24, "S1": 22}.get(here.name, 12) * s
        for side in (-1.0, 1.0):  # transverse processes, longest at L3
            put(capsule(side * vx * 0.6, canal_y - 2 * s, side * (vx * 0.6 + tp), canal_y - 4 * s, 4 * s), 550.0,
                A.CORTICAL_BONE)  # fmt: skip
    spinous = next((v for v in sp.vertebrae if not v.fused and v.z_lo - 6 * s < z < v.z_mid), None)
    if spinous is not None:  # the spinous process points down over the disc below its body
        put(capsule(0, canal_y + 8 * s, 0, canal_y + 38 * s, 4.5 * s), 550.0, A.CORTICAL_BONE)
    put(ellipse(0, canal_y, 7 * s, 6 * s), 15.0, A.CANAL)

    # ribs: each descends from its vertebra toward the front; floating ribs end laterally
    phi = np.arctan2(np.abs(X), Y - 0.05 * cb)  # 0 at the back, pi at the front
    rr = np.sqrt((X / (ca + 4)) ** 2 + ((Y - 0.05 * cb) / (cb + 4)) ** 2)
    on_cage = np.abs(rr - 1.0) * min(ca, cb) < 5.0 * s
    for v in sp.vertebrae:
        if v.rib_reach <= 0:
            continue
        drop = (110.0 if v.rib_reach > 0.8 else 70.0 * v.rib_reach + 20.0) * s
        z_rib = v.z_mid - drop * phi / np.pi
        rib = on_cage & (np.abs(z_rib - z) < 5.5 * s) & (phi > 0.45) & (phi < np.pi * v.rib_reach)
        put(rib, 420.0, A.CORTICAL_BONE)
        if abs(v.z_mid - z) < 5.5 * s:  # the rib's neck beside its transverse process
            neck = capsule(-vx * 0.8, canal_y - 4 * s, -(vx + 30 * s), canal_y, 4.5 * s)
            put(neck | capsule(vx * 0.8, canal_y - 4 * s, vx + 30 * s, canal_y, 4.5 * s), 420.0, A.CORTICAL_BONE)

    # pelvis: iliac wings from the crest sweep in to the sacroiliac joints; gluteal muscles outside them
    if z < sp.crest_z:
        t = float(np.clip((sp.crest_z - z) / (sp.crest_z - sacrum_top + 25 * s), 0.0, 1.0))
        length = (18.0 + 60.0 * t) * s
        for side in (-1.0, 1.0):
            x_out, y_out = side * (0.80 - 0.2 * t) * ca, vcy - 5 * s - 10 * t * s
            x_in = x_out - side * length * 0.75
            y_in = y_out + length * 0.65
            put(capsule(x_out + side * 12 * s, y_out + 18 * s, x_in + side * 20 * s, y_in + 20 * s, (8 + 14 * t) * s),
                p.muscle_hu, GLUTEAL)  # fmt: skip
            put(capsule(x_out, y_out, x_in, y_in, (4.5 + 2.5 * t) * s), 450.0, A.CORTICAL_BONE)
            put(capsule(x_out, y_out, x_in, y_in, (2.0 + 2.0 * t) * s), body.bone_hu, A.CANCELLOUS_BONE)
    if here is not None and here.fused:
        for side in (-1.0, 1.0):  # the sacral alae
            put(capsule(0, vcy + 5 * s, side * (vx + 30 * s), vcy + 15 * s, 12 * s), body.bone_hu, A.CANCELLOUS_BONE)

    # arms beside the trunk
    if body.arms_down:
        for side in (-1.0, 1.0):
            cx = side * (a + 50.0 * s)
            arm = ellipse(cx, 0.1 * b, 42 * s, 48 * s)
            put(arm, -100.0, ARM)
            put(ellipse(cx, 0.1 * b, 33 * s, 38 * s), p.muscle_hu, ARM)
            put(ellipse(cx, 0.1 * b, 9 * s, 9 * s), 800.0, ARM)
    return hu, lab
