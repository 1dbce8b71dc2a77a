"""Writing synthetic samples to disk: image / label NIfTI pairs and one JSON of parameters each."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from tqdm.auto import tqdm

from fss.io import save_nifti
from fss.paths import atomic_path, sole_writer
from fss.synth.config import GeneratorConfig
from fss.synth.draws import derive_seed
from fss.synth.generator import Generator, params_to_json


def sample_paths(out: str | os.PathLike, index: int) -> dict[str, Path]:
    """Files of sample ``index``: ``sub-synthNNNN/anat/sub-synthNNNN_{T2w.nii.gz,dseg.nii.gz,params.json}``."""
    subject = f"sub-synth{index:04d}"
    folder = Path(out) / subject / "anat"
    return {
        "image": folder / f"{subject}_T2w.nii.gz",
        "labels": folder / f"{subject}_dseg.nii.gz",
        "params": folder / f"{subject}_params.json",
    }


SET_FILE = "synth_set.json"


def write_samples(
    generator: Generator, n: int, out: str | os.PathLike, seed: int = 0, overwrite: bool = False, progress: bool = True
) -> tuple[list[dict[str, Path]], int]:
    """Draw samples 0 to ``n - 1`` and write those not yet finished under ``out``.

    Sample i is drawn alone from ``derive_seed(seed, i)``, so it does not depend on ``n``;
    its JSON holds that seed, the subject's name and every drawn parameter, which
    :func:`fss.synth.generator.params_from_json` turns back into a replayable batch.

    A samples folder holds one set, described by ``synth_config.yaml`` (the generator's
    configuration) and ``synth_set.json`` (the seed, the subjects' names and the device type, as
    CPU and GPU draws differ in their last bits). A re-run that asks for the same set keeps the
    finished samples (a sample is finished once its JSON, written last, exists) and draws the
    rest, so an interrupted run, or one asked for more samples, is continued. A folder that
    holds another set is refused, unless ``overwrite``: then its samples (and only they:
    ``sub-synthNNNN/anat/`` files of the names above) are removed first, so that the folder
    never mixes sets.

    Returns
    -------
    paths : list of dict
        The files of samples 0 to ``n - 1`` (:func:`sample_paths`).
    kept : int
        How many of them were already finished and were not drawn again.

    Raises
    ------
    ValueError
        If ``n`` is not positive or ``seed`` is negative.
    FileExistsError
        If ``out`` holds another set, or more samples than ``n``, and ``overwrite`` is false
        (checked before anything is written), or another process is writing samples there.
    """
    if n < 1:
        raise ValueError(f"the number of samples must be at least 1, got {n}")
    if seed < 0:
        raise ValueError(f"the seed must not be negative, got {seed}")
    out = Path(out)
    description = {"seed": seed, "subjects": [subject.name for subject in generator.subjects], "device": generator.device.type}
    with sole_writer(out, "writing samples"):
        previous = existing_samples(out)
        if previous and overwrite:
            _remove_samples(previous)
        elif previous:
            _check_same_set(out, previous, generator, description, n)
        generator.config.save(out / "synth_config.yaml", overwrite=True)
        with atomic_path(out / SET_FILE, overwrite=True) as temporary:
            temporary.write_text(json.dumps(description, indent=1))
        planned = [sample_paths(out, i) for i in range(n)]
        to_draw = [(i, paths) for i, paths in enumerate(planned) if not paths["params"].exists()]
        kept = n - len(to_draw)
        for i, paths in tqdm(to_draw, desc="synth", unit="sample", disable=not progress):
            sample_seed = derive_seed(seed, i)
            sample = generator.sample(1, sample_seed)
            subject = int(sample.params["subject"][0])
            affine = generator.output_affine(subject)
            save_nifti(sample.image[0, 0].cpu().numpy(), affine, paths["image"], overwrite=True)
            save_nifti(sample.labels[0].cpu().numpy().astype("int16"), affine, paths["labels"], overwrite=True)
            record = {"seed": sample_seed, "subject": generator.subjects[subject].name, "params": params_to_json(sample.params)[0]}
            with atomic_path(paths["params"]) as temporary:
                temporary.write_text(json.dumps(record, indent=1))
        return planned, kept


def _remove_samples(samples: list[dict[str, Path]]) -> None:
    for paths in samples:
        for path in paths.values():
            path.unlink(missing_ok=True)
        for folder in (paths["image"].parent, paths["image"].parent.parent):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def _check_same_set(out: Path, samples: list[dict[str, Path]], generator: Generator, description: dict, n: int) -> None:
    """Refuse to continue the samples in ``out`` unless they are the set asked for, with at most ``n`` samples."""
    first = samples[0]["image"].parent.parent.name
    hint = "pass --overwrite to replace the whole set, or choose another folder"
    set_path, config_path = out / SET_FILE, out / "synth_config.yaml"
    if not set_path.exists() or not config_path.exists():
        raise FileExistsError(f"{out} holds {len(samples)} samples (first: {first}) without {SET_FILE} and synth_config.yaml; {hint}")
    saved = json.loads(set_path.read_text())
    differences = [key for key in description if saved.get(key) != description[key]]
    if GeneratorConfig.load(config_path) != generator.config:
        differences.append("configuration")
    if differences:
        differ = "differ" if len(differences) > 1 else "differs"
        raise FileExistsError(f"{out} holds {len(samples)} samples (first: {first}) of another set: its {' and '.join(differences)} {differ}; {hint}")
    last = max(int(paths["image"].parent.parent.name.removeprefix("sub-synth")) for paths in samples)
    if last >= n:
        raise FileExistsError(f"{out} holds samples up to sub-synth{last:04d}, more than the {n} asked for; ask for at least {last + 1}, or {hint}")


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
