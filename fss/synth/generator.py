"""The generator: seeded, batched SynthSeg-style synthesis from seed maps, on any torch device.

Drawing parameters (:meth:`Generator.draw`, on the CPU, from one seed) and applying them
(:meth:`Generator.apply`, on the generator's device) are separate steps, so any sample can
be re-made from its parameters (:meth:`Generator.replay`).

Example
-------
>>> generator = Generator(load_subjects("outputs/01_seeds"), preset("reference"))  # doctest: +SKIP
>>> sample = generator.sample(batch_size=2, seed=0)  # doctest: +SKIP
>>> sample.image.shape, sample.labels.dtype  # doctest: +SKIP
(torch.Size([2, 1, 135, 189, 155]), torch.int64)
"""

from __future__ import annotations

import copy
import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from nibabel.affines import voxel_sizes

from fss.device import check_memory, resolve_device
from fss.labels import META_LABELS, check_feta, to_feta
from fss.seeds import SEEDS_FOLDER, Seeds, compose_seed_map, labels_path, load_seeds
from fss.synth.config import GeneratorConfig
from fss.synth.contrast import N_SEED_VALUES, apply_contrast
from fss.synth.draws import Seed, StageDraw, as_generator, integers
from fss.synth.spatial import flip, read_at, sampling_positions
from fss.synth.stages import DRAW_ORDER, STAGE_DRAWS, STAGES, draw_stages, finish

MAX_PACKED_SUBCLASSES = 4
"""The most subclasses per meta-label the generator draws: a voxel's int16 code packs its subclass for every K up to
this in 8 bits (:data:`SUBCLASS_BITS`), where seed files allow up to :data:`fss.seeds.MAX_SUBCLASSES`."""
N_META_LABELS = len(META_LABELS)
SUBCLASS_BITS = {2: (3, 1), 3: (4, 2), 4: (6, 2)}
"""(shift, width) of the subclass index j for K = 2, 3, 4 in a voxel's code; bits 0-2 hold the meta-label."""
BYTES_PER_OUTPUT_VOXEL = 96
"""Peak memory of one sample per output voxel (bytes), measured at 256^3 on a CPU (about 1.6 GB) and rounded up."""
LABEL_SHIFT = 8
N_CODES = 1 << LABEL_SHIFT
"""Each voxel packs its meta-label, its subclass for every K and its label into one int16, so that one
gather reads all that the spatial transform moves; a per-sample table of the 256 codes then gives the
seed value for the K that the sample drew for each meta-label."""


@dataclass
class SynthSubject:
    """One subject for synthesis: seed layers and the FeTA label map to learn, on one grid.

    Attributes
    ----------
    name : str
    seeds : Seeds
    labels : np.ndarray, (X, Y, Z)
        FeTA label map on the seeds' grid.
    """

    name: str
    seeds: Seeds
    labels: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        """(3,) voxel size in mm, from the affine's column norms."""
        return voxel_sizes(self.seeds.affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.labels.shape)


def load_subjects(root: str | os.PathLike, subjects: Sequence[str] | None = None) -> list[SynthSubject]:
    """Subjects with seeds under dataset ``root`` (``derivatives/seeds/``), with their FeTA label maps.

    The label map is ``derivatives/seeds/sub-X/anat/<stem>.nii.gz`` as written by
    :func:`fss.seeds.write_seeds`, else ``sub-X/anat/<stem>.nii.gz`` in ``root`` (the
    reference method's layout, FeTA labels).

    Parameters
    ----------
    root : path
        Dataset root.
    subjects : sequence of str, optional
        Subject labels (with or without ``sub-``); default every subject with seeds.
    """
    root = Path(root)
    if subjects is None:
        subjects = sorted({p.name for p in (root / SEEDS_FOLDER).glob("subclasses_*/sub-*")})
        if not subjects:
            raise FileNotFoundError(f"no seeds under {root / SEEDS_FOLDER}")
    loaded = []
    for subject in subjects:
        seeds = load_seeds(root, subject)
        stem = seeds.stem
        candidates = [labels_path(root, subject, stem), root / seeds.subject / "anat" / f"{stem}.nii.gz"]
        found = next((p for p in candidates if p.exists()), None)
        if found is None:
            raise FileNotFoundError(f"no label map for {seeds.subject}: looked for {', '.join(map(str, candidates))}")
        image = nib.load(found)
        if image.shape != seeds.shape or not np.allclose(image.affine, seeds.affine, atol=1e-4):
            raise ValueError(f"{found}: not on the grid of the seeds of {seeds.subject}")
        loaded.append(SynthSubject(seeds.subject, seeds, to_feta(np.asarray(image.dataobj), "feta")))
    return loaded


