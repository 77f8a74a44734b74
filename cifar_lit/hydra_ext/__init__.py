"""What the project adds to Hydra: instantiation with clean user errors (``instantiate``), the entry points' runner
(``runner``), and Hydra callbacks for run folders, sweep summaries and DDP inside multiruns."""
