"""SynthSeg-style synthetic images from seed maps: configuration, stages, generator, datasets.

Stages, in order, each a ``draw_*`` / ``apply_*`` pair that can be switched off:
spatial (:mod:`~fss.synth.spatial`), contrast (:mod:`~fss.synth.contrast`), gamma
(:mod:`~fss.synth.gamma`), bias (:mod:`~fss.synth.bias`), residual motion after
super-resolution (:mod:`~fss.synth.motion`, off unless configured), resolution and noise
(:mod:`~fss.synth.resolution`), then normalisation and flip.
"""

from fss.synth.config import GeneratorConfig, load_config, preset
from fss.synth.generator import STAGES, Generator, Sample, SynthSubject, load_subjects, up_to_stage

__all__ = ["STAGES", "Generator", "GeneratorConfig", "Sample", "SynthSubject", "load_config", "load_subjects", "preset", "up_to_stage"]