@dataclass
class Sample:
    """A batch of synthetic images.

    Attributes
    ----------
    image : torch.Tensor, (B, 1, D, H, W) float32 in [0, 1]
    labels : torch.Tensor, (B, D, H, W) int64, FeTA
    seed_map : torch.Tensor or None, (B, D, H, W) uint8
        The deformed seed map (values ``10 * M + j``, read by nearest neighbour like the labels); with
        ``image_interpolation="linear"`` the image was drawn from the undeformed seeds and resampled.
        None for real images.
    params : dict
        Everything that was drawn, by stage: ``subject`` (B,), ``subclasses`` (B, 4) and ``flip`` (B,)
        tensors, the other stages' :class:`~fss.synth.draws.StageDraw` (see :data:`fss.synth.stages.STAGE_DRAWS`), None
        for a stage that is off; :meth:`Generator.replay` re-makes the batch from it.
    """

    image: torch.Tensor
    labels: torch.Tensor
    seed_map: torch.Tensor | None
    params: dict


class Generator:
    """Synthetic image generator holding one or more subjects on a device.

    Parameters
    ----------
    subjects : sequence of SynthSubject
        Seeds (K = 1..``config.subclasses.max_subclasses`` at least) and labels.
    config : GeneratorConfig
        Stages and output size; ``output_shape=None`` needs subjects of one shape.
    device : str or torch.device
        ``"auto"``: CUDA, then MPS, then CPU.
    """

    def __init__(self, subjects: Sequence[SynthSubject], config: GeneratorConfig | None = None, device: str | torch.device = "auto"):
        if not subjects:
            raise ValueError("the generator needs at least one subject")
        if config is not None and not isinstance(config, GeneratorConfig):
            raise TypeError(
                "config: expected a GeneratorConfig (fss.synth.preset(name), or GeneratorConfig.from_dict for a dictionary), "
                f"got {type(config).__name__}"
            )
        self.config = config or GeneratorConfig()
        self.device = resolve_device(device)
        self.subjects = list(subjects)
        shapes = {s.shape for s in subjects}
        if self.config.output_shape is None and len(shapes) > 1:
            raise ValueError(f"subjects have different shapes {sorted(shapes)}: set output_shape in the configuration")
        self.output_shape = tuple(self.config.output_shape or subjects[0].shape)
        check_memory(
            BYTES_PER_OUTPUT_VOXEL * math.prod(self.output_shape), self.device, f"a {'x'.join(map(str, self.output_shape))} synthetic sample"
        )
        max_k = self.config.subclasses.max_subclasses
        if max_k > MAX_PACKED_SUBCLASSES:
            raise ValueError(f"max_subclasses is at most {MAX_PACKED_SUBCLASSES}, got {max_k}")
        packed = []
        for subject in subjects:
            if subject.shape != tuple(subject.seeds.shape):
                raise ValueError(
                    f"{subject.name}: a label map of shape {subject.shape} and seeds of shape {tuple(subject.seeds.shape)}; "
                    "give the label map on the seeds' grid"
                )
            check_feta(subject.labels, subject.name)  # other labels would be packed as tissues they are not
            missing = [k for k in range(1, max_k + 1) if k not in subject.seeds.layers]
            if missing:
                raise ValueError(f"{subject.name} has no seeds with K={missing}; the configuration asks for up to {max_k}")
            packed.append(_pack(subject, max_k).ravel())
        sizes = [p.size for p in packed]
        self._volumes = torch.from_numpy(np.concatenate([*packed, np.zeros(1, np.int16)])).to(self.device)
        self._offsets = torch.tensor(np.cumsum([0, *sizes[:-1]]), dtype=torch.int64)
        self._outside = sum(sizes)
        self._index_dtype = torch.int32 if self._outside < 2**31 else torch.int64
        self._shapes = torch.tensor([s.shape for s in subjects], dtype=torch.int64)
        self._spacings = torch.tensor(np.array([s.spacing for s in subjects]), dtype=torch.float64)

    def with_config(self, config: GeneratorConfig) -> Generator:
        """A generator of the same subjects drawing with ``config``; the subjects' packed volumes are shared, not rebuilt,
        when the output shape and the largest K stay the same."""
        if config.output_shape != self.config.output_shape or config.subclasses.max_subclasses != self.config.subclasses.max_subclasses:
            return Generator(self.subjects, config, self.device)
        other = copy.copy(self)
        other.config = config
        return other

    def output_affine(self, subject: int) -> np.ndarray:
        """(4, 4) affine of the output grid for ``subject``: the centred window of its grid, same voxel size."""
        offset = np.floor((np.asarray(self.subjects[subject].shape) - np.asarray(self.output_shape)) / 2)
        window = np.eye(4)
        window[:3, 3] = offset
        return self.subjects[subject].seeds.affine @ window

    def draw(self, batch_size: int = 1, seed: Seed = 0) -> dict:
        """Draw the parameters of ``batch_size`` samples (CPU tensors, leading dimension B).

        Raises
        ------
        ValueError
            Naming the argument, for a ``batch_size`` that is not a whole number of 1 or more, or a ``seed`` that
            :func:`fss.synth.draws.as_generator` refuses.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size: expected a whole number of samples, 1 or more, got {batch_size!r}")
        generator = as_generator(seed)
        config = self.config
        return {
            "subject": integers(generator, (batch_size,), 0, len(self.subjects) - 1),
            "subclasses": integers(generator, (batch_size, N_META_LABELS), config.subclasses.min_subclasses, config.subclasses.max_subclasses),
            **draw_stages(config, DRAW_ORDER, batch_size, generator),
        }

    def apply(self, params: dict) -> Sample:
        """Make the batch that ``params`` describe; a stage whose entry is None is skipped."""
        subject = params["subject"]
        spacings = self._spacings[subject]
        positions = sampling_positions(params["spatial"], self.config.spatial, self.output_shape, self._shapes[subject], spacings, self.device)
        linear = params["contrast"] is not None and self.config.spatial.image_interpolation == "linear"
        image = self._contrast_on_source(positions, params) if linear else None
        packed = self._read(positions, subject)  # rounds positions in place
        labels = (packed >> LABEL_SHIFT).long()
        seed_map = self._choose_subclasses(packed, params["subclasses"])
        del packed
        if params["contrast"] is None:
            image = seed_map[:, None].float()
        elif not linear:
            image = apply_contrast(seed_map, params["contrast"])
        image, labels = finish(image, labels, params, spacings)
        if params["flip"] is not None:
            seed_map = flip(seed_map, params["flip"], 1)
        return Sample(image, labels, seed_map, params)

    def sample(self, batch_size: int = 1, seed: Seed = 0) -> Sample:
        """Draw and apply: ``batch_size`` new samples from ``seed`` (int or CPU ``torch.Generator``)."""
        return self.apply(self.draw(batch_size, seed))

    replay = apply

    def _read(self, positions: torch.Tensor, subject: torch.Tensor) -> torch.Tensor:
        """Packed voxels at the rounded ``positions`` (B, 3, *S) of each sample's subject; 0 outside the volume."""
        view = (len(subject), 1, 1, 1)
        shapes = self._shapes[subject].to(self.device, self._index_dtype)
        positions = positions.round_()
        index = torch.zeros(positions.shape[:1] + positions.shape[2:], dtype=self._index_dtype, device=self.device)
        inside = torch.ones_like(index, dtype=torch.bool)
        for axis in range(3):
            coordinate = positions[:, axis]
            size = shapes[:, axis].view(view)
            inside &= (coordinate >= 0) & (coordinate <= size - 1)
            index.mul_(size).add_(coordinate.to(self._index_dtype))
        index.add_(self._offsets[subject].to(self.device, self._index_dtype).view(view))
        index.masked_fill_(~inside, self._outside)
        return self._volumes[index]

    def _contrast_on_source(self, positions: torch.Tensor, params: dict) -> torch.Tensor:
        """Each sample's mixture drawn on its subject's own grid, then read linearly at ``positions``: (B, 1, *S).

        Beyond the subject's volume the image holds the background mean (blended with the
        volume's edge within one voxel of it): the mixture is read relative to that mean.
        """
        images = []
        for b, s in enumerate(params["subject"].tolist()):
            start = int(self._offsets[s])
            shape = tuple(self.subjects[s].shape)
            codes = self._volumes[start : start + int(np.prod(shape))].view(1, *shape) & (N_CODES - 1)
            contrast = params["contrast"].select(slice(b, b + 1))
            values = seed_value_tables(params["subclasses"][b : b + 1]).clamp_(max=N_SEED_VALUES - 1)  # codes of meta-labels > 4 never occur
            mixture = apply_contrast(codes, contrast, relabel=values)
            del codes
            background = float(contrast.means[0, 0])
            images.append(read_at(mixture.sub_(background), positions[b : b + 1]).add_(background))
        return torch.cat(images)

    def _choose_subclasses(self, packed: torch.Tensor, subclasses: torch.Tensor) -> torch.Tensor:
        """Seed value of each voxel for the K that its sample drew for the voxel's meta-label: (B, *S) uint8."""
        batch = len(packed)
        tables = seed_value_tables(subclasses).to(self.device)
        lookup = (packed & (N_CODES - 1)).to(self._index_dtype) + N_CODES * torch.arange(batch, device=self.device, dtype=self._index_dtype).view(
            batch, 1, 1, 1
        )
        return tables.flatten()[lookup]


