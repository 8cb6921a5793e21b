"""`jestflow demo`: the demo corpora (`corpora.py`: LM text and text pairs from Python's own
docstrings), the image–text scenes (`scenes.py`), the tasks and options (`config.py`), and the
whole loop on them (`run.py`)."""

from ..transforms.lazy import exports

__all__, __getattr__, __dir__ = exports(
    __name__,
    {
        "DemoConfig": "config",
        "DemoDataConfig": "corpora",
        "SceneConfig": "scenes",
        "make_corpora": "corpora",
        "make_scenes": "scenes",
        "run_demo": "run",
    },
)
