"""An interactive explorer of the generator for notebooks: a slider per stage and a "new sample" button."""

from __future__ import annotations

import dataclasses

import matplotlib.pyplot as plt

from fss.synth.config import GeneratorConfig, range_options
from fss.synth.generator import Generator
from fss.viz import plot_planes

SLIDERS = {
    # (stage, option): (description, minimum, maximum, step); a description's {fields} are the stage's settings
    ("spatial", "max_rotation"): ("rotation (deg)", 0.0, 45.0, 1.0),
    ("spatial", "nonlin_std_max"): ("deformation (vox)", 0.0, 8.0, 0.5),
    ("contrast", "std_max"): ("within-label std", 0.0, 50.0, 1.0),
    ("gamma", "gamma_std"): ("gamma std", 0.0, 0.5, 0.01),
    ("bias", "bf_std_max"): ("bias std", 0.0, 0.5, 0.01),
    ("resolution", "max_resampling_iso_res"): ("worst resolution ({units})", 0.5, 4.0, 0.1),
    ("resolution", "noise_std_max"): ("noise std", 0.0, 40.0, 1.0),
}


def slider_description(config: GeneratorConfig, stage: str, option: str) -> str:
    """The label of the slider for ``option`` of ``stage``, in the units ``config`` gives it (mm or voxels for resolutions)."""
    return SLIDERS[(stage, option)][0].format(**dataclasses.asdict(getattr(config, stage)))


def configured(config: GeneratorConfig, values: dict[tuple[str, str], float]) -> GeneratorConfig:
    """``config`` with the explorer's slider values put in; a slider on a range's upper end takes the lower end
    down with it where needed."""
    stages = {}
    for (stage, option), value in values.items():
        section = stages.get(stage, getattr(config, stage))
        changes = {option: value}
        lower = {upper: lower for lower, upper in range_options(section).items()}.get(option)
        if lower is not None:
            changes[lower] = min(getattr(section, lower), value)
        stages[stage] = dataclasses.replace(section, **changes)
    return dataclasses.replace(config, **stages)


class Explorer:
    """Sliders for each stage's main parameter and a button that draws a new sample.

    Parameters
    ----------
    generator : Generator
        Its subjects and device are used; its configuration gives the starting values.
    seed : int
        First sample's seed; the button moves to the next one.
    """

    def __init__(self, generator: Generator, seed: int = 0):
        import ipywidgets as widgets

        self.generator = generator
        self.seed = seed
        self.sliders = {}
        for (stage, option), (_, low, high, step) in SLIDERS.items():
            section = getattr(generator.config, stage)
            start = getattr(section, option)
            self.sliders[(stage, option)] = widgets.FloatSlider(
                value=float(start),
                min=low,
                max=high,
                step=step,
                description=slider_description(generator.config, stage, option),
                continuous_update=False,
                style={"description_width": "initial"},
            )
        self.button = widgets.Button(description="new sample")
        self.output = widgets.Output()
        for slider in self.sliders.values():
            slider.observe(lambda change: self.draw(), names="value")
        self.button.on_click(lambda _: self.draw(next_seed=True))
        self.widget = widgets.VBox([widgets.HBox([widgets.VBox(list(self.sliders.values())), self.button]), self.output])

    def draw(self, next_seed: bool = False) -> None:
        """Draw a sample with the current slider values and show it."""
        if next_seed:
            self.seed += 1
        config = configured(self.generator.config, {key: slider.value for key, slider in self.sliders.items()})
        sample = self.generator.with_config(config).sample(1, seed=self.seed)
        with self.output:
            self.output.clear_output(wait=True)
            plot_planes(sample.image[0, 0].cpu().numpy(), title=f"seed {self.seed}")
            plt.show()

    def show(self):
        """The widget, for display; draws the first sample."""
        self.draw()
        return self.widget
