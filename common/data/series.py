"""Read an axial CT series (a DICOM folder or a NIfTI volume) into one canonical HU volume.

A folder, as PACS exports and people copy them, may hold several series, files without
SeriesInstanceUID, shuffled or missing InstanceNumber, copies of one instance, slices from a tilted
gantry or with slices missing. The reader groups, sorts and checks; what it cannot use it refuses
with the file and the reason, never by guessing:

* Grouping: by SeriesInstanceUID; where that is blank, by frame of reference, orientation, pixel
  spacing and size (``grouped_by`` says which). Within a group every slice must share orientation,
  spacing and size.
* Order: by position along the slice normal (ImagePositionPatient . normal), never by
  InstanceNumber, which exports renumber, leave out or shuffle (``notes`` records disagreement).
* Copies (the same SOPInstanceUID twice) count once; two different slices at one position are
  refused (two reconstructions mixed in one group).
* Positions that drift in-plane from slice to slice (gantry tilt) and steps between slices larger
  than ``MAX_GAP_RATIO`` times the series' usual step (slices missing) are refused; smaller
  unevenness is accepted, since every consumer works in millimetres along z.

Slices run from inferior to superior (z ascending in LPS). ``file_index[k]`` is what the source calls
slice ``k``: its place in the sorted series for DICOM, the index along the third array axis for NIfTI.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from common.data.ctslice import CTSlice, SliceGeometry
from common.data.dicom_io import (
    MAX_SLICE_SIDE,
    check_finite,
    ct_slice_from_dataset,
    geometry_from_affine,
    is_nifti,
    read_dataset,
    sop_instance_uid,
)
from common.data.folder_walk import walk_files
from common.errors import InputDataError

if TYPE_CHECKING:  # pydicom is imported lazily by the readers
    from pydicom import Dataset

# A site's series and their truth, beside its manifest.csv (common.phantom.series_site writes them):
# series.csv one row per series (series_id, path, split, l3_z_lo_mm, l3_z_hi_mm, ...), vertebrae.csv one
# row per series and vertebral body (series_id, name, z_lo_mm, z_hi_mm).
SERIES_TABLE, VERTEBRAE_TABLE = "series.csv", "vertebrae.csv"
# A step between neighbouring slices this many times the series' median step means slices are missing.
MAX_GAP_RATIO = 1.5
# In-plane drift of ImagePositionPatient per mm along z above which the series is sheared (gantry tilt).
MAX_DRIFT_PER_MM = 0.02
# Most slices read into one volume (2000 x 512 x 512 float32 is 2 GiB).
MAX_SERIES_SLICES = 2000


@dataclass
class CTSeries:
    """One axial series as a (N, H, W) float32 HU volume in canonical in-plane orientation, z ascending."""

    hu: np.ndarray
    z_mm: np.ndarray  # (N,) position of each slice along the slice normal (LPS z for axial slices)
    geometry: SliceGeometry  # in-plane grid of every slice (origin of the lowest slice)
    file_index: list[int]  # the source's index of slice k (see module docstring)
    paths: list[Path]  # the file each slice came from (the NIfTI file N times)
    source: Path  # the folder or NIfTI file read
    key: str  # SeriesInstanceUID, or what the slices were grouped by
    grouped_by: str  # "SeriesInstanceUID" | "frame of reference, orientation and spacing" | "NIfTI volume"
    sex: str | None = None
    height_m: float | None = None
    weight_kg: float | None = None
    age_years: float | None = None
    notes: list[str] = field(default_factory=list)
    datasets: list = field(default_factory=list, repr=False)  # pydicom Datasets (DICOM only), slice order

    def __post_init__(self) -> None:
        n = len(self.z_mm)
        if self.hu.ndim != 3 or self.hu.shape[0] != n or tuple(self.hu.shape[1:]) != self.geometry.shape:
            raise ValueError(f"hu must be (N, H, W) = ({n}, *{self.geometry.shape}), got {self.hu.shape}")

    @property
    def n_slices(self) -> int:
        return int(self.hu.shape[0])

    @property
    def step_mm(self) -> float:
        """Median distance between neighbouring slices (0 for one slice)."""
        return float(np.median(np.diff(self.z_mm))) if self.n_slices > 1 else 0.0

    def slice(self, k: int) -> CTSlice:
        """Slice ``k`` (z order) as the single-slice code sees a file: same geometry, patient, dataset."""
        g = self.geometry
        origin = (g.origin[0], g.origin[1], float(self.z_mm[k]))
        geometry = SliceGeometry(
            g.spacing_mm, origin, g.shape, g.transpose, g.flip_rows, g.flip_cols, thickness_mm=g.thickness_mm
        )
        ds = self.datasets[k] if self.datasets else None
        sop = (sop_instance_uid(ds) or "") if ds is not None else ""
        series_uid = str(ds.get("SeriesInstanceUID", "") or "") if ds is not None else ""
        return CTSlice(
            hu=self.hu[k],
            geometry=geometry,
            path=self.paths[k],
            sex=self.sex,
            height_m=self.height_m,
            weight_kg=self.weight_kg,
            age_years=self.age_years,
            sop_instance_uid=sop or None,
            series_instance_uid=series_uid or None,
            dataset=ds,
        )


@dataclass
class SeriesScan:
    """What a folder holds: the series that could be read, and (path, reason) for what could not."""

    series: list[CTSeries]
    rejected: list[tuple[str, str]]

    def only(self, folder: Path) -> CTSeries:
        """The folder's one series, or an InputDataError that lists what is there instead."""
        if len(self.series) == 1:
            return self.series[0]
        if not self.series:
            why = "; ".join(f"{Path(p).name}: {r}" for p, r in self.rejected[:5]) or "the folder is empty"
            raise InputDataError(f"no readable CT series ({why})", folder)
        listing = "; ".join(
            f"{s.key} ({s.n_slices} slices, z {s.z_mm[0]:.1f}..{s.z_mm[-1]:.1f} mm)" for s in self.series
        )
        raise InputDataError(
            f"holds {len(self.series)} CT series: {listing}; put each series in its own folder", folder
        )


