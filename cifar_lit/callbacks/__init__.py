"""Lightning callbacks that ``conf/callbacks`` names: interruption checkpoints, RNG states, weight EMA, the per-epoch
log line, run provenance (``run.json``) and the TensorBoard extras."""
