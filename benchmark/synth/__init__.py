"""Synthetic Sewer-ML: label rows resampled from the real subset files, procedurally rendered
pipe-interior frames with class-specific local evidence and per-class pixel masks."""
from benchmark.synth.generate import (GENERATOR_VERSION, SynthConfig, generate, image_rng, load_masks,
                                      plan, render_row)
from benchmark.synth.labels import sample_split_labels
from benchmark.synth.render import render

__all__ = ["GENERATOR_VERSION", "SynthConfig", "generate", "image_rng", "load_masks", "plan", "render",
           "render_row", "sample_split_labels"]
