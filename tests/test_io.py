import itertools
import os
import stat
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from scipy.spatial.transform import Rotation

from fss.io import WorkingGrid, load_nifti, save_nifti
from fss.paths import atomic_path

SPACING = 0.8


def axis_affine(permutation, signs, spacing, origin=(3.0, -7.0, 11.0)):
    """Affine whose voxel axis i points along world axis permutation[i] with sign signs[i]."""
    affine = np.eye(4)
    affine[:3, :3] = 0
    for i, (axis, sign) in enumerate(zip(permutation, signs)):
        affine[axis, i] = sign * spacing[i]
    affine[:3, 3] = origin
    return affine


ORIENTATIONS = [(p, s) for p in itertools.permutations(range(3)) for s in itertools.product((1, -1), repeat=3)]


def oblique_affine():
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", [20, -12, 33], degrees=True).as_matrix() @ np.diag([0.6, 1.1, 2.3])
    affine[:3, 3] = [-40.0, 12.5, 3.0]
    return affine


def world(affine, index):
    """World mm of voxel indices ``index`` (N, 3)."""
    return index @ affine[:3, :3].T + affine[:3, 3]


def voxel_indices(shape):
    return np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3).astype(float)


RAMP = np.array([0.7, -1.3, 0.4])


def ramp_image(shape, affine):
    """Image whose value is a linear function of world position: linear resampling reproduces it exactly."""
    values = world(affine, voxel_indices(shape)) @ RAMP + 5.0
    return nib.Nifti1Image(values.reshape(shape), affine)


def check_ramp_round_trip(image):
    grid = WorkingGrid.from_image(image, SPACING)
    work = grid.to_working(np.asarray(image.dataobj), "linear").numpy()
    assert work.shape == grid.shape

    # the working affine is RAS+ up to obliquity and isotropic at SPACING
    assert np.allclose(np.linalg.norm(grid.affine[:3, :3], axis=0), SPACING)
    assert np.all(np.diag(grid.affine[:3, :3]) > 0)

    # every working voxel that samples inside the input holds the ramp at its own world position
    centres = world(grid.affine, voxel_indices(grid.shape))
    positions = world(np.linalg.inv(image.affine), centres)
    inside = np.all((positions >= 0) & (positions <= np.asarray(image.shape) - 1), axis=1)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(work.reshape(-1)[inside], (centres @ RAMP + 5.0)[inside], atol=1e-9)

    back = grid.to_input(work, "linear").numpy()
    assert back.shape == image.shape
    margin = int(np.ceil(SPACING / np.linalg.norm(image.affine[:3, :3], axis=0).min())) + 1
    interior = tuple(slice(margin, n - margin) for n in image.shape)
    np.testing.assert_allclose(back[interior], np.asarray(image.dataobj)[interior], atol=1e-9)


@pytest.mark.parametrize("permutation,signs", ORIENTATIONS)
def test_round_trip_is_exact_for_every_axis_orientation(permutation, signs):
    rng = np.random.default_rng(0)
    shape = (9, 12, 7)
    labels = rng.integers(0, 8, size=shape).astype(np.int16)
    image = nib.Nifti1Image(labels, axis_affine(permutation, signs, (SPACING,) * 3))
    grid = WorkingGrid.from_image(image, SPACING)

    work = grid.to_working(labels, "nearest")
    canonical = nib.as_closest_canonical(image)
    np.testing.assert_array_equal(work.numpy(), np.asarray(canonical.dataobj))
    np.testing.assert_allclose(grid.affine, canonical.affine, atol=1e-12)

    back = grid.to_input(work, "nearest")
    assert back.dtype == torch.int16
    np.testing.assert_array_equal(back.numpy(), labels)


@pytest.mark.parametrize("permutation,signs", ORIENTATIONS)
def test_anisotropic_resampling_follows_world_geometry_for_every_axis_orientation(permutation, signs):
    check_ramp_round_trip(ramp_image((14, 10, 6), axis_affine(permutation, signs, (0.5, 1.1, 2.0))))