def read_series(path: str | Path) -> CTSeries:
    """The one CT series in a DICOM folder, or a NIfTI volume; InputDataError naming the file otherwise."""
    path = Path(path)
    if path.is_dir():
        return scan_series(path).only(path)
    if is_nifti(path):
        return read_nifti_series(path)
    if not path.exists():
        raise InputDataError("not found", path)
    raise InputDataError("a series is a folder of DICOM files or a NIfTI volume (.nii / .nii.gz)", path)


def scan_series(folder: str | Path) -> SeriesScan:
    """Every axial CT series in ``folder`` (recursively), grouped, sorted and checked (module docstring)."""
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise InputDataError("folder not found", folder)
    rejected: list[tuple[str, str]] = []
    groups: dict[tuple, list[tuple[Path, Dataset]]] = defaultdict(list)
    for path in walk_files(folder, rejected, "series folder"):
        if is_nifti(path):
            rejected.append((str(path), "NIfTI file inside a DICOM series folder; give a NIfTI volume on its own"))
            continue
        try:
            ds = read_dataset(path, stop_before_pixels=True)
        except InputDataError as error:
            rejected.append((str(path), _reason(error, path)))
            continue
        modality = str(ds.get("Modality", ""))
        if modality != "CT":
            rejected.append((str(path), f"(0008,0060) 'Modality' is {modality or 'missing'!r}, expected 'CT'"))
            continue
        groups[group_key(ds)].append((path, ds))
    series = []
    for key, members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        try:
            series.append(_assemble(folder, key, members))
        except InputDataError as error:
            rejected.append((str(error.path or folder), _reason(error, error.path)))
    return SeriesScan(series, rejected)


def series_from_files(folder: Path, files: list[Path]) -> CTSeries:
    """The series made of ``files`` (DICOM slices of one group, e.g. as ``sarcofed ingest`` grouped them),
    sorted and checked as ``scan_series`` does; InputDataError naming the file otherwise."""
    members = [(path, read_dataset(path, stop_before_pixels=True)) for path in files]
    keys = {group_key(ds) for _, ds in members}
    if len(keys) != 1:
        raise InputDataError(f"{len(files)} files given as one series belong to {len(keys)} series", folder)
    return _assemble(folder, keys.pop(), members)


def is_nifti_volume(path: Path) -> bool:
    """A NIfTI file whose header declares more than one slice (the header only is read)."""
    import nibabel as nib

    if not is_nifti(path):
        return False
    try:
        shape = nib.load(str(path)).shape  # type: ignore[attr-defined]  # every image nibabel loads has one
    except Exception:  # the slice reader reports what is wrong with the file
        return False
    return len(shape) >= 3 and int(shape[2]) > 1


