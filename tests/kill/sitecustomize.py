"""Kills a process group at a point the test chooses (the slow kill-and-resume tests).

A test puts this folder first on PYTHONPATH and sets JESTFLOW_KILL_AFTER=MODULE:NAME:N; every
Python process it starts then wraps NAME in MODULE (a function, or a Class.method) so that the
N-th call to return in that process sends SIGKILL to its whole process group: the job, its
Beam workers, and nothing of the test's (the test starts the job in a session of its own).
"""

import os

_spec = os.environ.get("JESTFLOW_KILL_AFTER")
if _spec:
    import functools
    import importlib
    import signal

    _module, _name, _n = _spec.split(":")
    _owner = importlib.import_module(_module)
    *_path, _attribute = _name.split(".")
    for _part in _path:
        _owner = getattr(_owner, _part)
    _original = getattr(_owner, _attribute)
    _calls = [0]

    @functools.wraps(_original)
    def _killing(*args, **kwargs):
        result = _original(*args, **kwargs)
        _calls[0] += 1
        if _calls[0] == int(_n):
            os.killpg(os.getpgid(0), signal.SIGKILL)
        return result

    setattr(_owner, _attribute, _killing)
