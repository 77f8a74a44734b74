"""``JobSummary``, one multirun job's headline numbers: the type the sweep summary (``sweeps``) builds and its
tables and figures (``grid``, ``seeds``, ``plots``) read, in a module of its own so that none of them imports another
for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class JobSummary:
    """One multirun job: its overrides and headline numbers (None when not logged)."""

    job: str
    overrides: list[str]
    tags: list[str] = field(default_factory=list)
    best_val_acc: float | None = None
    test_acc: float | None = None
    test_acc_tta: float | None = None  # with test-time augmentation (``tta``), else None
    epochs: int | None = None
    wall_time_s: float | None = None
    val_acc: dict[int, float] = field(default_factory=dict)
    error: str | None = None
    pruned: str | None = None  # why an Optuna search's pruner stopped the job early (its PRUNED.txt), else None

    @property
    def val_acc_curve(self) -> list[float]:
        """val/acc of each epoch, in epoch order."""
        return [self.val_acc[epoch] for epoch in sorted(self.val_acc)]

    @property
    def status(self) -> str:
        if self.error:
            return "failed" if self.error.startswith("failed") else "no events"
        return "pruned" if self.pruned else "ok"
