"""The ``fss`` command line: thin wrappers over the package's functions (``fss segment`` over :func:`fss.batch.segment_batch`).

Each command imports what it needs when it runs, so that ``fss --help`` and ``fss COMMAND --help``
answer at once instead of after torch, scikit-learn and matplotlib have loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import platform
import shlex
import sys
from collections.abc import Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fss import __version__, pretrained
from fss.bids import claim_output_place
from fss.labels import CONVENTIONS
from fss.paths import atomic_path, nifti_stem, refuse_to_overwrite_inputs

DATASETS = ("crl", "wu", "reference")


class UsageError(ValueError):
    """The command's arguments cannot work (exit code 2), as opposed to an input that failed (exit code 1)."""


@contextlib.contextmanager
def _arguments() -> Iterator[None]:
    """A ValueError in the block is about the command's arguments or options: a :class:`UsageError`."""
    try:
        yield
    except UsageError:
        raise
    except ValueError as error:
        raise UsageError(str(error)) from error


def _fetch(args: argparse.Namespace) -> int:
    from fss import datasets

    if args.all:
        paths = datasets.fetch_all(args.data_dir, progress=True)
        print(f"{len(paths)} files verified in {datasets.data_home(args.data_dir)}")
        names = DATASETS
    else:
        names = args.names
    for name in set(names) & set(datasets.FAMILIES):
        unknown = sorted(set(args.ages or ()) - set(datasets.FAMILIES[name].ages))
        if unknown:
            ages = datasets.FAMILIES[name].ages
            raise UsageError(f"--ages: the {name} atlas has no ages {unknown} (it has {min(ages)}-{max(ages)} weeks)")
    records = []
    for name in names:
        if name == "reference":
            records.append(datasets.fetch_reference_example(args.data_dir, progress=not args.all))
        else:
            fetch = datasets.fetch_crl_atlas if name == "crl" else datasets.fetch_wu_atlas
            records.extend(fetch(args.ages, args.data_dir, progress=not args.all))
    if not args.all:
        for record in records:
            print(f"{record.name:12s} labels {record.labels}" + (f"\n{'':12s} image  {record.image}" if record.image else ""))
    print("\nThese data are not ours; use them on their terms and cite them:")
    seen = set()
    for record in records:
        if record.family not in seen:
            seen.add(record.family)
            print(f"- {record.family}: {record.licence}\n  Cite: {record.citation}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from fss import datasets
    from fss.device import describe_device

    packages = ("torch", "numpy", "scipy", "nibabel", "nilearn", "scikit-learn", "pooch", "matplotlib")
    print(f"fss {__version__} on Python {platform.python_version()} ({platform.platform()})")
    for name in packages:
        try:
            print(f"  {name:10s} {version(name)}")
        except PackageNotFoundError:
            print(f"  {name:10s} not installed")
    print(f"device     {describe_device('auto')}")
    models = [f"{name} (default)" if name == pretrained.DEFAULT else name for name in pretrained.available()]
    print(f"models     {', '.join(models) or 'none packaged'} (fss segment --model NAME)")
    home = datasets.data_home()
    present = sum((home / key).exists() for key in datasets.registry())
    source = f"${datasets.ENV_VAR}" if os.environ.get(datasets.ENV_VAR) else "per-user cache"
    print(f"data       {home} ({source}; {present} of {len(datasets.registry())} registered files present)")
    return 0


def _seeds(args: argparse.Namespace) -> int:
    import warnings

    from tqdm.auto import tqdm

    from fss.bids import find_t2w_images
    from fss.seeds import write_seeds

    if args.bids and (args.image or args.labels):
        raise UsageError("give a BIDS folder or --image/--labels, not both")
    if args.labels_from and not args.bids:
        raise UsageError("--labels-from applies to a BIDS folder")
    if args.bids:
        found = find_t2w_images(args.bids, args.labels_from)
        jobs = [(item.image, item.labels, item.subject, nifti_stem(item.labels)) for item in found if item.labels]
        where = f"in {Path(args.bids) / args.labels_from}" if args.labels_from else "beside it (--labels-from to read a derivatives folder)"
        for item in found:
            print(f"{item.image}: labels {item.labels}" if item.labels else f"{item.image}: no label map found {where}, skipped")
        root = args.out or args.bids
    else:
        if not (args.image and args.labels and args.subject and args.out):
            raise UsageError("without a BIDS folder, give --image, --labels, --subject and --out")
        jobs = [(args.image, args.labels, args.subject, nifti_stem(args.labels))]
        root = args.out
    with _arguments():
        claim_output_place(Path(root) / "derivatives" / "seeds")
    failed = 0
    for image, labels, subject, stem in tqdm(jobs, desc="seeds", unit="subject"):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                written = write_seeds(image, labels, root, subject, stem, args.convention, args.max_subclasses, args.seed, args.overwrite)
        except (OSError, ValueError) as error:
            failed += 1
            tqdm.write(f"{subject}: failed: {error}")
            continue
        for warning in caught:
            tqdm.write(f"{subject}: warning: {warning.message}")
        tqdm.write(f"{subject}: {len(written)} files written" if written else f"{subject}: seeds exist, skipped (--overwrite to redo)")
    print(f"seeds of {len(jobs) - failed} of {len(jobs)} subjects under {Path(root) / 'derivatives' / 'seeds'}")
    return 1 if failed else 0


def _synth(args: argparse.Namespace) -> int:
    from fss.device import describe_device, resolve_device
    from fss.synth import Generator, load_config, load_subjects
    from fss.synth.export import write_samples

    with _arguments():
        if args.n < 1:
            raise ValueError(f"--n {args.n}: the number of samples must be at least 1")
        if args.seed < 0:
            raise ValueError(f"--seed {args.seed}: the seed must not be negative")
        config = load_config(args.config)
        if args.output_shape:
            config = dataclasses.replace(config, output_shape=tuple(args.output_shape))
        device = resolve_device(args.device)
        claim_output_place(args.out)
    generator = Generator(load_subjects(args.seeds, args.subjects), config, device=device)
    _, kept = write_samples(generator, args.n, args.out, seed=args.seed, overwrite=args.overwrite)
    already = f" ({kept} of them kept from an earlier run of the same set)" if kept else ""
    print(f"{args.n} samples{already} from {len(generator.subjects)} subjects on {describe_device(generator.device)} in {args.out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from fss.device import resolve_device
    from fss.run_control import TrainingDiverged, TrainingInterrupted
    from fss.train import train
    from fss.training_config import TrainConfig

    with _arguments():
        config = TrainConfig.load(args.config, args.set)
        resolve_device(config.device)
        if args.until is not None and args.until < 1:
            raise ValueError(f"--until {args.until}: give an iteration of at least 1")
    out = Path(args.out or Path("outputs") / "training" / Path(args.config).stem)
    with _arguments():
        claim_output_place(out)
    try:
        metrics = train(config, out, resume=args.resume, overwrite=args.overwrite, until=args.until, command=args.command_line)
    except TrainingInterrupted as stopped:
        print(
            f"interrupted after iteration {stopped.iteration}; state saved: continue with "
            f"fss train --config {args.config} --out {out} --resume" + "".join(f" --set {s}" for s in args.set),
            file=sys.stderr,
        )
        return 130
    except TrainingDiverged as diverged:
        print(f"fss train: error: {diverged}", file=sys.stderr)
        return 1
    if metrics:
        print(
            f"{metrics['iterations']} iterations in {metrics['seconds']:.0f} s; validation Dice {metrics['final_mean_dice']:.3f} "
            f"(best {metrics['best_mean_dice']:.3f}); checkpoints and curves in {out}"
        )
    return 0


def _experiment(args: argparse.Namespace) -> int:
    from fss.experiments import dice_per_seed, load_experiment, plan, run_experiment, select, spread_over_seeds, status

    with _arguments():
        experiment = load_experiment(args.file)
        setting = args.setting or next(iter(experiment.settings))
        runs = plan(experiment, setting)
        select(runs, args.only)
        claim_output_place(args.root)
    print(f"{experiment.name} ({setting}): {experiment.description}")
    for run in runs:
        print(f"  {run.id:40s} {status(run, args.root):12s} {run.folder(args.root)}")
    if args.dry_run:
        return 0
    table = run_experiment(experiment, setting, args.root, only=args.only, kernel=args.kernel)
    failed = [run.id for run in runs if args.only in (None, run.id, run.arm) and status(run, args.root) == "failed"]
    folder = experiment.folder(setting, args.root)
    gathered = f"0 runs gathered in {folder / 'results.tsv'}"
    if len(table):
        print("\nmean Dice of the tissues over the seeds of each arm:")
        print(spread_over_seeds(dice_per_seed(table)).round(3).to_string())
        gathered = f"{table.run.nunique()} runs gathered in {folder / 'results.tsv'} (figure: {folder / 'results.png'})"
    print(gathered + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def _label_files(path: Path) -> dict[str, Path]:
    if path.is_dir():  # hidden files (e.g. the temporary file of an interrupted write) are not label maps
        return {p.relative_to(path).as_posix(): p for p in sorted([*path.rglob("*.nii.gz"), *path.rglob("*.nii")]) if not p.name.startswith(".")}
    return {path.name: path}


def _check_table_file(output: str) -> None:
    """Refuse an ``-o`` that is not the name of a ``.tsv`` file: a folder (existing, or written with a trailing slash),
    another suffix (the table is tab-separated), or something that is not a regular file (``/dev/null``)."""
    path = Path(output)
    if output.endswith(("/", os.sep)) or path.is_dir():
        raise ValueError(f"-o {output}: a folder; name the table's file, e.g. {path / 'metrics.tsv'}")
    if path.suffix.lower() != ".tsv":
        raise ValueError(f"-o {output}: the table is written as tab-separated values; give it a .tsv name, e.g. {path.stem or 'metrics'}.tsv")
    if path.exists() and not path.is_file():
        raise ValueError(f"-o {output}: not a regular file")


def _evaluate(args: argparse.Namespace) -> int:
    import warnings

    import pandas as pd

    from fss.metrics import score_label_maps, summarize, with_tissue_means

    prediction, reference = Path(args.prediction), Path(args.reference)
    for path in (prediction, reference):
        if not path.exists():
            raise ValueError(f"{path}: no such file or folder")
    predictions, references = _label_files(prediction), _label_files(reference)
    if prediction.is_dir() or reference.is_dir():  # folders pair by name only
        pairs = [(name, predictions[name], references[name]) for name in predictions if name in references]
        unmatched = sorted(set(predictions) ^ set(references))
        if unmatched:
            print(f"not evaluated (no counterpart): {', '.join(unmatched[:5])}{' ...' if len(unmatched) > 5 else ''}")
    else:
        pairs = [(prediction.name, prediction, reference)]
    if not pairs:
        raise ValueError(f"no label maps of the same name in {args.prediction} and {args.reference}")
    with _arguments():
        refuse_to_overwrite_inputs([args.output], [*predictions.values(), *references.values()])
        _check_table_file(args.output)
        claim_output_place(Path(args.output).parent)  # a file: its folder is the output place
    tables, failed = [], []
    for name, predicted, expected in pairs:  # one pair that cannot be evaluated does not stop the others
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                tables.append(score_label_maps([predicted], [expected], names=[name], convention=args.convention))
        except (ValueError, OSError) as error:
            print(f"{name}: failed: {error}")
            failed.append(name)
            continue
        for warning in caught:
            print(f"{name}: warning: {warning.message}")
    if not tables:
        print(f"none of the {len(pairs)} pair(s) could be evaluated; nothing written")
        return 1
    table = with_tissue_means(pd.concat(tables, ignore_index=True))
    with atomic_path(args.output, args.overwrite) as temporary:
        table.to_csv(temporary, sep="\t", index=False)
    print(f"{len(tables)} image(s); mean per tissue, and over the tissues (HD95 in mm):")
    print(summarize(table).round(3).to_string())
    print(f"all values: {args.output}" + (f"; {len(failed)} of {len(pairs)} pair(s) failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def _segment_model(args: argparse.Namespace):
    """The model of ``--checkpoint`` or ``--model``, else the packaged default, on ``--device``, with ``--window`` and ``--overlap``
    checked against it.

    Returns (model, metadata), the device, and the model's name (the packaged name or the checkpoint as given).
    """
    from fss.checkpoint import load_checkpoint, paths, working_spacing
    from fss.device import resolve_device

    with _arguments():
        device = resolve_device(args.device)
    if args.checkpoint:
        if args.checkpoint in pretrained.available() and not paths(args.checkpoint)[0].exists():
            raise UsageError(f"--checkpoint {args.checkpoint}: no such checkpoint; {args.checkpoint} is a packaged model: --model {args.checkpoint}")
        model = load_checkpoint(args.checkpoint, device)
    else:
        name = args.model or pretrained.DEFAULT
        try:
            model = pretrained.load(name, device)
        except KeyError as error:
            if args.model:
                raise UsageError(f"--model {args.model}: {error.args[0]}") from error
            raise ValueError(f"{error.args[0]}: give --checkpoint, a model trained with fss train") from error
    model_name = args.checkpoint or args.model or pretrained.DEFAULT
    working_spacing(model[1], model_name)
    multiple = model[0].multiple
    if not 0 <= args.overlap < 1:
        raise UsageError(f"--overlap {args.overlap}: give a fraction in [0, 1)")
    if args.window is not None and (args.window < multiple or args.window % multiple):
        raise UsageError(f"--window {args.window}: give a positive multiple of {multiple} (the model's)")
    return model, device, model_name


def _segment(args: argparse.Namespace) -> int:
    from fss.batch import Extras, plan, segment_planned

    with _arguments():
        planned = plan(args.inputs, args.output, Extras(args.probabilities, args.qc))  # before the model loads: a refusal answers at once
    model, device, model_name = _segment_model(args)
    options = {"tta": args.tta, "window": args.window, "overlap": args.overlap}
    with _arguments():
        result = segment_planned(planned, model, model_name=model_name, device=device, options=options, overwrite=args.overwrite)
    kept, failed = len(result.kept), len(result.failed)
    print(
        f"{len(result.rows) - kept} of {len(result.rows) + failed} images segmented"
        + (f", {kept} kept from before" if kept else "")
        + (f"; volumes in {result.table}" if result.rows else "")
        + (f"; {failed} failed" if failed else "")
    )
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fss`` and its subcommands (long: one statement per option, nothing else)."""
    parser = argparse.ArgumentParser(prog="fss", description="FetalSynthSeg: fetal brain tissue segmentation trained on synthetic images.")
    parser.add_argument("--version", action="version", version=f"fss {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fetch = commands.add_parser("fetch", help="download (or find in $FSS_DATA) and verify public data")
    which = fetch.add_mutually_exclusive_group(required=True)
    which.add_argument("names", nargs="*", default=[], metavar="NAME", help=f"datasets: {', '.join(DATASETS)}")
    which.add_argument("--all", action="store_true", help="every registered file")
    fetch.add_argument("--ages", type=int, nargs="+", help="gestational ages in weeks (atlases only)")
    fetch.add_argument("--data-dir", help="data folder (default: $FSS_DATA, else a per-user cache)")
    fetch.set_defaults(run=_fetch)

    seeds = commands.add_parser("seeds", help="intensity-subclass seed maps from images and label maps")
    seeds.add_argument("bids", nargs="?", help="BIDS folder: every sub-*/[ses-*/]anat/*_T2w.nii.gz with a *_dseg.nii.gz label map")
    seeds.add_argument(
        "--labels-from",
        metavar="FOLDER",
        help="where the label maps are, relative to the BIDS folder, e.g. derivatives/manual "
        "(default: beside each image in anat/); never a folder of fss's own segmentations",
    )
    seeds.add_argument("--image", help="one T2w image (instead of a BIDS folder)")
    seeds.add_argument("--labels", help="its label map")
    seeds.add_argument("--subject", help="its subject label")
    seeds.add_argument("--out", help="dataset root for derivatives/seeds/ (default: the BIDS folder)")
    seeds.add_argument("--convention", choices=sorted(CONVENTIONS), default="feta", help="label convention of the label maps")
    seeds.add_argument("--max-subclasses", type=int, default=4, help="largest number of subclasses K (default 4)")
    seeds.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    seeds.add_argument("--overwrite", action="store_true", help="redo seeds that exist")
    seeds.set_defaults(run=_seeds)

    synth = commands.add_parser("synth", help="synthetic image / label pairs from seeds")
    synth.add_argument("--seeds", required=True, help="dataset root holding derivatives/seeds/ (from fss seeds or notebook 01)")
    synth.add_argument("--n", type=int, default=20, help="number of samples (default 20)")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--config", default="reference", help="preset (reference, literal, fetal) or YAML file (default reference)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--subjects", nargs="+", help="subjects to use (default: all with seeds)")
    synth.add_argument("--output-shape", type=int, nargs=3, metavar=("D", "H", "W"), help="output size in voxels (default: the input's)")
    synth.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    synth.add_argument("--overwrite", action="store_true", help="replace existing samples")
    synth.set_defaults(run=_synth)

    training = commands.add_parser("train", help="train a U-Net (also under torchrun for several GPUs)")
    training.add_argument(
        "--config",
        default="cpu-demo",
        help="a packaged configuration (cpu-demo, cpu-model-coarse, cpu-model, cpu-model-real, gpu) or a YAML file (default cpu-demo)",
    )
    training.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an option, e.g. --set iterations=100")
    training.add_argument("--out", help="output folder (default outputs/training/<config>)")
    start = training.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue the run in --out")
    start.add_argument("--overwrite", action="store_true", help="start afresh in a folder that holds a run")
    training.add_argument("--until", type=int, help="stop after this iteration (resume later)")
    training.set_defaults(run=_train)

    segmentation = commands.add_parser("segment", help="segment T2w scans (files, or BIDS folders) into FeTA tissues")
    segmentation.add_argument("inputs", nargs="+", metavar="INPUT", help="NIfTI files or BIDS folders")
    segmentation.add_argument("-o", "--output", required=True, help="output file (one input) or folder")
    model_choice = segmentation.add_mutually_exclusive_group()
    model_choice.add_argument("--model", metavar="NAME", help=f"packaged model, listed by fss info (default {pretrained.DEFAULT})")
    model_choice.add_argument("--checkpoint", help="trained model (path without suffix, or its .safetensors), e.g. a run's best")
    segmentation.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    segmentation.add_argument("--tta", action="store_true", help="average with the left-right flipped prediction")
    segmentation.add_argument("--qc", action="store_true", help="write a three-plane overlay PNG per image")
    segmentation.add_argument(
        "--probabilities",
        action="store_true",
        help="also write the class probabilities on the input grid (<name>_probseg.nii.gz: 4-D, one volume per FeTA class 0-7)",
    )
    segmentation.add_argument("--window", type=int, help="side of the sliding window in working voxels (default: whole volume when small enough)")
    segmentation.add_argument("--overlap", type=float, default=0.5, help="overlap of neighbouring windows, in [0, 1) (default 0.5)")
    segmentation.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    segmentation.set_defaults(run=_segment)

    evaluation = commands.add_parser("evaluate", help="Dice, HD95 and volume similarity of label maps against references")
    evaluation.add_argument("prediction", help="a label map, or a folder of them")
    evaluation.add_argument("reference", help="the reference label map, or a folder with the same file names")
    evaluation.add_argument("-o", "--output", default="metrics.tsv", help="table of every value (default metrics.tsv)")
    evaluation.add_argument(
        "--convention",
        choices=sorted(CONVENTIONS),
        default="feta",
        help="label convention of the references (predictions of fss are FeTA; default feta)",
    )
    evaluation.add_argument("--overwrite", action="store_true", help="replace an existing table")
    evaluation.set_defaults(run=_evaluate)

    experiment = commands.add_parser("experiment", help="run a grid of notebook runs (train, evaluate) described by a YAML file")
    experiment.add_argument("file", help="experiment file, e.g. experiments/subclasses.yaml")
    experiment.add_argument("--setting", help="which of its settings (default: the first, e.g. cpu)")
    experiment.add_argument("--dry-run", action="store_true", help="list the runs and their status, run nothing")
    experiment.add_argument("--only", metavar="RUN", help="run only this run id or arm")
    experiment.add_argument("--root", default="outputs/experiments", help="results folder (default outputs/experiments)")
    experiment.add_argument("--kernel", help="Jupyter kernel to run the notebooks with (default: the notebooks' own)")
    experiment.set_defaults(run=_experiment)

    info = commands.add_parser("info", help="versions, compute device and data location")
    info.set_defaults(run=_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fss``; returns the exit code: 0 all done, 1 an input failed (the others done), 2 a usage error, 130 interrupted.

    Every error reaches the user as one line; ``--debug`` shows the traceback of an unexpected one.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["fss", *(sys.argv[1:] if argv is None else argv)])
    if args.command == "fetch" and not args.all:
        unknown = sorted(set(args.names) - set(DATASETS))
        if unknown or not args.names:
            parser.error(f"fetch: name one or more of {', '.join(DATASETS)}, or --all" + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    try:
        return args.run(args)
    except UsageError as error:
        print(f"fss {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as error:
        print(f"fss {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"fss {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug or an unforeseen input: one line, the traceback on request
        if args.debug:
            raise
        print(f"fss {args.command}: unexpected error: {type(error).__name__}: {error} (re-run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
