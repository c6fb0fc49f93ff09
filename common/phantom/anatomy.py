"""The L3 cross-section: geometry in millimetres, then painted into a Canvas as HU and labels.

Frame: millimetres, origin at the centre of the L3 vertebral body, x toward patient left, y toward
posterior (the canonical image orientation, anterior at the top). Muscles are sized from the
patient's target SMA (areas computed analytically from their radius functions), then the deep
fascia is wrapped around them, the subcutaneous fat laid on top, and the back flattened on the table.
Organs with muscle-like HU (kidney lower poles, collapsed bowel, bowel walls, liver tip, vessels)
are placed against the psoas, quadratus lumborum and abdominal wall on purpose: a HU window alone
must not find the muscle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from common.phantom.patient import Patient
from common.phantom.shapes import (
    ANGLES,
    N_ANGLES,
    Blob,
    Canvas,
    Polar,
    capsule_alpha,
    edge_alpha,
    harmonics,
    polar_area,
    smooth_periodic,
    superellipse,
)

# Label map values (uint8). MUSCLE_LABELS are the ones the ground-truth mask is drawn from.
AIR, TABLE, SKIN, SAT, VISCERAL_FAT = 0, 1, 2, 3, 4
WALL_MUSCLE, PSOAS, QUADRATUS, ERECTOR, LATISSIMUS = 10, 11, 12, 13, 14
CORTICAL_BONE, CANCELLOUS_BONE, CANAL = 20, 21, 22
KIDNEY, BOWEL_WALL, BOWEL_CONTENT, VESSEL, LIVER = 30, 31, 32, 33, 34
SPLEEN, KIDNEY_MEDULLA = 35, 37
ARM, CRUS = 16, 17  # muscle outside the L3 protocol: arm muscles, diaphragmatic crura
ARM_FAT, ARM_BONE, METAL = 5, 24, 25
MUSCLE_LABELS = (WALL_MUSCLE, PSOAS, QUADRATUS, ERECTOR, LATISSIMUS)

# Mean organ attenuation by contrast phase, HU (low, high) of a uniform draw per patient; sources in
# docs/phantom.md. Portal = portal venous / nephrographic (70-80 s), arterial = late arterial /
# corticomedullary (35-40 s).
ORGAN_HU: dict[str, dict[str, tuple[float, float]]] = {
    "kidney_cortex": {"none": (30, 40), "arterial": (150, 200), "portal": (150, 180)},
    "kidney_medulla": {"none": (28, 38), "arterial": (60, 90), "portal": (140, 170)},
    "liver": {"none": (55, 65), "arterial": (65, 80), "portal": (100, 120)},
    "spleen": {"none": (45, 50), "arterial": (100, 140), "portal": (110, 130)},
    "aorta": {"none": (35, 48), "arterial": (250, 400), "portal": (150, 200)},
    "ivc": {"none": (35, 48), "arterial": (45, 90), "portal": (130, 170)},
    "mesenteric": {"none": (35, 50), "arterial": (180, 300), "portal": (140, 190)},
    "bowel_wall": {"none": (30, 50), "arterial": (90, 130), "portal": (80, 110)},
}


def organ_hu(rng: np.random.Generator, organ: str, phase: str) -> float:
    """One patient's mean attenuation of ``organ`` in ``phase`` (see ORGAN_HU)."""
    lo, hi = ORGAN_HU[organ][phase]
    return float(rng.uniform(lo, hi))


def _wrap(phi: float) -> float:
    return float((phi + np.pi) % (2 * np.pi) - np.pi)


def window(phi_lo: float, phi_hi: float, ramp: float) -> np.ndarray:
    """Smooth 0..1 window over the angle interval [phi_lo, phi_hi] (no wrap), raised-cosine edges."""
    x = np.minimum(ANGLES - phi_lo, phi_hi - ANGLES) / max(ramp, 1e-6)
    return np.where(x <= 0, 0.0, np.where(x >= 1, 1.0, 0.5 - 0.5 * np.cos(np.pi * np.clip(x, 0, 1))))


def _lowpass(table: np.ndarray, kmax: int) -> np.ndarray:
    """Keep the first ``kmax`` Fourier harmonics of a periodic radius function."""
    spec = np.fft.rfft(table)
    spec[kmax + 1 :] = 0.0
    return np.fft.irfft(spec, n=table.size)


def _symmetric(w_right: np.ndarray) -> np.ndarray:
    """Mirror a function of phi about phi = 0 (left-right symmetry)."""
    return np.maximum(w_right, w_right[(-np.arange(N_ANGLES)) % N_ANGLES])


@dataclass
class Textures:
    """Unit-SD (H, W) float32 fields shared by the painting steps."""

    soft: np.ndarray  # ~2 mm mottling of soft tissue
    fat: np.ndarray  # ~3 mm texture of fat
    streak: np.ndarray  # band-pass field whose zero crossings become intermuscular fat
    stool: np.ndarray  # mottled bowel content


@dataclass
class Anatomy:
    """Geometry of one slice (mm) and what the scanner needs to know about it."""

    body_width_mm: float
    body_top_mm: float  # most anterior skin point, y
    table_y_mm: float  # table top surface, y
    arms: tuple[tuple[float, float, float], ...] = ()  # arms beside the trunk: centre x, y and radius, mm
    metal: tuple[tuple[float, float], ...] = ()  # centres of metal implants, mm
    dense: tuple[tuple[float, float], ...] = ()  # dense structures whose beam hardening darkens the gap between