def test_oblique_resampling_follows_world_geometry():
    check_ramp_round_trip(ramp_image((30, 20, 12), oblique_affine()))


def test_oblique_labels_come_back_on_the_input_grid_through_files(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.zeros((30, 24, 12), np.int16)
    labels[5:25, 4:20, 2:10] = rng.integers(1, 8, size=(20, 16, 8))
    path = save_nifti(labels, oblique_affine(), tmp_path / "labels.nii.gz")
    image = load_nifti(path)
    grid = WorkingGrid.from_image(image, SPACING)
    work = grid.to_working(np.asarray(image.dataobj), "nearest")
    out = save_nifti(grid.to_input(work, "nearest"), grid.input_affine, tmp_path / "out.nii.gz")
    result = nib.load(out)
    assert result.shape == image.shape
    np.testing.assert_allclose(result.affine, image.affine, atol=1e-5)
    assert np.asarray(result.dataobj).dtype == np.int16
    # 0.6 x 1.1 x 2.3 mm voxels through 0.8 mm and back: most voxels keep their label
    assert (np.asarray(result.dataobj) == labels).mean() > 0.7


def test_blob_centroid_moves_less_than_half_a_voxel():
    affine = oblique_affine()
    shape = (60, 40, 20)
    centre_mm = world(affine, np.array([[31.3, 17.8, 9.2]]))[0]
    distance = np.linalg.norm(world(affine, voxel_indices(shape)) - centre_mm, axis=1)
    blob = np.exp(-0.5 * (distance / 4.0) ** 2).reshape(shape).astype(np.float32)
    grid = WorkingGrid.from_image(nib.Nifti1Image(blob, affine), SPACING)
    work = grid.to_working(blob).numpy().astype(float)

    def centroid(values, affine_):
        weights = values.reshape(-1)
        return weights @ world(affine_, voxel_indices(values.shape)) / weights.sum()

    assert np.linalg.norm(centroid(blob.astype(float), affine) - centre_mm) < 0.05
    shift = np.linalg.norm(centroid(work, grid.affine) - centroid(blob.astype(float), affine))
    assert shift < SPACING / 2, f"centroid moved {shift:.3f} mm"


def test_crop_to_foreground_pads_to_multiple_and_inverts_exactly():
    labels = np.zeros((40, 50, 30), np.int16)
    labels[10:20, 0:30, 5:25] = 3  # touches the edge of axis 1: the box must pad there
    labels[12, 2, 6] = 7
    image = nib.Nifti1Image(labels, axis_affine((1, 0, 2), (-1, 1, 1), (SPACING,) * 3))
    full = WorkingGrid.from_image(image, SPACING)
    grid = full.around(full.to_working(labels, "nearest") > 0, margin_mm=4.0, multiple=16)

    assert all(side % 16 == 0 for side in grid.shape)
    assert min(grid.box_start) < 0, "the box should extend past the field of view (padding)"
    work = grid.to_working(labels, "nearest", fill=0)
    assert tuple(work.shape) == grid.shape
    torch.testing.assert_close(full.cut(full.to_working(labels, "nearest"), grid), work, rtol=0, atol=0)
    with pytest.raises(ValueError, match="another input grid"):
        WorkingGrid.from_image(image, 2 * SPACING).cut(work, grid)
    assert int((work > 0).sum()) == int((labels > 0).sum()), "the box must hold the whole foreground"
    np.testing.assert_array_equal(grid.to_input(work, "nearest").numpy(), labels)
    # the box's affine puts each voxel where it was
    np.testing.assert_allclose(
        world(grid.affine, np.argwhere(work.numpy() == 7).astype(float)),
        world(image.affine, np.argwhere(labels == 7).astype(float)),
        atol=1e-9,
    )


def test_crop_margin_and_channels():
    labels = np.zeros((40, 40, 40), np.int16)
    labels[15:25, 15:25, 15:25] = 1
    grid = WorkingGrid.from_image(nib.Nifti1Image(labels, np.diag([SPACING] * 3 + [1])), SPACING)
    probabilities = torch.stack([torch.from_numpy(labels == 0), torch.from_numpy(labels == 1)]).float()
    box = grid.around(probabilities[1:] > 0.5, margin_mm=8.0, multiple=8)
    assert box.shape == (32, 32, 32)  # 10 voxels + 2 x 10 margin = 30, rounded up to 32
    work = box.to_working(probabilities)
    assert work.shape == (2, 32, 32, 32)
    np.testing.assert_array_equal(box.to_input(work, fill=0).numpy()[1], labels == 1)
    with pytest.raises(ValueError, match="foreground is empty"):
        grid.around(np.zeros(grid.shape, bool))


def test_a_stack_of_channels_maps_back_as_each_channel_alone():
    affine = np.array([[0.0, 0.0, 1.1, 3.0], [-0.7, 0.0, 0.0, -2.0], [0.0, 1.3, 0.0, 5.0], [0, 0, 0, 1]])  # turned, anisotropic
    grid = WorkingGrid.from_image(nib.Nifti1Image(np.zeros((11, 13, 9), np.float32), affine), 0.8)
    stack = torch.rand(2, 3, *grid.shape, generator=torch.Generator().manual_seed(0))
    for mode in ("linear", "nearest"):
        back = grid.to_input(stack, mode)
        assert back.shape == (2, 3, 11, 13, 9)
        for i, j in np.ndindex(2, 3):
            torch.testing.assert_close(back[i, j], grid.to_input(stack[i, j], mode), rtol=0, atol=0)


def test_linear_mode_refuses_integer_labels_and_shape_mismatch():
    grid = WorkingGrid.from_image(nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), np.eye(4)), 1.0)
    with pytest.raises(TypeError, match="mode='nearest'"):
        grid.to_working(np.zeros((4, 5, 6), np.int16), "linear")
    with pytest.raises(ValueError, match=r"expected data of shape \(\.\.\., 4, 5, 6\)"):
        grid.to_working(np.zeros((4, 5, 7), np.float32))


