"""NIfTI loading with validation and atomic saving, and the working grid with its exact inverse.

Inside fss every volume is processed on a *working grid*: the input's voxel axes
permuted and flipped to the closest RAS+ orientation, resampled to one isotropic
spacing (millimetres) over the same field of view, then cut to a box around the
foreground whose size is a multiple of ``N`` (padding where the box leaves the
field of view). :class:`WorkingGrid` records all of it, so that any result on the
working grid is mapped back onto the input's own grid: same shape, same affine.

Example
-------
>>> import numpy as np, nibabel as nib
>>> image = nib.Nifti1Image(np.ones((20, 30, 10), np.float32), np.diag([-1.0, 1.0, 2.5, 1.0]))
>>> grid = WorkingGrid.from_image(image, spacing=0.8)
>>> work = grid.to_working(image.get_fdata(dtype=np.float32))
>>> tuple(work.shape), tuple(grid.to_input(work).shape)
((25, 38, 31), (20, 30, 10))
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from nibabel.affines import voxel_sizes
from nibabel.orientations import inv_ornt_aff, io_orientation

from fss.paths import atomic_path

Shape3 = tuple[int, int, int]


def _read_image_file(path: Path) -> nib.spatialimages.SpatialImage:
    """The image nibabel reads from ``path``; FileNotFoundError or ValueError, naming it, where it reads none."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        what = "a folder" if path.is_dir() else "not a regular file (a pipe, such as <(...), or a device)"
        raise ValueError(f"{path}: {what}; give the path of a .nii or .nii.gz file")
    try:
        return nib.load(path)
    except Exception as error:  # nibabel raises many types for unreadable files
        raise ValueError(f"{path}: not a readable NIfTI file ({error})") from error


def check_image_argument(value: object, argument: str) -> None:
    """Raise TypeError, naming ``argument``, unless ``value`` is what :func:`load_nifti` reads: a path or a nibabel image."""
    if isinstance(value, (str, os.PathLike, nib.spatialimages.SpatialImage)):
        return
    hint = ": wrap an array with its voxel sizes as nibabel.Nifti1Image(array, affine)" if hasattr(value, "shape") else ""
    raise TypeError(f"{argument}: expected the path of a NIfTI file or a nibabel image, got {type(value).__name__}{hint}")


def load_nifti(source: str | os.PathLike | nib.spatialimages.SpatialImage) -> nib.Nifti1Image:
    """Load a NIfTI volume and check that fss can work with it.

    Parameters
    ----------
    source : path or nibabel image
        A ``.nii`` / ``.nii.gz`` file, or an image already in memory.

    Returns
    -------
    nibabel.Nifti1Image
        The volume with its data loaded, shape ``(X, Y, Z)``: a 4-D file with a
        single volume is squeezed to 3-D. Header and affine are the file's own.

    Raises
    ------
    TypeError
        If ``source`` is neither a path nor a nibabel image (an array has no voxel sizes).
    FileNotFoundError
        If the path does not exist.
    ValueError
        If the path is a folder, a pipe or a device, if the file is not NIfTI or cannot be read, is not 3-D (or 4-D with one
        volume), has a single slice along an axis, holds colour or complex voxels, NaN or infinite values or values
        beyond float32's range (:data:`FLOAT32_LIMIT`), has no
        orientation (qform and sform codes 0), a singular affine or voxel sizes outside
        :data:`VOXEL_MM`. The message names the file and the problem. When both the sform
        and the qform are set and differ, a warning says that the sform is used.
    """
    check_image_argument(source, "source")
    if isinstance(source, nib.spatialimages.SpatialImage):
        name, image = "in-memory image", source
    else:
        name, image = str(source), _read_image_file(Path(source))
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ValueError(f"{name}: a {type(image).__name__}, not a NIfTI image")
    try:
        data = np.asanyarray(image.dataobj)
    except Exception as error:
        reason = " ".join(str(error).split()) or f"{type(error).__name__}: is the file complete?"
        raise ValueError(f"{name}: the voxel data cannot be read ({reason})") from error

    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 4:
        raise ValueError(f"{name}: 4-D with {data.shape[3]} volumes, shape {data.shape}; pass a single 3-D volume")
    if data.ndim != 3:
        raise ValueError(f"{name}: {data.ndim}-D, shape {data.shape}; fss needs a 3-D volume")
    if min(data.shape) < 2:
        raise ValueError(f"{name}: shape {data.shape} has a single slice along an axis; fss needs a 3-D volume")
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating) or data.dtype == np.bool_):
        raise ValueError(f"{name}: voxels of type {data.dtype} (colour or complex values); fss needs one real number per voxel")
    if np.issubdtype(data.dtype, np.floating):
        bad = np.count_nonzero(~np.isfinite(data))
        if bad:
            raise ValueError(f"{name}: {bad} voxels are NaN or infinite")
        largest = max(float(data.max()), -float(data.min()))  # no copy of the volume
        if largest > FLOAT32_LIMIT:
            raise ValueError(
                f"{name}: values up to {largest:.3g} are beyond float32's range ({FLOAT32_LIMIT:.3g}), in which fss computes; rescale the image"
            )
    _check_orientation(name, image)
    return type(image)(data, image.affine, image.header)