@dataclass(frozen=True)
class Geometry:
    """One slice's anatomy in millimetres (radius functions of the angle around ``centre``), before painting."""

    hs: float  # skeletal scale (height / 1.70 m)
    vw: float  # vertebral body half-width
    vd: float  # vertebral body half-depth
    vert: Blob  # vertebral body
    canal: Blob  # spinal canal
    canal_a: float  # canal half-width
    arch: Blob  # neural arch
    tp_y: float  # transverse processes' y
    tp_tip: tuple[float, float]  # transverse process tip on the +x side (mirrored for the other)
    sp_root: float  # spinous process root, y
    sp_tip: tuple[float, float]  # spinous process tip
    blobs: dict[str, list[Blob]]  # psoas, quadratus lumborum, erector spinae per side
    centre: tuple[float, float]  # centre of the peritoneal cavity: origin of the radius functions
    r_cav: np.ndarray  # cavity radius by angle
    wall: list[tuple[np.ndarray, np.ndarray]]  # wall muscle layers (inner, outer radius)
    fascia: np.ndarray  # deep fascia radius by angle
    lat_inner: np.ndarray  # latissimus inner radius
    lat_t: np.ndarray  # latissimus thickness by angle
    sat: np.ndarray  # subcutaneous fat thickness by angle
    skin_t: float  # skin thickness
    body: np.ndarray  # skin radius by angle
    bx: np.ndarray  # skin outline x by angle
    table_y: float  # table top, y
    table_k: float  # table top curvature (1 / 2R)
    body_width: float  # skin-to-skin width
    body_top: float  # most anterior skin point, y


def build_and_paint(
    rng: np.random.Generator,
    patient: Patient,
    canvas_factory: Callable[[float, tuple[float, float]], Canvas],
    tex_factory: Callable[[Canvas], Textures],
) -> tuple[Canvas, Anatomy]:
    """Draw the anatomy of ``patient``: ``build_geometry``, then ``paint`` (one random stream, in that order).

    ``canvas_factory(body_width_mm, centre_mm)`` returns the Canvas (the scanner picks its field of
    view from the body width); ``tex_factory(canvas)`` the Textures on that grid.
    """
    return paint(rng, patient, build_geometry(rng, patient), canvas_factory, tex_factory)