def _write(tmp_path, data, affine=None, name="bad.nii.gz"):
    """Save ``data`` with ``affine`` (default: the identity) as the sform only (a qform cannot hold a singular affine)."""
    path = tmp_path / name
    image = nib.Nifti1Image(data, None)
    image.header.set_sform(np.eye(4) if affine is None else affine, code=1)
    nib.save(image, path)
    return path


@pytest.mark.parametrize(
    "data,affine,message",
    [
        (np.zeros((8, 8), np.float32), np.eye(4), "2-D, shape (8, 8); fss needs a 3-D volume"),
        (np.zeros((8, 8, 8, 3), np.float32), np.eye(4), "4-D with 3 volumes"),
        (np.zeros((8, 8, 1), np.float32), np.eye(4), "single slice"),
        (np.full((8, 8, 8), np.nan, np.float32), np.eye(4), "512 voxels are NaN or infinite"),
        (np.pad(np.full((1, 1, 1), np.inf, np.float32), 2), np.eye(4), "1 voxels are NaN or infinite"),
        (np.full((8, 8, 8), 1e39, np.float64), np.eye(4), "values up to 1e+39 are beyond float32's range"),
        (np.zeros((8, 8, 8), np.float32), np.diag([1.0, 1.0, 0.0, 1.0]), "singular"),
    ],
)
def test_bad_volumes_are_refused_with_file_and_reason(tmp_path, data, affine, message):
    path = _write(tmp_path, data, affine)
    with pytest.raises(ValueError) as error:
        load_nifti(path)
    assert str(path) in str(error.value)
    assert message in str(error.value)


