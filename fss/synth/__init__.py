"""SynthSeg-style synthetic images from seed maps: configuration, stages, generator, datasets.

Stages, in order, each a ``draw_*`` / ``apply_*`` pair that can be switched off:
spatial (:mod:`~fss.synth.spatial`), contrast (:mod:`~fss.synth.contrast`), gamma
(:mod:`~fss.synth.gamma`), bias (:mod:`~fss.synth.bias`), residual motion after
super-resolution (:mod:`~fss.synth.motion`, off unless configured), resolution and noise
(:mod:`~fss.synth.resolution`), a brain mask (:mod:`~fss.synth.mask`, off unless configured),
flip, then normalisation. :mod:`~fss.synth.stages` registers them.
"""

from fss.synth.config import GeneratorConfig, load_config, preset
from fss.synth.generator import Generator, Sample, SynthSubject, load_subjects, up_to_stage
from fss.synth.stages import STAGES

__all__ = ["STAGES", "Generator", "GeneratorConfig", "Sample", "SynthSubject", "load_config", "load_subjects", "preset", "up_to_stage"]
