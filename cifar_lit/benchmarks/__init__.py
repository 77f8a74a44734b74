"""The timed paths behind ``python -m cifar_lit.bench``: the project's and the reference training loops (``paths``)
and model-only timings (``kernels``)."""