def test_unreadable_and_missing_files(tmp_path):
    text = tmp_path / "notes.nii.gz"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="not a readable NIfTI file"):
        load_nifti(text)
    with pytest.raises(FileNotFoundError, match="absent.nii.gz: no such file"):
        load_nifti(tmp_path / "absent.nii.gz")
    mgh = tmp_path / "brain.mgz"
    nib.save(nib.MGHImage(np.zeros((4, 4, 4), np.float32), np.eye(4)), mgh)
    with pytest.raises(ValueError, match="MGHImage, not a NIfTI image"):
        load_nifti(mgh)
    with pytest.raises(ValueError, match="folder.nii.gz: a folder; give the path of a .nii or .nii.gz file"):
        load_nifti((tmp_path / "folder.nii.gz").mkdir() or tmp_path / "folder.nii.gz")
    pipe = tmp_path / "pipe"  # what a shell's <(cat x.nii.gz) passes
    os.mkfifo(pipe)
    with pytest.raises(ValueError, match=r"pipe: not a regular file \(a pipe, such as <\(...\), or a device\)"):
        load_nifti(pipe)


def test_single_volume_4d_is_squeezed(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6, 1)
    image = load_nifti(_write(tmp_path, data, name="one.nii"))
    assert image.shape == (4, 5, 6)
    np.testing.assert_array_equal(np.asarray(image.dataobj), data[..., 0])


def test_atomic_save_refuses_to_overwrite_and_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "out" / "labels.nii.gz"
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    save_nifti(data, np.diag([0.5, 0.5, 0.5, 1]), path)
    reloaded = nib.load(path)
    np.testing.assert_array_equal(np.asarray(reloaded.dataobj), data)
    assert reloaded.header.get_zooms() == (0.5, 0.5, 0.5)

    with pytest.raises(FileExistsError, match="--overwrite"):
        save_nifti(data, np.eye(4), path)
    save_nifti(data + 1, np.eye(4), path, overwrite=True)
    np.testing.assert_array_equal(np.asarray(nib.load(path).dataobj), data + 1)

    with pytest.raises(RuntimeError), atomic_path(tmp_path / "out" / "half.nii.gz") as temporary:
        temporary.write_bytes(b"half written")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in Path(tmp_path / "out").iterdir()) == ["labels.nii.gz"]


def test_atomic_files_take_the_umask_without_the_process_umask_being_touched(tmp_path, monkeypatch):
    previous = os.umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", lambda mask: pytest.fail("os.umask changes the whole process's umask"))
        with atomic_path(tmp_path / "table.tsv") as temporary:
            temporary.write_text("a\tb\n")
        assert stat.S_IMODE((tmp_path / "table.tsv").stat().st_mode) == 0o640
        with atomic_path(tmp_path / "weights.safetensors") as temporary:
            save_file({"w": torch.zeros(2)}, str(temporary))  # safetensors recreates the file with mode 0600
        assert stat.S_IMODE((tmp_path / "weights.safetensors").stat().st_mode) == 0o640
    finally:
        monkeypatch.undo()
        os.umask(previous)


def test_a_write_in_progress_elsewhere_keeps_its_temporary_file_and_a_dead_ones_is_removed(tmp_path):
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as running:
        finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
        in_progress = tmp_path / f".table.tsv.{running.pid}-1a2b3c4d.tsv"
        killed = tmp_path / f".table.tsv.{int(finished.stdout)}-5e6f7a8b.tsv"
        older_naming = tmp_path / ".table.tsv.k2j4h1.tsv"
        for leftover in (in_progress, killed, older_naming):
            leftover.write_text("half a table")
        with atomic_path(tmp_path / "table.tsv") as temporary:
            assert temporary.name.startswith(f".table.tsv.{os.getpid()}-") and temporary.name.endswith(".tsv")
            temporary.write_text("a\n")
        running.kill()
    assert in_progress.exists() and not killed.exists() and not older_naming.exists()
    assert (tmp_path / "table.tsv").read_text() == "a\n"