def nifti_volume_header(path: str | Path):
    """(the nibabel image, its (X, Y, Z) shape) after the header checks, before any voxel is read."""
    import nibabel as nib

    path = Path(path)
    try:
        img = nib.load(str(path))
    except Exception as error:
        raise InputDataError(f"cannot be read as NIfTI ({type(error).__name__}: {error})", path) from None
    if not isinstance(img, nib.Nifti1Image):
        raise InputDataError(f"cannot be read as NIfTI (nibabel reads it as {type(img).__name__})", path)
    shape = tuple(int(n) for n in img.header.get_data_shape())
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3:
        raise InputDataError(f"NIfTI header declares shape {shape}, expected a volume (X, Y, Z) of axial slices", path)
    if min(shape) < 1 or max(shape[:2]) > MAX_SLICE_SIDE or shape[2] > MAX_SERIES_SLICES:
        raise InputDataError(
            f"NIfTI header declares shape {shape}, expected 1 to {MAX_SLICE_SIDE} voxels a side and at most "
            f"{MAX_SERIES_SLICES} slices; the header is damaged or the file is no CT series",
            path,
        )
    if img.header.get_data_dtype().kind not in "biuf":
        raise InputDataError(f"NIfTI stores voxels as {img.header.get_data_dtype()}, expected numbers (HU)", path)
    return img, shape


def read_nifti_series(path: str | Path) -> CTSeries:
    """A NIfTI volume (X, Y, Z) of axial slices in HU; slice k of ``file_index`` is ``data[:, :, k]``."""
    path = Path(path)
    img, shape = nifti_volume_header(path)
    lps = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(img.affine, float)[:3, :]
    along_k = lps[:, 2]
    if np.linalg.norm(along_k) <= 0 or abs(along_k[2]) / np.linalg.norm(along_k) < 1 - 1e-3:
        raise InputDataError(
            f"the volume's third axis runs along {np.round(along_k, 3).tolist()} (LPS mm per slice), not along "
            "the body's long axis (z): resample it to axial slices first",
            path,
        )
    geometry = geometry_from_affine(img.affine, shape[:2], path)  # refuses non-axial in-plane axes
    try:
        data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    except Exception as error:
        raise InputDataError(
            f"NIfTI voxel data cannot be read ({type(error).__name__}: {error}); copy it again", path
        ) from None
    check_finite(data, path, "NIfTI volume", "fill voxels outside the scan with air (-1024 HU)")
    z = lps[2, 3] + along_k[2] * np.arange(shape[2])
    order = np.argsort(z, kind="stable")
    hu = np.stack([np.ascontiguousarray(geometry.to_canonical(data[:, :, k])) for k in order])
    thickness = float(np.linalg.norm(along_k))
    g = geometry
    geometry = SliceGeometry(
        g.spacing_mm, (g.origin[0], g.origin[1], float(z[order[0]])), g.shape, g.transpose, g.flip_rows,
        g.flip_cols, thickness_mm=thickness,
    )  # fmt: skip
    return CTSeries(
        hu=hu,
        z_mm=z[order].astype(np.float64),
        geometry=geometry,
        file_index=[int(k) for k in order],
        paths=[path] * len(order),
        source=path,
        key=path.name,
        grouped_by="NIfTI volume",
    )


# ---- DICOM grouping and checks ----------------------------------------------------------------------
def group_key(ds) -> tuple:
    uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
    if uid:
        return ("SeriesInstanceUID", uid)
    iop = tuple(np.round([float(v) for v in ds.get("ImageOrientationPatient", [])], 3).tolist())
    spacing = tuple(np.round([float(v) for v in ds.get("PixelSpacing", [])], 4).tolist())
    frame = str(ds.get("FrameOfReferenceUID", "") or "")
    return ("frame of reference, orientation and spacing", frame, iop, spacing, ds.get("Rows"), ds.get("Columns"))


