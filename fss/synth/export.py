"""Writing synthetic samples to disk: image / label NIfTI pairs and one JSON of parameters each."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from tqdm.auto import tqdm

from fss.io import save_nifti
from fss.paths import atomic_path
from fss.synth.draws import derive_seed
from fss.synth.generator import Generator, params_to_records


def sample_paths(out: str | os.PathLike, index: int) -> dict[str, Path]:
    """Files of sample ``index``: ``sub-synthNNNN/anat/sub-synthNNNN_{T2w.nii.gz,dseg.nii.gz,params.json}``."""
    subject = f"sub-synth{index:04d}"
    folder = Path(out) / subject / "anat"
    return {
        "image": folder / f"{subject}_T2w.nii.gz",
        "labels": folder / f"{subject}_dseg.nii.gz",
        "params": folder / f"{subject}_params.json",
    }


def write_samples(
    generator: Generator, n: int, out: str | os.PathLike, seed: int = 0, overwrite: bool = False, progress: bool = True
) -> list[dict[str, Path]]:
    """Draw ``n`` samples and write them under ``out``, with the configuration as ``synth_config.yaml``.

    Sample i is drawn alone from ``derive_seed(seed, i)``, so it does not depend on ``n``;
    its JSON holds that seed, the subject's name and every drawn parameter, which
    :func:`fss.synth.generator.params_from_records` turns back into a replayable batch.

    A samples folder holds one set: with ``overwrite`` the samples already there are removed
    first (and only they: ``sub-synthNNNN/anat/`` files of the names above), so that the folder
    never mixes sets; without it, any existing sample is an error.

    Raises
    ------
    ValueError
        If ``n`` is not positive.
    FileExistsError
        If ``out`` holds samples and ``overwrite`` is false (checked before anything is written).
    """
    if n < 1:
        raise ValueError(f"the number of samples must be at least 1, got {n}")
    out = Path(out)
    previous = existing_samples(out)
    if previous and not overwrite:
        raise FileExistsError(
            f"{out} holds {len(previous)} samples (first: {previous[0]['image'].parent.parent.name}); "
            "pass --overwrite to replace the whole set, or choose another folder"
        )
    for paths in previous:
        for path in paths.values():
            path.unlink(missing_ok=True)
        for folder in (paths["image"].parent, paths["image"].parent.parent):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    generator.config.save(out / "synth_config.yaml", overwrite=True)
    planned = [sample_paths(out, i) for i in range(n)]
    for i, paths in enumerate(tqdm(planned, desc="synth", unit="sample", disable=not progress)):
        sample_seed = derive_seed(seed, i)
        sample = generator.sample(1, sample_seed)
        subject = int(sample.params["subject"][0])
        affine = generator.output_affine(subject)
        save_nifti(sample.image[0, 0].cpu().numpy(), affine, paths["image"])
        save_nifti(sample.labels[0].cpu().numpy().astype("int16"), affine, paths["labels"])
        record = {"seed": sample_seed, "subject": generator.subjects[subject].name, "params": params_to_records(sample.params)[0]}
        with atomic_path(paths["params"]) as temporary:
            temporary.write_text(json.dumps(record, indent=1))
    return planned


def existing_samples(out: str | os.PathLike) -> list[dict[str, Path]]:
    """The files of the samples in ``out`` (see :func:`sample_paths`), those that exist, by index."""
    found = []
    for folder in sorted(Path(out).glob("sub-synth*")):
        if not re.fullmatch(r"sub-synth\d{4,}", folder.name):
            continue
        paths = {key: path for key, path in sample_paths(out, int(folder.name.removeprefix("sub-synth"))).items() if path.exists()}
        if paths:
            found.append(paths)
    return found
