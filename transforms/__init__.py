"""The framework-free core. Rooms: `formats/` (the files jestflow writes and reads), `spill/`
(the job's shuffle through files), `dedup/` (what makes two examples copies), `selection/`
(JEST), `models/` (models, scoring, losses), `reporting/` (what people read). Beside them the
data itself: `records` (an example, parsing one record), `readers` (input files), `paths`
(fsspec), `hashing`, `memory`, `vocabulary`, `errors`. Never imports Beam, `pipeline`, `trainer`,
`cli` or `demo`."""
