"""`jestflow demo`: the demo corpora (`corpora.py`: LM text and text pairs from Python's own
docstrings), the image–text scenes (`scenes.py`), the tasks and options (`config.py`), and the
whole loop on them (`run.py`)."""

from .config import DemoConfig
from .corpora import DemoDataConfig, make_corpora
from .run import run_demo
from .scenes import SceneConfig, make_scenes

__all__ = ["DemoConfig", "DemoDataConfig", "SceneConfig", "make_corpora", "make_scenes", "run_demo"]
