"""Weight EMA that the test measures too.

Lightning's ``EMAWeightAveraging`` puts the averaged weights in the model for validation and in each checkpoint's
``state_dict``, keeping the trained weights under ``current_model_state``. When ``trainer.test(ckpt_path=...)``
follows ``fit``, the callback still holds its average and restores the *trained* weights from
``current_model_state``, so the test (and its test-time augmentation) measured the trained weights while validation
and ``cifar_lit.eval`` of the same checkpoint measured the average. Here the test swaps the average in as
validation does. (A test in a new process has no average to swap: the module loads ``state_dict``, the average.)
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging


class EMAWeightAveragingWithTest(EMAWeightAveraging):
    """``EMAWeightAveraging`` whose test after ``fit`` evaluates the averaged weights, as validation does."""

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._average_model is not None:
            self._swap_models(pl_module)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._average_model is not None:
            self._swap_models(pl_module)
