"""Shape primitives drawn with sub-pixel coverage onto a millimetre-addressed canvas.

Every structure is a star shape (a radius per angle around its centre), a band between two such
radii, or a capsule (a thick segment). Coverage ``alpha`` in [0, 1] comes from the signed radial
distance to the edge in pixels, so edges are partial-volume mixtures instead of staircases, and a
pixel takes a structure's label when it is at least half covered (the ground truth at native
resolution). Painting composites in order, like a painter: later structures overwrite earlier ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_ANGLES = 256  # samples per radius function, over [-pi, pi)
ANGLES = np.linspace(-np.pi, np.pi, N_ANGLES, endpoint=False)


@dataclass
class Canvas:
    """HU image and label map on a pixel grid whose (warped) pixel centres are known in mm.

    ``X``, ``Y``: (H, W) float32 mm positions (x toward patient left, y toward posterior) after the
    smooth deformation; ``gx``, ``gy``: the undeformed column / row positions (1-D, mm).
    """

    X: np.ndarray
    Y: np.ndarray
    gx: np.ndarray
    gy: np.ndarray
    px: float
    margin_mm: float
    hu: np.ndarray
    label: np.ndarray

    @classmethod
    def create(
        cls,
        shape: tuple[int, int],
        px: float,
        centre_mm: tuple[float, float],
        warp: tuple[np.ndarray, np.ndarray] | None,
        background: float,
        rotation: float = 0.0,
    ) -> Canvas:
        """Grid of ``shape`` pixels of ``px`` mm centred on ``centre_mm``; the anatomy is seen rotated by
        ``rotation`` (rad, patients never lie perfectly straight) and deformed by ``warp`` (mm fields)."""
        h, w = shape
        gx = (centre_mm[0] + (np.arange(w, dtype=np.float32) - (w - 1) / 2) * px).astype(np.float32)
        gy = (centre_mm[1] + (np.arange(h, dtype=np.float32) - (h - 1) / 2) * px).astype(np.float32)
        X = np.broadcast_to(gx[None, :], shape).astype(np.float32)
        Y = np.broadcast_to(gy[:, None], shape).astype(np.float32)
        margin = 2.0 * px
        if rotation:
            c, s = np.float32(np.cos(rotation)), np.float32(np.sin(rotation))
            dx, dy = X - np.float32(centre_mm[0]), Y - np.float32(centre_mm[1])
            X = np.float32(centre_mm[0]) + c * dx - s * dy
            Y = np.float32(centre_mm[1]) + s * dx + c * dy
            margin += abs(rotation) * 0.75 * px * max(shape)
        if warp is not None:
            X += warp[0]
            Y += warp[1]
            margin += float(max(np.abs(warp[0]).max(), np.abs(warp[1]).max()))
        return cls(X, Y, gx, gy, px, margin, np.full(shape, background, np.float32), np.zeros(shape, np.uint8))

    def box(self, xmin: float, xmax: float, ymin: float, ymax: float) -> tuple[slice, slice] | None:
        """Pixel slices covering a mm bounding box (plus the deformation margin); None if off-image."""
        m = self.margin_mm
        c0 = int(np.searchsorted(self.gx, xmin - m))
        c1 = int(np.searchsorted(self.gx, xmax + m))
        r0 = int(np.searchsorted(self.gy, ymin - m))
        r1 = int(np.searchsorted(self.gy, ymax + m))
        if c1 <= c0 or r1 <= r0:
            return None
        return slice(r0, r1), slice(c0, c1)

    def paint(
        self, box: tuple[slice, slice] | None, alpha: np.ndarray | None, value: float | np.ndarray, label: int
    ) -> None:
        """Composite ``value`` with coverage ``alpha`` inside ``box``; label pixels covered >= 50 %.

        ``box`` and ``alpha`` are None together for a shape off the image (``Blob.alpha``, ``capsule_alpha``):
        nothing is painted then.
        """
        if box is None or alpha is None:
            return
        hu = self.hu[box]
        hu += alpha * (value - hu)
        lab = self.label[box]
        lab[alpha >= 0.5] = label


def edge_alpha(inside_mm: np.ndarray, px: float) -> np.ndarray:
    """Coverage from a signed distance (mm, positive inside): a one-pixel linear ramp."""
    return np.clip(inside_mm * (1.0 / px) + 0.5, 0.0, 1.0)


class Polar:
    """Polar coordinates of a canvas crop around a centre, with fast lookup of radius functions.

    Angle convention: ``phi = atan2(x, -y)`` after rotating by ``rot``: 0 points anterior, +pi/2
    toward patient left, +-pi posterior.
    """

    def __init__(self, canvas: Canvas, box: tuple[slice, slice], centre: tuple[float, float], rot: float = 0.0):
        dx = canvas.X[box] - np.float32(centre[0])
        dy = canvas.Y[box] - np.float32(centre[1])
        if rot:
            c, s = np.float32(np.cos(rot)), np.float32(np.sin(rot))
            dx, dy = c * dx + s * dy, -s * dx + c * dy
        self.rho = np.hypot(dx, dy)
        t = (np.arctan2(dx, -dy) + np.pi) * (N_ANGLES / (2 * np.pi))
        i0 = np.floor(t)
        self.frac = (t - i0).astype(np.float32)
        self.i0 = i0.astype(np.intp) % N_ANGLES
        self.i1 = (self.i0 + 1) % N_ANGLES

    def radius(self, table: np.ndarray) -> np.ndarray:
        """Evaluate a radius function (N_ANGLES,) at every pixel (linear interpolation, periodic)."""
        t = table.astype(np.float32)
        a = t[self.i0]
        return a + self.frac * (t[self.i1] - a)


def harmonics(
    rng: np.random.Generator, amp: float, kmin: int = 2, kmax: int = 6, decay: float = 1.2, symmetric: float = 0.0
) -> np.ndarray:
    """Multiplicative radius perturbation 1 + sum_k a_k cos(k phi + p_k), (N_ANGLES,) float64.

    ``symmetric`` in [0, 1] pulls phases toward 0 so the shape is mirror-symmetric about the
    anterior-posterior axis (bodies are roughly left-right symmetric).
    """
    out = np.ones(N_ANGLES)
    for k in range(kmin, kmax + 1):
        a = rng.normal(0.0, amp / k**decay)
        p = rng.uniform(-np.pi, np.pi) * (1.0 - symmetric)
        out += a * np.cos(k * ANGLES + p)
    return out


def superellipse(a: float, b: float, n: float = 2.0) -> np.ndarray:
    """Radius function of |x/a|^n + |y/b|^n = 1 (a lateral, b anterior-posterior), (N_ANGLES,)."""
    s, c = np.abs(np.sin(ANGLES)), np.abs(np.cos(ANGLES))  # x ~ sin(phi), y ~ cos(phi)
    return ((s / a) ** n + (c / b) ** n) ** (-1.0 / n)


def polar_area(r_out: np.ndarray, r_in: np.ndarray | float = 0.0) -> float:
    """Area (mm2) between two radius functions: 1/2 integral (r_out^2 - r_in^2) dphi."""
    r_in = np.minimum(np.asarray(r_in, float), r_out)
    return float(0.5 * np.sum(r_out**2 - r_in**2) * (2 * np.pi / N_ANGLES))


def smooth_periodic(table: np.ndarray, sigma_bins: float) -> np.ndarray:
    """Gaussian smoothing of a periodic radius function."""
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(table, sigma_bins, mode="wrap")


@dataclass
class Blob:
    """A star-shaped region: centre (mm), rotation (rad) and a radius function (mm)."""

    cx: float
    cy: float
    r: np.ndarray
    rot: float = 0.0

    @property
    def area(self) -> float:
        return polar_area(self.r)

    def scaled(self, factor: float) -> Blob:
        return Blob(self.cx, self.cy, self.r * factor, self.rot)

    def shrunk(self, mm: float) -> Blob:
        return Blob(self.cx, self.cy, np.maximum(self.r - mm, 0.0), self.rot)

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """Boundary points (x, y) in mm."""
        lx, ly = self.r * np.sin(ANGLES), -self.r * np.cos(ANGLES)
        c, s = np.cos(self.rot), np.sin(self.rot)
        return self.cx + c * lx - s * ly, self.cy + s * lx + c * ly

    def bbox(self) -> tuple[float, float, float, float]:
        x, y = self.points()
        return float(x.min()), float(x.max()), float(y.min()), float(y.max())

    def alpha(self, canvas: Canvas) -> tuple[tuple[slice, slice] | None, np.ndarray | None]:
        box = canvas.box(*self.bbox())
        if box is None:
            return None, None
        polar = Polar(canvas, box, (self.cx, self.cy), self.rot)
        return box, edge_alpha(polar.radius(self.r) - polar.rho, canvas.px)


def capsule_alpha(
    canvas: Canvas,
    p0: tuple[float, float],
    p1: tuple[float, float],
    hw0: float,
    hw1: float,
) -> tuple[tuple[slice, slice] | None, np.ndarray | None]:
    """Coverage of a segment p0-p1 thickened by a half-width tapering from hw0 to hw1 (mm)."""
    hw = max(hw0, hw1)
    box = canvas.box(min(p0[0], p1[0]) - hw, max(p0[0], p1[0]) + hw, min(p0[1], p1[1]) - hw, max(p0[1], p1[1]) + hw)
    if box is None:
        return None, None
    ax, ay = np.float32(p0[0]), np.float32(p0[1])
    vx, vy = np.float32(p1[0] - p0[0]), np.float32(p1[1] - p0[1])
    dx, dy = canvas.X[box] - ax, canvas.Y[box] - ay
    t = np.clip((dx * vx + dy * vy) / np.float32(vx * vx + vy * vy + 1e-9), 0.0, 1.0)
    dist = np.hypot(dx - t * vx, dy - t * vy)
    return box, edge_alpha(np.float32(hw0) + t * np.float32(hw1 - hw0) - dist, canvas.px)
