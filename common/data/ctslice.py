"""One axial CT slice in canonical orientation, and the geometry that ties it to the file it came from.

Canonical orientation (the whole project relies on it): an image or mask array is (H, W) with the row
index increasing toward patient posterior (+y in DICOM LPS) and the column index toward patient left
(+x), i.e. what a DICOM ImageOrientationPatient of [1,0,0, 0,1,0] shows. Files may store the same
pixels bottom-up, right-to-left or transposed; :class:`SliceGeometry` records how, so that readers hand
out canonical arrays and writers (masks, DICOM SEG) can put pixels back where the file expects them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pydicom and nibabel are imported lazily by the readers; only the types are needed here
    import nibabel
    import pydicom


@dataclass(frozen=True)
class SliceGeometry:
    """Where the canonical (H, W) pixel grid of a slice lies in patient space, and how its file stores it.

    Parameters
    ----------
    spacing_mm : (float, float)
        Canonical pixel spacing (row step along +y posterior, column step along +x left), mm.
    origin : (float, float, float)
        LPS position (mm) of the centre of canonical pixel [0, 0] (the most anterior-right pixel).
    shape : (int, int)
        Canonical (H, W).
    transpose, flip_rows, flip_cols : bool
        How the stored array maps to canonical: ``to_canonical`` transposes first (stored rows run
        along x), then flips rows (stored bottom-up), then flips columns (stored left-to-right).
    thickness_mm : float (default: 1.0)
        Slice thickness, only used as the third voxel size of NIfTI affines.
    """

    spacing_mm: tuple[float, float]
    origin: tuple[float, float, float]
    shape: tuple[int, int]
    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False
    thickness_mm: float = 1.0

    def __post_init__(self) -> None:
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise ValueError(f"shape must be (H, W) with positive sizes, got {self.shape}")
        if len(self.spacing_mm) != 2 or not all(np.isfinite(s) and s > 0 for s in self.spacing_mm):
            raise ValueError(f"spacing_mm must be two positive numbers, got {self.spacing_mm}")
        # Normalise to plain Python types so equality and hashing behave.
        object.__setattr__(self, "spacing_mm", tuple(float(s) for s in self.spacing_mm))
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))

    # ---- stored <-> canonical -------------------------------------------------------------------
    @property
    def stored_shape(self) -> tuple[int, int]:
        """(rows, columns) of the array as the file stores it."""
        return (self.shape[1], self.shape[0]) if self.transpose else self.shape

    def to_canonical(self, stored: np.ndarray) -> np.ndarray:
        """Stored-layout (rows, cols) array -> canonical (H, W) array (a view where possible)."""
        arr = stored.T if self.transpose else stored
        if self.flip_rows:
            arr = arr[::-1, :]
        if self.flip_cols:
            arr = arr[:, ::-1]
        return arr

    def to_stored(self, canonical: np.ndarray) -> np.ndarray:
        """Canonical (H, W) array -> the layout the source file stores (inverse of :meth:`to_canonical`)."""
        arr = canonical
        if self.flip_cols:
            arr = arr[:, ::-1]
        if self.flip_rows:
            arr = arr[::-1, :]
        return arr.T if self.transpose else arr

    # ---- patient space ---------------------------------------------------------------------------
    def canonical(self) -> SliceGeometry:
        """The same grid, as a file that stores it canonically would describe it."""
        return SliceGeometry(self.spacing_mm, self.origin, self.shape, thickness_mm=self.thickness_mm)

    def lps(self, row: float, col: float) -> np.ndarray:
        """LPS position (mm) of canonical pixel (row, col)."""
        o = np.asarray(self.origin)
        return o + np.array([col * self.spacing_mm[1], row * self.spacing_mm[0], 0.0])

    def stored_position(self) -> tuple[float, float, float]:
        """LPS position of stored pixel [0, 0]: what DICOM ImagePositionPatient holds."""
        h, w = self.shape
        row = h - 1 if self.flip_rows else 0
        col = w - 1 if self.flip_cols else 0
        x, y, z = (float(v) for v in self.lps(row, col))
        return x, y, z

    def stored_orientation(self) -> list[float]:
        """DICOM ImageOrientationPatient (row cosines, then column cosines) of the stored layout."""
        x = [-1.0 if self.flip_cols else 1.0, 0.0, 0.0]
        y = [0.0, -1.0 if self.flip_rows else 1.0, 0.0]
        # Stored column index runs along canonical columns (x) unless transposed.
        return (y + x) if self.transpose else (x + y)

    def stored_spacing(self) -> tuple[float, float]:
        """DICOM PixelSpacing (between stored rows, between stored columns), mm."""
        return (self.spacing_mm[1], self.spacing_mm[0]) if self.transpose else self.spacing_mm

    def nifti_affine(self) -> np.ndarray:
        """4x4 RAS affine for a NIfTI that stores the canonical array as ``mask.T[:, :, None]``.

        NIfTI voxel (i, j, 0) = canonical pixel (row j, column i); LPS -> RAS negates x and y.
        """
        dr, dc = self.spacing_mm
        ox, oy, oz = self.origin
        return np.array(
            [
                [-dc, 0.0, 0.0, -ox],
                [0.0, -dr, 0.0, -oy],
                [0.0, 0.0, self.thickness_mm, oz],
                [0.0, 0.0, 0.0, 1.0],
            ]
        )

    def describe(self) -> str:
        """One line with the numbers, for error messages."""
        return (
            f"shape {self.shape}, spacing {tuple(round(s, 4) for s in self.spacing_mm)} mm, "
            f"origin {tuple(round(o, 3) for o in self.origin)} mm (LPS)"
        )


@dataclass
class CTSlice:
    """A CT slice as every part of SarcoFed sees it.

    ``hu`` is (H, W) float32 Hounsfield units in canonical orientation. Patient values are None when
    unknown (never guessed): sex 'M' | 'F', height in metres, weight in kg, age in years. ``dataset``
    keeps the pydicom Dataset (without pixel data decoded twice) so a DICOM SEG can reference it; it
    is None for NIfTI input. ``nifti_header`` keeps a NIfTI input's header (None for DICOM) so a mask
    can be written on that file's own voxel grid: same shape, same index order, same affine.
    """

    hu: np.ndarray
    geometry: SliceGeometry
    path: Path | None = None
    sex: str | None = None
    height_m: float | None = None
    weight_kg: float | None = None
    age_years: float | None = None
    sop_instance_uid: str | None = None
    series_instance_uid: str | None = None
    dataset: pydicom.Dataset | None = field(default=None, repr=False)
    nifti_header: nibabel.Nifti1Header | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.hu.ndim != 2 or tuple(self.hu.shape) != self.geometry.shape:
            raise ValueError(f"hu must be (H, W) = {self.geometry.shape}, got {self.hu.shape}")

    @property
    def spacing_mm(self) -> tuple[float, float]:
        """Canonical (row, column) pixel spacing in mm."""
        return self.geometry.spacing_mm

    @property
    def shape(self) -> tuple[int, int]:
        """Canonical (H, W)."""
        return self.geometry.shape


# Largest off-axis direction-cosine component accepted as "axis aligned" (about 0.8 degrees).
AXIS_TOLERANCE = 0.015


def geometry_from_axes(
    dir_i: np.ndarray,
    dir_j: np.ndarray,
    step_i: float,
    step_j: float,
    position: np.ndarray,
    stored_shape: tuple[int, int],
    *,
    thickness_mm: float = 1.0,
    source: str | Path = "image",
) -> SliceGeometry:
    """Canonical geometry of a stored 2-D grid from its LPS axes.

    Parameters
    ----------
    dir_i, dir_j : (3,) LPS unit vectors along which the stored row index i and column index j grow
        (for DICOM: ImageOrientationPatient[3:6] and [0:3]).
    step_i, step_j : mm between stored rows / stored columns (DICOM PixelSpacing[0], [1]).
    position : (3,) LPS position of stored pixel [0, 0] (DICOM ImagePositionPatient).
    stored_shape : (rows, cols) as stored.

    Raises
    ------
    InputDataError
        When the plane is not axial or its axes are not aligned with x and y (oblique or sagittal
        slices cannot be canonicalised by flips and transposes).
    """
    from common.errors import InputDataError

    di, dj = np.asarray(dir_i, float), np.asarray(dir_j, float)
    di, dj = di / np.linalg.norm(di), dj / np.linalg.norm(dj)

    def axis(d: np.ndarray) -> int | None:
        k = int(np.argmax(np.abs(d)))
        off = np.delete(np.abs(d), k)
        return k if off.max() <= AXIS_TOLERANCE else None

    ai, aj = axis(di), axis(dj)
    if ai is None or aj is None or {ai, aj} != {0, 1}:
        raise InputDataError(
            "(0020,0037) 'Image Orientation Patient' "
            f"{np.round(np.concatenate([dj, di]), 4).tolist()} is not an axis-aligned axial plane; "
            "SarcoFed needs axial slices whose rows and columns run along patient x and y "
            "(reformat oblique, sagittal or coronal images to axial first)",
            source,
        )
    n_i, n_j = int(stored_shape[0]), int(stored_shape[1])
    pos = np.asarray(position, float)
    # The canonical origin sits at the end of each stored axis whose direction points negative.
    origin = pos.copy()
    if di[ai] < 0:
        origin += (n_i - 1) * step_i * di
    if dj[aj] < 0:
        origin += (n_j - 1) * step_j * dj
    if ai == 1:  # stored rows run along y: no transpose
        return SliceGeometry(
            (step_i, step_j),
            tuple(origin),
            (n_i, n_j),
            transpose=False,
            flip_rows=bool(di[1] < 0),
            flip_cols=bool(dj[0] < 0),
            thickness_mm=thickness_mm,
        )
    return SliceGeometry(
        (step_j, step_i),
        tuple(origin),
        (n_j, n_i),
        transpose=True,
        flip_rows=bool(dj[1] < 0),
        flip_cols=bool(di[0] < 0),
        thickness_mm=thickness_mm,
    )
