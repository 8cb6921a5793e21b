"""The Beam curation job (`job.py` prepares and runs it, `graph.py` builds it from named steps),
and on top of everything the command line (`cli.py`, `cli_options.py`) and the demo (`demo.py`,
`demo_data.py`), which also use `trainer`."""