def up_to_stage(params: dict, stage: str) -> dict:
    """``params`` with every stage after ``stage`` switched off (None): the sample as it is after ``stage``.

    ``stage`` is one of :data:`STAGES`, or ``"subclasses"`` for the seed map before any stage.
    """
    if stage != "subclasses" and stage not in STAGES:
        raise ValueError(f"stage must be 'subclasses' or one of {STAGES}, got {stage!r}")
    kept = STAGES[: STAGES.index(stage) + 1] if stage in STAGES else ()
    return {key: None if key in STAGES and key not in kept else value for key, value in params.items()}


def params_to_json(params: dict) -> list[dict]:
    """Split batched parameters into one JSON-ready dictionary per sample (floats kept exactly)."""
    batch = len(params["subject"])

    def item(value, b):
        if value is None:
            return None
        if isinstance(value, StageDraw):
            return value.to_json(b)
        return value[b].tolist()

    return [{key: item(value, b) for key, value in params.items()} for b in range(batch)]


def params_from_json(samples: Sequence[dict]) -> dict:
    """Batched parameters from per-sample dictionaries (inverse of :func:`params_to_json`)."""

    def stack(stage, values):
        if values[0] is None:
            return None
        if stage in STAGE_DRAWS:
            return STAGE_DRAWS[stage].from_json(values)
        return torch.from_numpy(np.asarray(values))  # float64, int64 or bool, exactly as written

    return {stage: stack(stage, [sample[stage] for sample in samples]) for stage in samples[0]}


