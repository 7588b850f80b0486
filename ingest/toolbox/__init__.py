"""The neuroscience toolbox's pure computations (lens, decoding, coding, views, gain, population
coding, probes, anatomy, alignment, scaling): tensors and frames in, frames out, no store."""
