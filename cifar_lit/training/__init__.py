"""Training machinery: the LightningModule (``module``), its optimizer and scheduler (``optim``, ``muon``),
test-time augmentation (``tta``), checkpoints (``checkpoint``), resuming (``resume``) and process settings
(``process``)."""