FLOAT32_LIMIT = float(np.finfo(np.float32).max)
"""The largest magnitude of a voxel value that :func:`load_nifti` accepts: fss computes in float32."""

VOXEL_MM = (0.1, 10.0)
"""Voxel sizes (mm, along every axis) that :func:`load_nifti` accepts: fetal MRI from 0.1 mm to 10 mm slices."""


def _check_orientation(name: str, image: nib.Nifti1Image) -> None:
    """Raise unless the header gives an orientation and a plausible, invertible affine; warn when sform and qform differ."""
    header = image.header
    if int(header["sform_code"]) == 0 and int(header["qform_code"]) == 0:
        raise ValueError(
            f"{name}: the header gives no orientation (qform_code and sform_code are both 0), so left and right are unknown; "
            "fix the header (e.g. copy the orientation of the scan it came from)"
        )
    affine = image.affine
    if affine is None or not np.all(np.isfinite(affine)):
        raise ValueError(f"{name}: the affine is missing or not finite")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ValueError(f"{name}: the affine is singular (determinant 0): {affine[:3, :3].tolist()}")
    voxel = voxel_sizes(affine)
    if voxel.min() < VOXEL_MM[0] or voxel.max() > VOXEL_MM[1]:
        raise ValueError(
            f"{name}: voxel size {np.round(voxel, 6).tolist()} mm is outside the {VOXEL_MM[0]}-{VOXEL_MM[1]} mm that fss accepts for fetal MRI"
        )
    if int(header["sform_code"]) > 0 and int(header["qform_code"]) > 0:
        sform, qform = header.get_sform(), header.get_qform()
        if not np.allclose(sform, qform, atol=1e-3):
            warnings.warn(
                f"{name}: the sform and the qform of the header differ by up to {np.abs(sform - qform).max():.3g} mm; "
                "fss uses the sform, as nibabel and most tools do",
                stacklevel=3,
            )


NORMALIZATION = {"method": "percentile", "low": 0.5, "high": 99.5, "of": "voxels above 0"}
"""How fss scales intensities (recorded in checkpoints): see :func:`normalize_intensities`."""


