"""`jestflow demo`: the demo corpora (`corpora.py`: LM text and text pairs from Python's own
docstrings), the image–text scenes (`scenes.py`), and the whole loop on them (`run.py`)."""

from .corpora import DemoDataConfig, make_corpora
from .run import DemoConfig, run_demo
from .scenes import SceneConfig, make_scenes

__all__ = ["DemoConfig", "DemoDataConfig", "SceneConfig", "make_corpora", "make_scenes", "run_demo"]