def _assemble(folder: Path, key: tuple, members: list[tuple[Path, Dataset]]) -> CTSeries:
    grouped_by = key[0]
    label = key[1] if grouped_by == "SeriesInstanceUID" else _describe_group(key)
    notes: list[str] = []
    unique: dict[str, tuple[Path, Dataset]] = {}
    for path, ds in members:
        sop = sop_instance_uid(ds) or ""
        if sop and sop in unique:
            notes.append(f"{path.name} is a copy of {unique[sop][0].name} (same SOPInstanceUID); read once")
            continue
        unique[sop or str(path)] = (path, ds)
    members = list(unique.values())
    if len(members) > MAX_SERIES_SLICES:
        raise InputDataError(f"series {label} has {len(members)} slices, more than {MAX_SERIES_SLICES}", folder)

    first_path, first = members[0]
    shape_key = _shape_key(first, first_path)
    for path, ds in members[1:]:
        if _shape_key(ds, path) != shape_key:
            raise InputDataError(
                f"series {label}: orientation, pixel spacing or size differ from {first_path.name} "
                f"({_shape_key(ds, path)} vs {shape_key}); a series must share one grid",
                path,
            )
    iop = np.array(shape_key[0])
    normal = np.cross(iop[:3], iop[3:])
    normal = normal / np.linalg.norm(normal) * (1.0 if normal[2] >= 0 else -1.0)  # z ascends toward the head
    positions = {path: np.array([float(v) for v in ds.ImagePositionPatient]) for path, ds in members}
    members.sort(key=lambda m: float(np.dot(normal, positions[m[0]])))
    z = np.array([float(np.dot(normal, positions[p])) for p, _ in members])
    paths = [p for p, _ in members]
    _check_positions(label, paths, z, [positions[p] for p in paths], normal)
    numbers = [_instance_number(ds) for _, ds in members]
    if any(n is None for n in numbers):
        notes.append(f"InstanceNumber missing on {sum(n is None for n in numbers)} files; sorted by position")
    elif len(members) > 1 and not _monotonic([n for n in numbers if n is not None]):
        notes.append("InstanceNumber does not follow position; sorted by position")

    slices = [ct_slice_from_dataset(read_dataset(p), p) for p in paths]
    g0 = slices[0].geometry
    hu = np.stack([s.hu for s in slices]).astype(np.float32, copy=False)
    ref = slices[0]
    return CTSeries(
        hu=hu,
        z_mm=z,
        geometry=g0,
        file_index=list(range(len(slices))),
        paths=paths,
        source=folder,
        key=label,
        grouped_by=grouped_by,
        sex=ref.sex,
        height_m=ref.height_m,
        weight_kg=ref.weight_kg,
        age_years=ref.age_years,
        notes=notes,
        datasets=[s.dataset for s in slices],
    )


def _check_positions(label: str, paths: list[Path], z: np.ndarray, positions: list[np.ndarray], normal) -> None:
    if len(z) < 2:
        return
    steps = np.diff(z)
    same = np.flatnonzero(steps < 1e-3)
    if same.size:
        k = int(same[0])
        raise InputDataError(
            f"series {label}: {paths[k].name} and {paths[k + 1].name} lie at the same position (z {z[k]:.2f} mm) "
            "but are different images: two reconstructions are mixed; put each in its own folder",
            paths[k + 1],
        )
    span = float(z[-1] - z[0])
    in_plane = [p - np.dot(p, normal) * normal for p in positions]
    drift = float(np.linalg.norm(in_plane[-1] - in_plane[0]))
    if drift > MAX_DRIFT_PER_MM * span + 0.5:
        raise InputDataError(
            f"series {label}: slice positions move {drift:.1f} mm in-plane over {span:.1f} mm along the slice "
            "normal (gantry tilt); resample the series to an untilted grid first",
            paths[-1],
        )
    typical = float(np.median(steps))
    gaps = np.flatnonzero(steps > MAX_GAP_RATIO * typical)
    if gaps.size:
        k = int(gaps[0])
        raise InputDataError(
            f"series {label}: {steps[k]:.1f} mm between {paths[k].name} (z {z[k]:.1f}) and {paths[k + 1].name} "
            f"(z {z[k + 1]:.1f}) where the series steps {typical:.1f} mm: slices are missing; export the whole series",
            paths[k + 1],
        )


def _shape_key(ds, path: Path) -> tuple:
    try:
        iop = tuple(float(v) for v in ds.ImageOrientationPatient)
        spacing = tuple(round(float(v), 4) for v in ds.PixelSpacing)
        position = [float(v) for v in ds.ImagePositionPatient]
        size = (int(ds.Rows), int(ds.Columns))
    except (AttributeError, TypeError, ValueError) as error:
        raise InputDataError(
            "(0020,0037) orientation, (0028,0030) pixel spacing, (0020,0032) position, rows and columns are "
            f"needed to place a slice in a series ({type(error).__name__}: {error})",
            path,
        ) from None
    if len(iop) != 6 or len(position) != 3:
        raise InputDataError("(0020,0037) needs 6 values and (0020,0032) 3 values", path)
    return (tuple(round(v, 3) for v in iop), spacing, size)


def _instance_number(ds) -> int | None:
    try:
        return int(ds.get("InstanceNumber"))
    except (TypeError, ValueError):
        return None


def _monotonic(values: list[int]) -> bool:
    return values == sorted(values) or values == sorted(values, reverse=True)


def _describe_group(key: tuple) -> str:
    _, frame, iop, spacing, rows, cols = key
    return f"without SeriesInstanceUID (frame of reference {frame or 'blank'}, {rows}x{cols}, spacing {spacing})"


def _reason(error: InputDataError, path: Path | None) -> str:
    text = str(error)
    prefix = f"{path}: "
    return text[len(prefix) :] if path is not None and text.startswith(prefix) else text