def normalize_intensities(image: np.ndarray | torch.Tensor, low: float = 0.5, high: float = 99.5) -> torch.Tensor:
    """Robust min-max scaling to [0, 1], the one intensity normalisation of fss.

    The ``low`` and ``high`` percentiles of the voxels above 0 (the foreground of a
    skull-stripped or zero-padded scan) map to 0 and 1; values beyond are clipped.

    Parameters
    ----------
    image : array or tensor, any shape
        Intensities.

    Returns
    -------
    torch.Tensor, same shape, float32 in [0, 1] (all zeros for an image without positive voxels).
    """
    x = _as_tensor(image, None).float()
    foreground = x[x > 0]
    if foreground.numel() == 0:
        return torch.zeros_like(x)
    if foreground.numel() > 1_000_000:  # percentiles of a fixed subsample: same result every time, less memory
        foreground = foreground[:: foreground.numel() // 1_000_000]
    bounds = torch.quantile(foreground, torch.tensor([low / 100, high / 100], device=x.device))
    return ((x - bounds[0]) / (bounds[1] - bounds[0]).clamp(min=1e-6)).clamp_(0, 1)


def normalize_as_recorded(image: np.ndarray | torch.Tensor, recorded: dict | None) -> torch.Tensor:
    """:func:`normalize_intensities` with the percentiles a checkpoint records (``None``: :data:`NORMALIZATION`).

    Raises
    ------
    ValueError
        If the recorded normalisation is not fss's percentile scaling of the voxels above 0.
    """
    recorded = recorded or NORMALIZATION
    if recorded.get("method") != NORMALIZATION["method"] or recorded.get("of") != NORMALIZATION["of"]:
        raise ValueError(f"the checkpoint's images were normalised as {recorded}, which fss cannot reproduce (it scales as {NORMALIZATION})")
    return normalize_intensities(image, recorded["low"], recorded["high"])


@dataclass(frozen=True, eq=False)
class WorkingGrid:
    """Geometry linking an input volume's grid to the working grid, both ways.

    Attributes
    ----------
    input_shape : (X, Y, Z)
        Shape of the input volume.
    input_affine : (4, 4) array
        Voxel-to-world (mm) affine of the input.
    spacing : float
        Isotropic working spacing in mm.
    box_start : (3,) ints
        First voxel of the working box in the resampled RAS+ grid; may be negative.
    box_shape : (D, H, W) ints
        Shape of the working box; parts outside the resampled grid are padding.
    """

    input_shape: Shape3
    input_affine: np.ndarray
    spacing: float
    box_start: Shape3
    box_shape: Shape3

    @classmethod
    def from_image(cls, image: nib.spatialimages.SpatialImage, spacing: float = 0.8) -> WorkingGrid:
        """Working grid covering the whole field of view of ``image`` at ``spacing`` mm."""
        if not spacing > 0:
            raise ValueError(f"spacing must be a positive number of mm, got {spacing}")
        grid = cls(tuple(image.shape[:3]), np.asarray(image.affine, float), float(spacing), (0, 0, 0), (0, 0, 0))
        return grid._with_box((0, 0, 0), grid.resampled_shape)

    def _with_box(self, start: Sequence[int], shape: Sequence[int]) -> WorkingGrid:
        return WorkingGrid(
            self.input_shape,
            self.input_affine,
            self.spacing,
            tuple(int(v) for v in start),
            tuple(int(v) for v in shape),
        )

    @property
    def orientation(self) -> np.ndarray:
        """(3, 2) nibabel orientation: input axis i goes to RAS axis ``[i, 0]``, flipped if ``[i, 1] == -1``."""
        return io_orientation(self.input_affine)

    @property
    def ras_shape(self) -> Shape3:
        """Shape of the input after permuting and flipping its axes to RAS+."""
        return tuple(self.input_shape[i] for i in np.argsort(self.orientation[:, 0]))

    @property
    def ras_affine(self) -> np.ndarray:
        """(4, 4) affine of the input reoriented to RAS+ (same voxels, same world)."""
        return self.input_affine @ inv_ornt_aff(self.orientation, self.input_shape)

    @property
    def ras_spacing(self) -> np.ndarray:
        """(3,) voxel sizes in mm along the RAS+ axes of the input."""
        return voxel_sizes(self.ras_affine)

    @property
    def resampled_shape(self) -> Shape3:
        """Shape of the whole field of view at the working spacing."""
        extent = np.asarray(self.ras_shape) * self.ras_spacing
        return tuple(max(1, int(round(e / self.spacing))) for e in extent)

    def _resampling(self) -> tuple[np.ndarray, np.ndarray]:
        """Step and offset so that resampled voxel k sits at RAS input index ``offset + step * k``.

        Both grids share the centre of the field of view.
        """
        step = self.spacing / self.ras_spacing
        n, m = np.asarray(self.ras_shape), np.asarray(self.resampled_shape)
        offset = (n - 1) / 2 - (m - 1) / 2 * step
        return step, offset

    @property
    def affine(self) -> np.ndarray:
        """(4, 4) voxel-to-world affine of the working box (isotropic ``spacing`` mm)."""
        step, offset = self._resampling()
        to_input = np.eye(4)
        to_input[:3, :3] = np.diag(step)
        to_input[:3, 3] = offset + step * np.asarray(self.box_start)
        return self.ras_affine @ to_input

    @property
    def shape(self) -> Shape3:
        """Shape of the working box (the arrays that the model sees)."""
        return self.box_shape

    def to_working(
        self,
        data: np.ndarray | torch.Tensor,
        mode: str = "linear",
        fill: float = 0,
        device: str | torch.device | None = None,
    ) -> torch.Tensor:
        """Map data from the input grid onto the working box.

        Parameters
        ----------
        data : array or tensor, shape ``(..., X, Y, Z)``
            Values on the input grid; leading axes (channels) are carried along.
        mode : {"linear", "nearest"}
            Linear for images (needs a floating dtype), nearest for label maps.
        fill : float
            Value of the padding where the box leaves the field of view.
        device : torch device, optional
            Where to compute; default: the tensor's own device, or CPU.

        Returns
        -------
        torch.Tensor, shape ``(..., D, H, W)`` = ``(..., *self.shape)``
        """
        x = _as_tensor(data, device)
        _check_spatial(x, self.input_shape, "input")
        x = _reorient_to_ras(x, self.orientation)
        step, offset = self._resampling()
        coords = [offset[a] + step[a] * torch.arange(m, dtype=torch.float64) for a, m in enumerate(self.resampled_shape)]
        x = _resample(x, coords, mode)
        return _take_box(x, self.box_start, self.box_shape, fill)

    def to_input(self, data: np.ndarray | torch.Tensor, mode: str = "linear", fill: float = 0) -> torch.Tensor:
        """Map data from the working box back onto the input grid (the exact inverse geometry).

        Parameters
        ----------
        data : array or tensor, shape ``(..., D, H, W)`` = ``(..., *self.shape)``
            Values on the working box: an image, class probabilities, or labels.
        mode : {"linear", "nearest"}
            Linear for images and probabilities, nearest for label maps.
        fill : float
            Value given to input voxels outside the box.

        Returns
        -------
        torch.Tensor, shape ``(..., X, Y, Z)`` = ``(..., *self.input_shape)``, on the device of ``data``.
        """
        x = _as_tensor(data, None)
        _check_spatial(x, self.box_shape, "working")
        x = _take_box(x, [-s for s in self.box_start], self.resampled_shape, fill)
        step, offset = self._resampling()
        coords = [(torch.arange(n, dtype=torch.float64) - offset[a]) / step[a] for a, n in enumerate(self.ras_shape)]
        x = _resample(x, coords, mode)
        return _reorient_from_ras(x, self.orientation)

    def cut(self, data: np.ndarray | torch.Tensor, box: WorkingGrid, fill: float = 0) -> torch.Tensor:
        """Cut the box of another working grid of the same input and spacing out of data on this one.

        Equal to ``box.to_working(original)`` when ``data = self.to_working(original)``, without
        resampling the input again.

        Parameters
        ----------
        data : array or tensor, shape ``(..., *self.shape)``
        box : WorkingGrid
            E.g. from :meth:`around`; same input grid and spacing as this one.
        fill : float
            Value of the parts of ``box`` outside this one.

        Returns
        -------
        torch.Tensor, shape ``(..., *box.shape)``
        """
        if box.input_shape != self.input_shape or box.spacing != self.spacing or not np.array_equal(box.input_affine, self.input_affine):
            raise ValueError("the box belongs to another input grid or spacing")
        x = _as_tensor(data, None)
        _check_spatial(x, self.box_shape, "working")
        return _take_box(x, [int(b - a) for a, b in zip(self.box_start, box.box_start)], box.box_shape, fill)

    def around(self, foreground: np.ndarray | torch.Tensor, margin_mm: float = 4.0, multiple: int = 16, minimum: int = 0) -> WorkingGrid:
        """A working grid whose box tightly holds ``foreground`` plus a margin.

        Parameters
        ----------
        foreground : bool array or tensor, shape ``self.shape``
            Voxels to keep, on the current working box.
        margin_mm : float
            Margin around the foreground's bounding box, in mm (cut at the field of view).
        multiple : int
            Each side of the new box is a multiple of this (e.g. 16 for a U-Net with
            four poolings); the box grows evenly on both sides, padding if needed.
        minimum : int
            Smallest side of the box, voxels (grown the same way).

        Returns
        -------
        WorkingGrid
            Same input and spacing, new box.

        Raises
        ------
        ValueError
            If the foreground is empty.
        """
        mask = _as_tensor(foreground, None).bool()
        _check_spatial(mask, self.box_shape, "working")
        mask = mask.reshape(-1, *self.box_shape).any(dim=0)
        if not mask.any():
            raise ValueError("the foreground is empty: there is nothing to crop around")
        margin = math.ceil(margin_mm / self.spacing)
        start, shape = [], []
        for axis in range(3):
            others = [a for a in range(3) if a != axis]
            present = torch.nonzero(mask.any(dim=others[1]).any(dim=others[0])).flatten()
            lo = max(int(present[0]) - margin, 0)
            hi = min(int(present[-1]) + 1 + margin, self.box_shape[axis])
            size = max(math.ceil((hi - lo) / multiple) * multiple, minimum)
            start.append(self.box_start[axis] + lo - (size - (hi - lo)) // 2)
            shape.append(size)
        return self._with_box(start, shape)


def _as_tensor(data: np.ndarray | torch.Tensor, device: str | torch.device | None) -> torch.Tensor:
    """Tensor view of ``data``: native byte order, a dtype torch indexes well."""
    if isinstance(data, torch.Tensor):
        return data if device is None else data.to(device)
    array = np.asarray(data)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if array.dtype.kind == "u" and array.dtype != np.uint8:
        array = array.astype(np.int64)
    return torch.from_numpy(np.ascontiguousarray(array)).to(device or "cpu")


def _check_spatial(x: torch.Tensor, expected: Sequence[int], grid: str) -> None:
    if x.ndim < 3 or tuple(x.shape[-3:]) != tuple(expected):
        raise ValueError(f"expected data of shape (..., {', '.join(map(str, expected))}) on the {grid} grid, got {tuple(x.shape)}")


def _reorient_to_ras(x: torch.Tensor, orientation: np.ndarray) -> torch.Tensor:
    """Flip then permute the last three axes as nibabel's ``apply_orientation`` does."""
    lead = x.ndim - 3
    flips = [lead + i for i in range(3) if orientation[i, 1] == -1]
    if flips:
        x = x.flip(flips)
    order = np.argsort(orientation[:, 0])
    return x.permute(*range(lead), *(lead + int(a) for a in order))


def _reorient_from_ras(x: torch.Tensor, orientation: np.ndarray) -> torch.Tensor:
    """Inverse of :func:`_reorient_to_ras`."""
    lead = x.ndim - 3
    x = x.permute(*range(lead), *(lead + int(a) for a in orientation[:, 0]))
    flips = [lead + i for i in range(3) if orientation[i, 1] == -1]
    return x.flip(flips) if flips else x


def _resample(x: torch.Tensor, coords: Sequence[torch.Tensor], mode: str) -> torch.Tensor:
    """Separable resampling of the last three axes at fractional indices ``coords``.

    Indices outside ``[0, n - 1]`` take the border value: both grids cover the
    same field of view, so such points lie within the border voxel's extent.
    """
    if mode not in ("linear", "nearest"):
        raise ValueError(f"mode must be 'linear' or 'nearest', got {mode!r}")
    if mode == "linear" and not x.is_floating_point():
        raise TypeError(f"linear interpolation needs floating-point data, got {x.dtype}; use mode='nearest' for labels")
    if x.ndim > 3:  # one volume at a time: the result and one volume's temporaries, not those of the whole stack
        out = torch.empty((*x.shape[:-3], *(len(c) for c in coords)), dtype=x.dtype, device=x.device)
        for index in np.ndindex(*x.shape[:-3]):
            out[index] = _resample(x[index], coords, mode)
        return out
    for dim, c in enumerate(coords):
        n = x.shape[dim]
        c = c.clamp(0, n - 1)
        if mode == "nearest":
            x = x.index_select(dim, torch.floor(c + 0.5).long().to(x.device))
            continue
        lo = torch.floor(c).long()
        hi = (lo + 1).clamp(max=n - 1)
        shape = [1] * x.ndim
        shape[dim] = -1
        weight = (c - lo).to(device=x.device, dtype=x.dtype).reshape(shape)
        below = x.index_select(dim, lo.to(x.device))
        above = x.index_select(dim, hi.to(x.device))
        x = above.sub_(below).mul_(weight).add_(below)  # below + (above - below) * weight, in place: two volumes at a time
    return x


def _take_box(x: torch.Tensor, start: Sequence[int], shape: Sequence[int], fill: float) -> torch.Tensor:
    """Box ``[start, start + shape)`` of the last three axes of ``x``, ``fill`` where it leaves ``x``."""
    size = x.shape[-3:]
    if tuple(start) == (0, 0, 0) and tuple(shape) == tuple(size):
        return x
    out = torch.full((*x.shape[:-3], *shape), fill, dtype=x.dtype, device=x.device)
    src, dst = [], []
    for s, n, m in zip(start, shape, size):
        lo, hi = max(s, 0), min(s + n, m)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[(..., *dst)] = x[(..., *src)]
    return out


SEGMENTATION_DESCRIPTION = "fss segmentation"
"""The NIfTI header description of the label maps and probability maps ``fss segment`` writes (so that they are known
wherever they are copied)."""


def described_as(image: nib.spatialimages.SpatialImage, description: str) -> bool:
    """Whether the header description of ``image`` begins with ``description``: how fss marks the files it writes
    (:data:`SEGMENTATION_DESCRIPTION` for ``fss segment``'s, :data:`fss.seeds.SEEDS_DESCRIPTION` for seeds)."""
    found = image.header["descrip"].item() if "descrip" in image.header else b""
    return found.decode(errors="replace").startswith(description)


def save_nifti(
    data: np.ndarray | torch.Tensor,
    affine: np.ndarray,
    path: str | os.PathLike,
    overwrite: bool = False,
    slope: float = 1.0,
    description: str = "",
) -> Path:
    """Write a 3-D (or ``(X, Y, Z, C)``) volume as NIfTI, atomically.

    Parameters
    ----------
    data : array or tensor
        Voxel values; the dtype is kept (use int16 for label maps, float32 for images).
    affine : (4, 4) array
        Voxel-to-world affine in mm, written as the sform and qform.
    path : path
        Destination ``.nii`` or ``.nii.gz``.
    overwrite : bool
        Replace an existing file; otherwise :class:`FileExistsError`.
    slope : float
        Scale factor stored in the header (``scl_slope``): readers see ``data * slope``, so
        that e.g. probabilities travel as uint8 with slope 1/255.
    description : str
        The header's description (at most 80 characters), e.g. :data:`SEGMENTATION_DESCRIPTION`.

    Returns
    -------
    Path
        ``path``.
    """
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    image = nib.Nifti1Image(np.asarray(data), np.asarray(affine, float))
    image.header.set_xyzt_units("mm")
    if slope != 1.0:
        image.header.set_slope_inter(slope, 0.0)
    image.header["descrip"] = description.encode()[:80]
    with atomic_path(path, overwrite) as temporary:
        nib.save(image, temporary)
    return Path(path)
