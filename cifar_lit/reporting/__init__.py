"""Reporting: TensorBoard event reading (``events``), the reference table (``tables``), plots, sweep and seed
summaries, confusion matrices and what a run prints on the console."""
