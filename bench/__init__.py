"""The benchmark harness: what a TapWeight global step costs over plain continued pretraining.

``python -m bench step`` times, in one process with warm-up and interleaved repetitions, a
plain continued-pretraining step (level I, uniform weights), a full TapWeight global step for
each hypergradient method (fd, jvp, neumann, cg), and the same step through the Betty
reference engine (tapweight.method.betty); it reports medians, ratios to the plain step and
peak memory. ``python -m bench data`` measures molecule rendering and image loading
throughput, with and without the image cache; ``python -m bench corpus`` a corpus from file to
training (10k–1M molecules). ``python -m bench exactness`` measures the
hypergradient against autograd through the unrolled steps in every optimizer / precision /
schedule / unroll setting. Results: docs/benchmarks.md.

For regression tasks, ``python -m bench baselines`` scores the training mean and random
forests (Morgan fingerprints, RDKit descriptors) on tapweight's own loader and split, and
``python -m bench curvature`` prints the largest stable SGD step of a squared loss on the
backbone's features beside the configured learning rates. Results: docs/results-cpu.md, "Why
regression has its own learning rates".
"""
