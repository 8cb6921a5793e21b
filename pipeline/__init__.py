"""The Beam curation job: `config.py` (what is run), `job.py` (prepare the run, run it),
`graph.py` (`build`: the graph from its steps, one module each: `read_step`, `dedup_step`,
`score_step`, `select_step`, `write_step`, `finish_step`). Never imports `trainer`, `cli` or
`demo`."""
