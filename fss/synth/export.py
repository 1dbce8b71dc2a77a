"""Writing synthetic samples to disk: image / label NIfTI pairs and one JSON of parameters each."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tqdm.auto import tqdm

from fss.io import atomic_path, save_nifti
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


def write_samples(generator: Generator, n: int, out: str | os.PathLike, seed: int = 0, overwrite: bool = False, progress: bool = True) -> list[dict[str, Path]]:
    """Draw ``n`` samples and write them under ``out``, with the configuration as ``synth_config.yaml``.

    Sample i is drawn alone from ``derive_seed(seed, i)``, so it does not depend on ``n``;
    its JSON holds that seed, the subject's name and every drawn parameter, which
    :func:`fss.synth.generator.params_from_records` turns back into a replayable batch.

    Raises
    ------
    FileExistsError
        If any output exists and ``overwrite`` is false (checked before anything is written).
    """
    out = Path(out)
    planned = [sample_paths(out, i) for i in range(n)]
    existing = [path for paths in planned for path in paths.values() if path.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{len(existing)} output files exist (first: {existing[0]}); pass --overwrite to replace them")
    generator.config.save(out / "synth_config.yaml", overwrite=True)
    for i, paths in enumerate(tqdm(planned, desc="synth", unit="sample", disable=not progress)):
        sample_seed = derive_seed(seed, i)
        sample = generator.sample(1, sample_seed)
        subject = int(sample.params["subject"][0])
        affine = generator.output_affine(subject)
        save_nifti(sample.image[0, 0].cpu().numpy(), affine, paths["image"], overwrite=overwrite)
        save_nifti(sample.labels[0].cpu().numpy().astype("int16"), affine, paths["labels"], overwrite=overwrite)
        record = {"seed": sample_seed, "subject": generator.subjects[subject].name, "params": params_to_records(sample.params)[0]}
        with atomic_path(paths["params"], overwrite=overwrite) as temporary:
            temporary.write_text(json.dumps(record, indent=1))
    return planned