def seed_value_tables(subclasses: torch.Tensor) -> torch.Tensor:
    """(B, 256) uint8: the seed value of every voxel code, given each sample's K per meta-label (B, N_META_LABELS)."""
    codes = torch.arange(N_CODES)
    meta = codes & 7
    subclass = [torch.zeros_like(codes)] + [(codes >> shift) & ((1 << width) - 1) for shift, width in SUBCLASS_BITS.values()]
    subclass = torch.stack(subclass)  # (MAX_PACKED_SUBCLASSES, 256): j for K = 1..4
    k = torch.cat([torch.ones(len(subclasses), 1, dtype=torch.int64), subclasses.long()], dim=1)  # meta 0 takes K=1
    chosen_k = k.gather(1, meta.clamp(max=N_META_LABELS).expand(len(subclasses), -1))  # (B, 256)
    j = subclass.gather(0, chosen_k - 1)
    return torch.where(meta > 0, 10 * meta + j, 0).to(torch.uint8)


def _pack(subject: SynthSubject, max_k: int) -> np.ndarray:
    """int16 code of every voxel: meta-label (bits 0-2), subclass j for each K (see SUBCLASS_BITS), label (bits 8-10)."""
    packed = subject.labels.astype(np.int16) << LABEL_SHIFT
    packed |= compose_seed_map(subject.seeds, {m: 1 for m in subject.seeds.meta_labels}) // 10
    for k in range(2, max_k + 1):
        shift, _ = SUBCLASS_BITS[k]
        packed |= (compose_seed_map(subject.seeds, {m: k for m in subject.seeds.meta_labels}) % 10).astype(np.int16) << shift
    return packed
