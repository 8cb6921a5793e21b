"""Training: the one training core (`core.py`) for the teacher (`fit.py`) and the online student
(`loop.py`), its run folder (`checkpoints.py`), the shard loader and online selection. Never
imports Beam or `pipeline`."""
