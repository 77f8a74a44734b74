"""The block network: Blocks (``block``), the optional whitening stem (``stem``), the classifier head
(``classifier``) and the whole network (``model``)."""
