"""The data path: where CIFAR-10 comes from (``source``), its decoded cache (``cache``), batch augmentation
(``augment``), the loaders that serve batches (``loaders``), the LightningDataModule (``datamodule``) and images for
a trained checkpoint (``inference``)."""
