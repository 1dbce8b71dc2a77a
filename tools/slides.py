"""A short slide deck for a workshop's introduction, made from fss's own figures.

One HTML file, figures embedded, one slide per screen (scroll or page down; nothing to install):
the domain shift that fetal scans meet, domain randomization on one page (a label map, images the
generator draws from it, and a Wu atlas scan segmented by the packaged synthetic-only model), what
synthetic training buys (the packaged models' shipped evaluation, ``evaluation/metrics.tsv``) and the
workshop's notebooks. Every number on a slide is computed here from those files.

Run: python tools/slides.py --out outputs/slides   (about a minute on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from nibabel.affines import voxel_sizes

from fss import datasets, pretrained
from fss.evaluation import drops_from_clean
from fss.infer import segment
from fss.io import normalize_intensities
from fss.paths import atomic_path
from fss.seeds import write_seeds
from fss.stress import stress_views
from fss.synth import Generator, load_subjects, preset
from fss.viz import plot_dice_against_severity, plot_domain_randomization, plot_stresses

ROOT = Path(__file__).resolve().parents[1]
STYLE = """
html { scroll-snap-type: y mandatory; }
body { margin: 0; font-family: sans-serif; }
section { height: 100vh; scroll-snap-align: start; display: flex; flex-direction: column; align-items: center;
          justify-content: center; padding: 0 4vw; box-sizing: border-box; }
h1 { font-size: 2.6em; margin: 0.2em; } h2 { font-size: 2em; margin: 0.2em; }
p { font-size: 1.35em; max-width: 60em; text-align: center; }
img { max-height: 72vh; max-width: 92vw; }
"""


def figure_data(figure: Figure) -> str:
    """The figure as a base64 PNG (150 dpi), and closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=150)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def write_deck(slides: list[tuple[str, str, Figure | None]], path: str | Path, title: str) -> Path:
    """Write ``slides`` (heading, text, figure or None) as one HTML page, a screen per slide, figures embedded (atomically)."""
    sections = []
    for index, (heading, text, figure) in enumerate(slides):
        tag = "h1" if index == 0 else "h2"
        picture = f'<img alt="{html.escape(heading)}" src="data:image/png;base64,{figure_data(figure)}">' if figure is not None else ""
        sections.append(f"<section><{tag}>{html.escape(heading)}</{tag}>{picture}<p>{html.escape(text)}</p></section>")
    page = f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>\n'
    page += "<body>\n" + "\n".join(sections) + "\n</body></html>\n"
    with atomic_path(path, overwrite=True) as temporary:
        temporary.write_text(page, encoding="utf-8")
    return Path(path)


def middle_axial(volume: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The axial slice of ``volume`` through the middle of ``labels``' extent."""
    return volume[:, :, int(np.argwhere(labels > 0)[:, 2].mean())]


def domain_randomization(seed: int) -> Figure:
    """The one-page picture: the CRL label map at 30 weeks, six images the ``reference`` generator draws from it, and
    the Wu atlas at 30 weeks (another population) segmented by the packaged synthetic-only model (both RAS, their own
    grids)."""
    [record] = datasets.fetch_crl_atlas(ages=[30])
    with tempfile.TemporaryDirectory() as folder:
        write_seeds(record.image, record.labels, folder, "crl30", "crl30_dseg", record.convention, seed=seed)
        generator = Generator(load_subjects(folder), preset("reference"), device="cpu")
        samples = [generator.sample(1, seed=seed + i) for i in range(6)]
        labels = generator.subjects[0].labels  # the atlas's own, before any deformation
    z = int(np.argwhere(labels > 0)[:, 2].mean())
    synthetic = [sample.image[0, 0, :, :, z].numpy().copy() for sample in samples]
    [wu] = datasets.fetch_wu_atlas(ages=[30])
    scan = nib.as_closest_canonical(nib.load(wu.image))
    segmentation, _ = segment(scan, pretrained.load(pretrained.DEFAULT), device="cpu")
    predicted = np.asarray(segmentation.dataobj)
    return plot_domain_randomization(
        labels[:, :, z], synthetic, middle_axial(np.asarray(scan.dataobj), predicted), middle_axial(predicted, predicted)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "slides", help="folder for slides.html")
    parser.add_argument("--seed", type=int, default=0, help="of the seed maps, the synthetic images and the shifts")
    args = parser.parse_args(argv)
    [crl] = datasets.fetch_crl_atlas(ages=[31])
    image = nib.load(crl.image)
    clean = normalize_intensities(np.asarray(image.dataobj, dtype=np.float32)).numpy()
    shifts = stress_views(clean, voxel_sizes(image.affine), ["contrast", "low_field", "motion", "noise"], seed=args.seed)
    shipped = pd.read_csv(ROOT / "evaluation" / "metrics.tsv", sep="\t")
    start, stressed = drops_from_clean(shipped)
    contrast = stressed.xs(("contrast", 3), level=("stress", "severity"))
    buys = (
        f"Under the strongest contrast change the real-trained model falls from {start['fss-real-cpu']:.2f} to "
        f"{contrast['fss-real-cpu']:.2f} mean Dice; the synthetic-only model from {start['fss-synth-cpu']:.2f} to "
        f"{contrast['fss-synth-cpu']:.2f}. On the contrast it was trained on, the real-trained model stays ahead."
    )
    slides = [
        ("FetalSynthSeg: segmenting fetal brain MRI by training on synthetic images", "A workshop with the fss notebooks.", None),
        (
            "The same brain, as other scanners and sequences show it",
            "Contrast, field strength, motion and noise change from site to site: a network trained on one site's scans fails "
            "on the next. One CRL atlas scan under four simulated shifts, at three severities.",
            plot_stresses(shifts),
        ),
        (
            "Domain randomization in one picture",
            "The generator draws endlessly different images from one label map, the labels always aligned. A network that "
            "learns from them alone has never seen a real scan, and segments one from another population.",
            domain_randomization(args.seed),
        ),
        (
            "What synthetic training buys",
            buys + " The packaged models' evaluation: four held-out CRL ages, eight shifts at three severities.",
            plot_dice_against_severity(start, stressed),
        ),
        (
            "Today",
            "00 setup, 01 seeds (intensity subclasses), 02 the generator, 03 training on synthetic images, "
            "04 evaluation under domain shift, 05 your own scan, 06 experiments with several seeds.",
            None,
        ),
    ]
    path = write_deck(slides, args.out / "slides.html", "FetalSynthSeg workshop")
    print(f"{len(slides)} slides: {path}")


if __name__ == "__main__":
    main()