def build_geometry(rng: np.random.Generator, patient: Patient) -> Geometry:
    """Size and place every structure of ``patient``'s slice from the SMA budget.

    Muscle shares of the SMA budget: psoas ~15 %, quadratus lumborum ~8 %, erector spinae with
    multifidus ~34 %, latissimus ~4 %, abdominal wall ~39 % (rectus about a third of it).
    """
    p = patient
    male = p.sex == "M"
    hs = p.height_m / 1.70  # skeletal scale
    # outline area (mm2) to draw: the mask loses fat streaks, edges and pixels under bone (calibrated)
    sma = p.sma_target_cm2 * 100.0 / (1.0 - 0.8 * p.fat_infiltration) / 0.89
    share = np.array([0.15 if male else 0.13, 0.08, 0.34, 0.04, 0.39]) * rng.lognormal(0.0, 0.1, 5)
    share /= share.sum()
    a_psoas, a_ql, a_es, a_lat, a_wall = sma * share

    # ---- spine -------------------------------------------------------------------------------
    vw = 23.5 * hs * (1.04 if male else 0.96) * rng.lognormal(0, 0.05)
    vd = vw * rng.uniform(0.66, 0.76)
    vert = Blob(0.0, 0.0, superellipse(vw, vd, 2.4) * harmonics(rng, 0.03, symmetric=0.8))
    # posterior concavity of the body where the canal sits
    vert.r *= 1.0 - 0.10 * np.exp(-(((np.abs(ANGLES) - np.pi) / 0.35) ** 2))
    canal_a, canal_b = 10.5 * hs, 8.0 * hs
    canal_cy = vd + canal_b + 0.5
    canal = Blob(
        0.0,
        canal_cy,
        superellipse(canal_a, canal_b, 2.0)
        * (1 + 0.12 * np.cos(ANGLES) + 0.08 * np.cos(3 * ANGLES))
        * harmonics(rng, 0.03, symmetric=0.9),
    )
    arch = Blob(0.0, canal_cy + 1.0, superellipse(canal_a + 6.0, canal_b + 6.5, 2.2))
    tp_y = vd + 4.0
    tp_len = 36.0 * hs * rng.lognormal(0, 0.06)
    tp_tilt = np.deg2rad(rng.uniform(5, 18))
    tp_tip = (canal_a + tp_len * np.cos(tp_tilt), tp_y + tp_len * np.sin(tp_tilt))
    sp_root = canal_cy + canal_b + 3.0
    sp_len = 26.0 * hs * rng.lognormal(0, 0.08)
    sp_tip = (rng.normal(0, 1.5), sp_root + sp_len)

    # ---- deep back muscles (each side), sized from the SMA budget ------------------------------
    def sized(blob: Blob, area: float) -> Blob:
        return blob.scaled(np.sqrt(area / blob.area))

    blobs: dict[str, list[Blob]] = {"psoas": [], "ql": [], "es": []}
    for side in (-1.0, 1.0):
        jitter = rng.lognormal(0.0, 0.06)
        ps = sized(
            Blob(0, 0, superellipse(1.0, rng.uniform(1.05, 1.4), 2.0) * harmonics(rng, 0.05)), a_psoas / 2 * jitter
        )
        ps_a = float(ps.r[N_ANGLES * 3 // 4])  # lateral half-width
        ps.cx, ps.cy = side * (vw * 0.92 + ps_a * 0.85), -0.25 * vd + rng.normal(0, 2)
        ps.rot = side * np.deg2rad(rng.uniform(10, 30))
        blobs["psoas"].append(ps)

        ql = sized(Blob(0, 0, superellipse(rng.uniform(2.0, 2.8), 1.0, 2.0) * harmonics(rng, 0.05)), a_ql / 2 * jitter)
        ql_a = float(ql.r[N_ANGLES * 3 // 4])
        ql.rot = -side * np.deg2rad(rng.uniform(15, 35))  # long axis points antero-laterally
        ql.cx, ql.cy = side * (tp_tip[0] + 0.55 * ql_a), tp_tip[1] - 0.15 * ql_a
        blobs["ql"].append(ql)

        es = sized(
            Blob(0, 0, superellipse(1.0, rng.uniform(0.6, 0.8), rng.uniform(2.4, 3.2)) * harmonics(rng, 0.05)),
            a_es / 2 * jitter,
        )
        es_a, es_b = float(es.r[N_ANGLES * 3 // 4]), float(es.r[N_ANGLES // 2])
        es.cx, es.cy = side * (4.0 + es_a * 1.0), tp_y + 5.0 + es_b
        es.rot = side * np.deg2rad(rng.uniform(-8, 8))
        blobs["es"].append(es)

    # ---- peritoneal cavity and abdominal wall, in polar coordinates around the cavity centre ----------
    vat = p.vat_level
    half_width = (98.0 + 80.0 * vat) * hs**0.6 * rng.lognormal(0, 0.05)
    y_post = tp_y + 12.0
    depth_ant = (42.0 + 95.0 * vat) * hs**0.5 * rng.lognormal(0, 0.08)
    y_ant = -vd - depth_ant
    b_half = (y_post - y_ant) / 2
    centre = (0.0, (y_post + y_ant) / 2)
    r_cav = superellipse(half_width, b_half, rng.uniform(2.0, 2.3)) * harmonics(rng, 0.04, symmetric=0.6)
    r_cav *= 1.0 - rng.uniform(0.06, 0.14) * (1.0 - np.cos(ANGLES)) / 2.0  # narrower behind (egg shape)
    # make sure the cavity reaches around psoas and kidneys laterally
    r_cav = smooth_periodic(r_cav, 2.0)

    def phi_of(x: float, y: float) -> float:
        return float(np.arctan2(x - centre[0], -(y - centre[1])))

    phi_end = abs(phi_of(tp_tip[0] + 40.0 * hs, tp_tip[1])) + rng.uniform(-0.1, 0.05)
    r0 = float(r_cav[N_ANGLES // 2])
    alba = rng.uniform(4.0, 9.0 + 8.0 * vat) / r0  # half-width of the linea alba, rad
    phi_rect = min(alba + rng.uniform(55.0, 75.0) * hs / r0, rng.uniform(0.6, 0.8))
    # rectus: thickest next to the linea alba, tapering toward the linea semilunaris
    u = np.clip((ANGLES - alba) / (phi_rect - alba), 0.0, 1.0)
    rect = np.sin(np.pi * u**0.75) ** 0.6
    rect = _symmetric(rect) * rng.uniform(8.0, 11.0)
    obl_lo = phi_rect + rng.uniform(0.03, 0.08)
    phi_end = max(phi_end, obl_lo + 1.0)
    obl = _symmetric(window(obl_lo, phi_end, 0.3))
    lateral = np.clip(np.abs(ANGLES) / np.pi, 0, 1)  # external oblique thickens laterally
    t_eo = obl * (4.0 + 6.0 * lateral) * window(obl_lo + 0.1, phi_end - 0.3, 0.3).clip(0.35, 1)
    t_eo = _symmetric(t_eo)
    t_io = obl * rng.uniform(6.0, 9.0)
    t_ta = obl * rng.uniform(2.5, 4.0)
    wall_mod = harmonics(rng, 0.07, kmin=2, kmax=7, decay=0.8)
    layers = [t_ta * wall_mod, t_io * wall_mod, t_eo * wall_mod, rect * wall_mod]
    gap = 1.3  # fascial planes between the oblique layers, mm

    def wall_bounds(scale: float, scale_rect: float) -> list[tuple[np.ndarray, np.ndarray]]:
        inner = r_cav.copy()
        out = []
        for t in layers[:3]:
            lo = inner
            hi = lo + scale * t
            out.append((lo, hi))
            inner = hi + gap * (t > 0.3)
        out.append((r_cav, r_cav + scale_rect * layers[3]))
        return out

    # rectus ~30 % of the wall's muscle, obliques and transversus the rest (each scaled to its share)
    scale_r, scale_o = 1.0, 1.0
    rect_share = rng.uniform(0.25, 0.35)
    for _ in range(3):
        bounds = wall_bounds(scale_o, scale_r)
        area_o = sum(polar_area(hi, lo) for lo, hi in bounds[:3])
        area_r = polar_area(bounds[3][1], bounds[3][0])
        scale_o *= np.sqrt((1 - rect_share) * a_wall / max(area_o, 1.0))
        scale_r *= np.sqrt(rect_share * a_wall / max(area_r, 1.0))
        # keep bands anatomical: at most ~30 mm of lateral wall and ~18 mm of rectus
        scale_o = min(scale_o, 30.0 / max(float((layers[0] + layers[1] + layers[2]).max()), 1.0))
        scale_r = min(scale_r, 18.0 / max(float(layers[3].max()), 1.0))
    wall = wall_bounds(scale_o, scale_r)
    wall_outer = np.maximum.reduce([hi for _, hi in wall])

    # ---- deep fascia: wrap the wall and the back muscles ----------------------------------------
    front = np.abs(ANGLES) < phi_end
    hull = np.where(front, np.maximum(wall_outer, r_cav + 1.5), 0.6 * r_cav)
    pts = [b.points() for group in blobs.values() for b in group]
    sx, sy = np.linspace(sp_root, sp_tip[1] + 4, 8) * 0 + sp_tip[0], np.linspace(sp_root, sp_tip[1] + 4, 8)
    pts.append((sx, sy))
    for x, y in pts:
        dx, dy = x - centre[0], y - centre[1]
        rr = np.hypot(dx, dy) + 2.5
        idx = ((np.arctan2(dx, -dy) + np.pi) * N_ANGLES / (2 * np.pi)).astype(int) % N_ANGLES
        np.maximum.at(hull, idx, rr)
    from scipy.ndimage import maximum_filter1d, minimum_filter1d

    # the fascia spans concavities between the wall and the back muscles: a low-order smooth curve
    # pushed out until it (nearly) encloses everything
    fascia = minimum_filter1d(maximum_filter1d(hull, 23, mode="wrap"), 23, mode="wrap")
    for _ in range(4):
        fascia = _lowpass(np.maximum(fascia, hull), 7)
    fascia = smooth_periodic(np.maximum(fascia, hull), 2.0)
    # latissimus dorsi: thin sheet just under the fascia, posterolaterally
    lat_win = _symmetric(window(phi_end - 0.55, min(phi_end + 0.5, np.pi - 0.45), 0.25))
    lat_t = lat_win * 1.0
    lat_area = polar_area(fascia + lat_t, fascia)
    lat_t = lat_t * (a_lat / max(lat_area, 1.0))
    lat_t = np.minimum(lat_t, 9.0)
    lat_inner = fascia.copy()
    fascia = fascia + lat_t

    # ---- subcutaneous fat and skin ---------------------------------------------------------------
    ant = np.cos(ANGLES)  # +1 anterior, -1 posterior
    flank = np.exp(-(((np.abs(ANGLES) - 1.9) / 0.5) ** 2))
    pattern = 1.0 + (0.25 * ant + 0.05 * flank if male else 0.12 * ant + 0.3 * flank)
    pattern *= 1.0 - 0.35 * np.exp(-(((np.abs(ANGLES) - np.pi) / 0.3) ** 2))  # thin over the spine
    sat = np.maximum(p.sat_mm * pattern * harmonics(rng, 0.15, kmin=2, kmax=6, decay=1.0, symmetric=0.4), 2.0)
    skin_t = rng.uniform(1.5, 2.5)
    body = smooth_periodic(fascia + sat + skin_t, 1.5)

    bx = body * np.sin(ANGLES) + centre[0]
    by = -body * np.cos(ANGLES) + centre[1]
    fy_back = float(np.max(-fascia * np.cos(ANGLES) + centre[1]))
    table_y = fy_back + max(0.8 * (float(by.max()) - fy_back), 4.0)  # the back rests on the pad here
    table_k = 1.0 / (2.0 * rng.uniform(600.0, 1100.0))  # concave table top, radius 0.6-1.1 m
    body_width = float(bx.max() - bx.min())
    body_top = float(by.min())
    return Geometry(
        hs=hs,
        vw=vw,
        vd=vd,
        vert=vert,
        canal=canal,
        canal_a=canal_a,
        arch=arch,
        tp_y=tp_y,
        tp_tip=tp_tip,
        sp_root=sp_root,
        sp_tip=sp_tip,
        blobs=blobs,
        centre=centre,
        r_cav=r_cav,
        wall=wall,
        fascia=fascia,
        lat_inner=lat_inner,
        lat_t=lat_t,
        sat=sat,
        skin_t=skin_t,
        body=body,
        bx=bx,
        table_y=table_y,
        table_k=table_k,
        body_width=body_width,
        body_top=body_top,
    )


def paint(
    rng: np.random.Generator,
    patient: Patient,
    geometry: Geometry,
    canvas_factory: Callable[[float, tuple[float, float]], Canvas],
    tex_factory: Callable[[Canvas], Textures],
) -> tuple[Canvas, Anatomy]:
    """Paint ``geometry`` as HU and labels; the canvas is created here, once the body size (hence FOV) is known."""
    p = patient
    (
        hs,
        vw,
        vd,
        vert,
        canal,
        canal_a,
        arch,
        tp_y,
        tp_tip,
        sp_root,
        sp_tip,
        blobs,
        centre,
        r_cav,
        wall,
        fascia,
        lat_inner,
        lat_t,
        sat,
        skin_t,
        body,
        bx,
        table_y,
        table_k,
        body_width,
        body_top,
    ) = (
        geometry.hs,
        geometry.vw,
        geometry.vd,
        geometry.vert,
        geometry.canal,
        geometry.canal_a,
        geometry.arch,
        geometry.tp_y,
        geometry.tp_tip,
        geometry.sp_root,
        geometry.sp_tip,
        geometry.blobs,
        geometry.centre,
        geometry.r_cav,
        geometry.wall,
        geometry.fascia,
        geometry.lat_inner,
        geometry.lat_t,
        geometry.sat,
        geometry.skin_t,
        geometry.body,
        geometry.bx,
        geometry.table_y,
        geometry.table_k,
        geometry.body_width,
        geometry.body_top,
    )

    # ---- canvas: the field of view takes in the arms when they lie beside the trunk ------------------
    arms = _place_arms(rng, p, geometry) if p.arms_down else ()
    span = max([body_width] + [2.0 * (abs(x) + r) for x, _, r in arms])
    canvas = canvas_factory(span, ((bx.max() + bx.min()) / 2, (body_top + table_y) / 2 + 15.0))
    tex: Textures = tex_factory(canvas)
    px = canvas.px

    def field(value: float, sd: float, t: np.ndarray, box: tuple[slice, slice] | None) -> np.ndarray | float:
        return value if box is None else value + sd * t[box]

    phase = p.phase
    fat_hu = rng.uniform(-112, -92)

    # table: rigid, so it uses the undeformed grid
    _paint_table(rng, canvas, table_y, table_k)
    for arm in arms:
        _paint_arm(rng, canvas, p, tex, arm, fat_hu)

    # body, skin, subcutaneous fat
    full = canvas.box(float(bx.min()), float(bx.max()), body_top, table_y)
    assert full is not None  # the canvas is centred on the body, so the body's box is on it
    pol = Polar(canvas, full, centre)
    back_cut = table_y - table_k * canvas.X[full] ** 2 - canvas.Y[full]
    rb = pol.radius(body)
    canvas.paint(full, edge_alpha(np.minimum(rb - pol.rho, back_cut), px), rng.uniform(20, 45), SKIN)
    canvas.paint(
        full,
        edge_alpha(np.minimum(rb - skin_t - pol.rho, back_cut - skin_t * 0.7), px),
        field(fat_hu - 3, 7, tex.fat, full),
        SAT,
    )
    # superficial (Scarpa's) fascia: a thin, broken soft-tissue line inside the fat, front and flanks
    if p.sat_mm > 8.0:
        depth = fascia + sat * rng.uniform(0.35, 0.6)
        keep = window(-2.3, 2.3, 0.4)
        line = edge_alpha(rng.uniform(0.3, 0.6) - np.abs(pol.radius(depth) - pol.rho), px)
        line *= pol.radius(keep) * (tex.soft[full] > -0.6)
        canvas.paint(full, line, rng.uniform(-10.0, 30.0), SAT)
    # visceral / retroperitoneal fat inside the deep fascia
    rf = pol.radius(fascia)
    canvas.paint(full, edge_alpha(rf - pol.rho, px), field(fat_hu + 6, 9, tex.fat, full), VISCERAL_FAT)

    # muscle tissue HU: lean muscle + mottling, mixed with intermuscular fat along streaks
    muscle = _muscle_field(p, tex, fat_hu)
    rli = pol.radius(lat_inner)
    canvas.paint(
        full,
        edge_alpha(np.minimum(rf - pol.rho, pol.rho - rli), px) * (pol.radius(lat_t) > 0.8),
        muscle[full],
        LATISSIMUS,
    )
    for lo, hi in wall:
        rlo, rhi = pol.radius(lo), pol.radius(hi)
        alpha = edge_alpha(np.minimum(rhi - pol.rho, pol.rho - rlo), px) * ((rhi - rlo) > 0.6)
        canvas.paint(full, alpha, muscle[full], WALL_MUSCLE)

    # ---- cavity contents -----------------------------------------------------------------------
    _paint_viscera(rng, canvas, p, tex, centre, r_cav, blobs, vw, vd, phase, fat_hu)
    _paint_kidneys(rng, canvas, p, tex, blobs, fat_hu)

    # diaphragmatic crura: the right one reaches L3 in some patients, the left one rarely
    for side, reach in ((-1.0, 0.15 + 0.5 * (1.0 - p.level)), (1.0, 0.08 * (1.0 - p.level))):
        if rng.random() < reach:
            box, a = capsule_alpha(
                canvas,
                (side * vw * rng.uniform(0.05, 0.25), -vd - rng.uniform(2.0, 5.0)),
                (side * vw * rng.uniform(0.7, 0.95), -vd * rng.uniform(0.3, 0.6)),
                rng.uniform(3.5, 7.0) * hs,
                rng.uniform(2.0, 4.0) * hs,
            )
            canvas.paint(box, a, field(rng.uniform(40, 60), 5, tex.soft, box), CRUS)

    # great vessels in front of the spine
    age_old = max(p.age_years - 50, 0)
    r_ao = rng.uniform(8.0, 10.5) + 0.06 * age_old
    aorta = Blob(rng.uniform(5, 14), -vd - r_ao - rng.uniform(1, 4), superellipse(r_ao, r_ao) * harmonics(rng, 0.02))
    box, a = aorta.alpha(canvas)
    canvas.paint(box, a, organ_hu(rng, "aorta", phase), VESSEL)
    if rng.random() < 0.02 * age_old:  # calcified plaques on the aortic wall
        for ang in rng.uniform(-np.pi, np.pi, rng.integers(1, 4)):
            plaque = Blob(aorta.cx + r_ao * np.sin(ang), aorta.cy - r_ao * np.cos(ang), superellipse(1.6, 1.2))
            box, a = plaque.alpha(canvas)
            canvas.paint(box, a, rng.uniform(400, 900), VESSEL)
    ivc = Blob(
        -vw * rng.uniform(0.5, 0.9),
        -vd - rng.uniform(6, 10),
        superellipse(rng.uniform(10, 15), rng.uniform(6, 10)) * harmonics(rng, 0.05),
    )
    box, a = ivc.alpha(canvas)
    ivc_hu = organ_hu(rng, "ivc", phase)
    # arterial phase: enhanced renal-vein blood streams into unenhanced infrarenal blood
    canvas.paint(box, a, field(ivc_hu, 25 if phase == "arterial" else 4, tex.fat, box), VESSEL)

    # psoas, quadratus lumborum, erector spinae
    for name, lab in (("psoas", PSOAS), ("ql", QUADRATUS), ("es", ERECTOR)):
        for b in blobs[name]:
            box, a = b.alpha(canvas)
            canvas.paint(box, a, muscle[box] if box is not None else 0.0, lab)

    # fascial plane between multifidus (medial) and the erector spinae proper: a thin fat line inside
    # the outline, which the HU window then keeps out of the mask
    for es in blobs["es"]:
        side = np.sign(es.cx)
        x0, y0, x1, y1 = es.bbox()
        mx = es.cx - side * (x1 - x0) * rng.uniform(0.08, 0.2)
        box, a = capsule_alpha(
            canvas,
            (mx + side * rng.uniform(-4, 4), y0 + 4.0),
            (mx - side * rng.uniform(0, 6), y1 - 6.0),
            rng.uniform(0.5, 1.0),
            rng.uniform(0.4, 0.8),
        )
        shade = rng.uniform(0.7, 1.0)
        canvas.paint(box, None if a is None else a * shade, fat_hu + 20.0, ERECTOR)

    # ---- bone ------------------------------------------------------------------------------------------
    cortex_hu = rng.uniform(650, 1000) - 3.0 * age_old
    trab_hu = float(np.clip(rng.normal(240, 30) - 2.4 * max(p.age_years - 30, 0), 70, 330))
    for tip_side in (-1.0, 1.0):
        box, a = capsule_alpha(
            canvas, (tip_side * (canal_a * 0.6), tp_y - 2.0), (tip_side * tp_tip[0], tp_tip[1]), 6.0 * hs, 3.8 * hs
        )
        canvas.paint(box, a, field(cortex_hu * 0.6, 60, tex.soft, box), CORTICAL_BONE)
    box, a = capsule_alpha(canvas, (0.0, sp_root - 2.0), sp_tip, 5.0 * hs, 3.0 * hs)
    canvas.paint(box, a, field(cortex_hu * 0.6, 60, tex.soft, box), CORTICAL_BONE)
    box, a = arch.alpha(canvas)
    canvas.paint(box, a, field(cortex_hu * 0.7, 60, tex.soft, box), CORTICAL_BONE)
    box, a = canal.alpha(canvas)
    canvas.paint(box, a, field(rng.uniform(10, 30), 4, tex.soft, box), CANAL)
    box, a = vert.alpha(canvas)
    canvas.paint(box, a, cortex_hu, CORTICAL_BONE)
    inner = vert.shrunk(rng.uniform(1.2, 2.0))
    box, a = inner.alpha(canvas)
    canvas.paint(box, a, field(trab_hu, 35, tex.stool, box), CANCELLOUS_BONE)

    metal: list[tuple[float, float]] = []
    if p.hardware:  # pedicle screws through both pedicles into the body, rods beside the spinous process
        for side in (-1.0, 1.0):
            entry = (side * (canal_a + rng.uniform(4.0, 8.0)), tp_y + rng.uniform(2.0, 6.0))
            tip = (side * vw * rng.uniform(0.1, 0.35), -vd * rng.uniform(0.2, 0.6))
            box, a = capsule_alpha(canvas, entry, tip, 3.2, 2.6)
            canvas.paint(box, a, 12000.0, METAL)
            rod = Blob(
                side * (canal_a + rng.uniform(3.0, 7.0)), sp_root + rng.uniform(2.0, 8.0), superellipse(3.0, 3.0)
            )
            box, a = rod.alpha(canvas)
            canvas.paint(box, a, 12000.0, METAL)
            metal += [((entry[0] + tip[0]) / 2, (entry[1] + tip[1]) / 2), (rod.cx, rod.cy)]
    dense = [(0.0, 0.0)] + [(x, y) for x, y, _ in arms]
    if phase == "arterial":
        dense.append((aorta.cx, aorta.cy))
    return canvas, Anatomy(
        body_width_mm=body_width,
        body_top_mm=body_top,
        table_y_mm=table_y,
        arms=tuple(arms),
        metal=tuple(metal),
        dense=tuple(dense),
    )


def _place_arms(rng: np.random.Generator, p: Patient, g: Geometry) -> tuple[tuple[float, float, float], ...]:
    """Centres and radii (mm) of the two arms lying on the table beside the trunk."""
    size = float(np.clip(1.0 + 0.3 * (p.bmi - 25.0) / 10.0, 0.8, 1.5))
    out = []
    for side in (-1.0, 1.0):
        r = rng.uniform(40.0, 52.0) * g.hs * size
        x = side * (float(np.max(side * g.bx)) + rng.uniform(2.0, 20.0) + r)
        y = g.table_y - g.table_k * x**2 - r * rng.uniform(1.0, 1.6)  # on the concave table, or on a pad
        out.append((float(x), float(y), float(r)))
    return tuple(out)


def _paint_arm(
    rng: np.random.Generator,
    canvas: Canvas,
    p: Patient,
    tex: Textures,
    arm: tuple[float, float, float],
    fat_hu: float,
) -> None:
    """One arm in cross-section (upper arm or forearm): skin, arm fat, muscle, one or two bones."""
    x, y, r = arm
    outline = Blob(x, y, superellipse(r, r * rng.uniform(0.8, 0.95)) * harmonics(rng, 0.05))
    box, a = outline.alpha(canvas)
    canvas.paint(box, a, rng.uniform(20, 45), SKIN)
    fat_t = float(np.clip(0.3 * p.sat_mm, 3.0, 0.45 * r))
    box, a = outline.shrunk(1.5).alpha(canvas)
    canvas.paint(box, a, fat_hu + (4 * tex.fat[box] if box is not None else 0.0), ARM_FAT)
    box, a = outline.shrunk(1.5 + fat_t).alpha(canvas)
    canvas.paint(box, a, p.muscle_hu + rng.uniform(-4, 4) + (5 * tex.soft[box] if box is not None else 0.0), ARM)
    bones = (
        [(0.0, 0.2 * r, rng.uniform(9.0, 12.0))]
        if rng.random() < 0.5
        else [
            (-0.3 * r, 0.1 * r, rng.uniform(5.5, 7.0)),
            (0.3 * r, 0.25 * r, rng.uniform(5.5, 7.0)),
        ]
    )
    for bx, by, br in bones:
        bone = Blob(x + bx, y + by, superellipse(br, br * 0.9))
        box, a = bone.alpha(canvas)
        canvas.paint(box, a, rng.uniform(1000, 1500), ARM_BONE)
        box, a = bone.shrunk(br * 0.35).alpha(canvas)
        canvas.paint(box, a, rng.uniform(-60, 40), ARM_BONE)


def _paint_kidneys(
    rng: np.random.Generator, canvas: Canvas, p: Patient, tex: Textures, blobs: dict[str, list[Blob]], fat_hu: float
) -> None:
    """Kidneys beside the psoas: larger, with sinus fat and hilum, toward the upper endplate.

    The cortex-medulla contrast follows the phase: a bright rim around darker pyramids in the
    arterial (corticomedullary) phase, homogeneous in the portal (nephrographic) phase.
    """
    upper = 1.0 - p.level
    hs = p.height_m / 1.70
    cortex_hu = organ_hu(rng, "kidney_cortex", p.phase)
    medulla_hu = min(organ_hu(rng, "kidney_medulla", p.phase), cortex_hu + 5.0)
    for side, ps, ql in zip((-1.0, 1.0), blobs["psoas"], blobs["ql"], strict=True):
        if rng.random() >= (0.65 + 0.3 * upper if side < 0 else 0.4 + 0.4 * upper):
            continue
        size = rng.uniform(16, 27) * hs * (1.0 + 0.35 * upper)
        k = Blob(0, 0, superellipse(size * rng.uniform(1.1, 1.4), size, 2.0) * harmonics(rng, 0.05))
        k.rot = side * np.deg2rad(rng.uniform(20, 50))
        k.cx = ps.cx + side * (float(ps.r[N_ANGLES * 3 // 4]) + size * 0.9)
        k.cy = min(ps.cy + rng.uniform(5, 15), ql.cy - size * 0.9)
        box, a = k.alpha(canvas)
        canvas.paint(box, a, cortex_hu + (6 * tex.soft[box] if box is not None else 0.0), KIDNEY)
        hilum = upper > 0.45 and rng.random() < 0.8
        medial = np.arctan2(-side, 0.3)  # direction toward the psoas in the body frame (phi convention)
        for ang in np.linspace(-np.pi, np.pi, int(rng.integers(4, 7)), endpoint=False) + rng.uniform(0, 1):
            if hilum and abs(_wrap(float(ang) - medial)) < 0.7:
                continue
            d = 0.55 * size
            pyr = Blob(k.cx + d * np.sin(ang), k.cy - d * np.cos(ang), superellipse(0.24 * size, 0.18 * size), ang)
            box, a = pyr.alpha(canvas)
            canvas.paint(box, a, medulla_hu + (5 * tex.soft[box] if box is not None else 0.0), KIDNEY_MEDULLA)
        if hilum:  # renal sinus fat opening medially (anteromedially) toward the psoas, with the renal vein
            end = (k.cx + 1.3 * size * np.sin(medial), k.cy - 1.3 * size * np.cos(medial))
            box, a = capsule_alpha(canvas, (k.cx, k.cy), end, 0.35 * size, 0.25 * size)
            canvas.paint(box, a, fat_hu + 10 + (6 * tex.fat[box] if box is not None else 0.0), VISCERAL_FAT)
            box, a = capsule_alpha(canvas, (k.cx, k.cy), end, 0.1 * size, 0.12 * size)
            canvas.paint(box, a, organ_hu(rng, "ivc", p.phase), VESSEL)


def _muscle_field(p: Patient, tex: Textures, fat_hu: float) -> np.ndarray:
    """Muscle HU, (H, W) float32: lean tissue with mottling, blended toward fat along thin streaks.

    The streaks are the zero crossings of a band-pass field; their width is chosen so that the
    covered share equals the patient's fat infiltration (for a Gaussian field, P(|g| < w) is known).
    """
    g = tex.streak
    half = float(ndtri(0.5 + p.fat_infiltration / 2.0))  # P(|g| < half) = infiltration
    streak = np.clip((half - np.abs(g)) / (0.35 * half + 1e-6) + 0.5, 0.0, 1.0)  # 0.5 at |g| = half
    lean = p.muscle_hu + 5.0 * tex.soft
    return lean + streak * (fat_hu + 15.0 - lean)


def _paint_table(rng: np.random.Generator, canvas: Canvas, table_y: float, k: float) -> None:
    """Concave carbon-fibre table top (thin bright skins around a foam core) under a foam pad."""
    rows = canvas.gy >= table_y - 60.0
    if not rows.any():
        return
    r0 = int(np.argmax(rows))
    box = (slice(r0, canvas.hu.shape[0]), slice(0, canvas.hu.shape[1]))
    y = canvas.gy[r0:, None]
    x = canvas.gx[None, :]
    pad_t = rng.uniform(5.0, 25.0)
    curve = table_y + pad_t - k * x**2
    d = y - curve
    half_w = rng.uniform(230.0, 260.0)
    inside_x = edge_alpha(half_w - np.abs(x), canvas.px)
    px = canvas.px
    pad = edge_alpha(np.minimum(d + pad_t, -d), px) * inside_x
    canvas.paint(box, pad, rng.uniform(-950, -850), TABLE)
    thick = rng.uniform(35.0, 50.0)
    shell = edge_alpha(np.minimum(d, thick - d), px) * inside_x
    canvas.paint(box, shell, rng.uniform(150, 350), TABLE)
    core = edge_alpha(np.minimum(d - 2.5, thick - 2.5 - d), px) * edge_alpha(half_w - 3 - np.abs(x), px)
    canvas.paint(box, core, rng.uniform(-980, -900), TABLE)


def _paint_viscera(
    rng: np.random.Generator,
    canvas: Canvas,
    p: Patient,
    tex: Textures,
    centre: tuple[float, float],
    r_cav: np.ndarray,
    blobs: dict[str, list[Blob]],
    vw: float,
    vd: float,
    phase: str,
    fat_hu: float,
) -> None:
    """Colon, small-bowel loops, mesenteric vessels, the liver's inferior tip and the spleen's inferior pole.

    Loops are packed by rejection sampling; lean patients get them crowded against the abdominal
    wall, obese ones get them spread in visceral fat.
    """
    contrast = phase != "none"
    wall_hu = organ_hu(rng, "bowel_wall", phase)
    oral = rng.random() < (0.5 if contrast else 0.15)
    placed: list[tuple[float, float, float]] = []
    # keep-out: spine, psoas and the vessels in front of the spine
    ps_reach = max(abs(b.cx) + float(b.r.max()) for b in blobs["psoas"])
    keep_y = -vd - 18.0

    def free(x: float, y: float, r: float, slack: float = 1.0) -> bool:
        if y + r > keep_y and abs(x) - r < ps_reach + 4.0:
            return False
        dx, dy = x - centre[0], y - centre[1]
        rr = np.hypot(dx, dy)
        k = (np.arctan2(dx, -dy) + np.pi) * (N_ANGLES / (2 * np.pi))
        i = int(k) % N_ANGLES
        edge = r_cav[i] + (k - int(k)) * (r_cav[(i + 1) % N_ANGLES] - r_cav[i])
        if rr + r > edge - 0.5:
            return False
        if not placed:
            return True
        q = np.asarray(placed)
        return bool(np.all(np.hypot(x - q[:, 0], y - q[:, 1]) >= r + q[:, 2] - slack))

    def content(box: tuple[slice, slice], kind: str, level: float, r: float) -> np.ndarray:
        soft = tex.soft[box]
        if kind == "stool":
            gas = tex.stool[box] > rng.uniform(0.6, 1.2)
            return np.where(gas, -850.0, -20.0 + 35.0 * soft)
        if kind == "gas":  # air-fluid level: gas floats anteriorly
            return np.where(canvas.Y[box] < level, -990.0, rng.uniform(5, 25) + 5 * soft)
        if kind == "oral":
            return rng.uniform(180, 450) + 20 * soft
        return rng.uniform(5, 30) + 5 * soft

    def loop(x: float, y: float, r: float, kind: str) -> None:
        """A bowel loop cut across (round) or along (a bent tube); wall first, then the lumen."""
        wall_t = rng.uniform(1.5, 3.0)
        level = y + rng.uniform(-0.2, 0.6) * r
        wall_value = wall_hu * 0.8 + 8 if kind == "collapsed" else wall_hu
        if rng.random() < 0.45 and kind != "stool":
            # in-plane segment: two capsules bent at a joint, total length up to ~4 r
            ang = rng.uniform(-np.pi, np.pi)
            bend = ang + rng.normal(0, 0.8)
            half = r * rng.uniform(0.5, 1.0)
            p0 = (x - half * np.cos(ang), y - half * np.sin(ang))
            p2 = (x + half * np.cos(bend), y + half * np.sin(bend))
            rt = r * rng.uniform(0.45, 0.7)
            segs = [((p0[0], p0[1]), (x, y)), ((x, y), (p2[0], p2[1]))]
            for a0, a1 in segs:
                box, a = capsule_alpha(canvas, a0, a1, rt, rt * rng.uniform(0.85, 1.1))
                if box is not None:
                    canvas.paint(box, a, wall_value + 6 * tex.soft[box], BOWEL_WALL)
            if kind == "collapsed":
                return
            for a0, a1 in segs:
                box, a = capsule_alpha(canvas, a0, a1, rt - wall_t, rt - wall_t)
                if box is not None:
                    canvas.paint(box, a, content(box, kind, level, r), BOWEL_CONTENT)
            return
        irregular = 0.12 if kind == "collapsed" else 0.06
        shape = superellipse(r, r * rng.uniform(0.65, 1.0)) * harmonics(rng, irregular, kmax=5)
        b = Blob(x, y, shape, rng.uniform(-np.pi, np.pi))
        box, a = b.alpha(canvas)
        if box is None:
            return
        canvas.paint(box, a, wall_value + 6 * tex.soft[box], BOWEL_WALL)
        if kind == "collapsed":
            return
        box, a = b.shrunk(wall_t).alpha(canvas)
        if box is not None:
            canvas.paint(box, a, content(box, kind, level, r), BOWEL_CONTENT)

    def wall_point(phi: float, r: float) -> tuple[float, float]:
        edge = float(np.interp(phi, ANGLES, r_cav, period=2 * np.pi)) - r - 0.6
        return centre[0] + edge * np.sin(phi), centre[1] - edge * np.cos(phi)

    # inferior right liver lobe, posterolateral against the wall: bigger and more often toward the
    # upper endplate, in women (Riedel's lobe) and in tall patients
    upper = 1.0 - p.level
    p_liver = 0.15 + 0.45 * upper + (0.12 if p.sex == "F" else 0.0) + 0.8 * (p.height_m - 1.70)
    if rng.random() < float(np.clip(p_liver, 0.05, 0.9)):
        r = rng.uniform(22, 38) * (1.0 + 0.5 * upper)
        x, y = wall_point(-rng.uniform(1.6, 2.4), r)
        b = Blob(x, y, superellipse(r * 0.8, r) * harmonics(rng, 0.08), rng.uniform(-0.5, 0.5))
        box, a = b.alpha(canvas)
        liver = organ_hu(rng, "liver", phase)
        canvas.paint(box, a, liver + (6 * tex.soft[box] if box else 0), LIVER)
        placed.append((x, y, r))
    # inferior pole of the spleen on the left, in a minority
    if rng.random() < 0.04 + 0.14 * upper:
        r = rng.uniform(12, 24)
        x, y = wall_point(rng.uniform(1.9, 2.5), r)
        if free(x, y, r, slack=r):
            b = Blob(x, y, superellipse(r * 0.7, r) * harmonics(rng, 0.08), rng.uniform(-0.5, 0.5))
            box, a = b.alpha(canvas)
            mottle = 30.0 if phase == "arterial" else 5.0  # arciform enhancement of the red pulp
            spleen = organ_hu(rng, "spleen", phase)
            canvas.paint(box, a, spleen + (mottle * tex.stool[box] if box else 0), SPLEEN)
            placed.append((x, y, r))
    # ascending (right) and descending (left) colon, touching the lateral wall
    for side, p_present in ((-1.0, 0.95), (1.0, 0.85)):
        if rng.random() < p_present:
            r = rng.uniform(14, 26) if side < 0 else rng.uniform(9, 17)
            phi = side * rng.uniform(1.6, 2.2)
            x, y = wall_point(phi, r)
            if free(x, y, r, slack=3.0):
                loop(x, y, r, "stool" if rng.random() < 0.7 else ("collapsed" if side > 0 else "gas"))
                placed.append((x, y, r))
    # third part of the duodenum: crosses in front of the IVC and aorta, between the psoas muscles
    if rng.random() < 0.7:
        r = rng.uniform(7, 12)
        y = keep_y + rng.uniform(-4, 6) - r * 0.3
        x0, x1 = -ps_reach * rng.uniform(0.7, 1.1), ps_reach * rng.uniform(0.3, 0.9)
        box, a = capsule_alpha(canvas, (x0, y + rng.normal(0, 5)), (x1, y + rng.normal(0, 5)), r, r * 0.8)
        if box is not None:
            canvas.paint(box, a, wall_hu * 0.8 + 8 + 6 * tex.soft[box], BOWEL_WALL)
            if rng.random() < 0.5:
                box, a = capsule_alpha(canvas, (x0, y), (x1, y), r - 2.5, r * 0.8 - 2.5)
                if box is not None:
                    canvas.paint(box, a, content(box, "fluid", y, r), BOWEL_CONTENT)
            placed.extend((float(xx), y, r) for xx in np.linspace(x0, x1, 6))
    # small bowel: crowded in lean people
    packing = 0.9 - 0.35 * p.vat_level
    cav_area = polar_area(r_cav)
    target = packing * cav_area
    covered = sum(np.pi * r * r for *_, r in placed)
    lo = (centre[1] - float(r_cav[N_ANGLES // 2]), centre[1] + float(r_cav[0]))
    half = float(np.max(r_cav * np.abs(np.sin(ANGLES))))
    tries = 0
    while covered < target and tries < 320:
        tries += 1
        r = float(rng.uniform(8, 19))
        if tries % 3 == 0:  # push some loops against the wall
            x, y = wall_point(rng.uniform(-1.6, 1.6), r)
        else:
            x, y = rng.uniform(-half, half) + centre[0], rng.uniform(lo[0], lo[1])
        if not free(x, y, r, slack=0.3 * r):
            continue
        u = rng.random()
        kind = "collapsed" if u < 0.35 else "gas" if u < 0.47 else ("oral" if oral and u < 0.67 else "fluid")
        loop(x, y, r, kind)
        placed.append((x, y, r))
        covered += np.pi * r * r
    # mesenteric vessels in the fat between loops
    vessel = organ_hu(rng, "mesenteric", phase)
    for _ in range(int(rng.integers(4, 12))):
        r = rng.uniform(1.5, 3.5)
        x, y = rng.uniform(-half * 0.6, half * 0.6), rng.uniform(lo[0], -vd - 10)
        if free(x, y, r, slack=0.0):
            b = Blob(x, y, superellipse(r, r))
            box, a = b.alpha(canvas)
            canvas.paint(box, a, vessel, VESSEL)
            placed.append((x, y, r))
