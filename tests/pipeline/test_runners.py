"""The curation graph built for Dataflow, Flink and Spark (nothing submitted): it is a valid
portable pipeline, and the accelerator resource hint sits on the scoring step only."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from corpora import config_for, plan_for

from jestflow.pipeline.graph import build

GPU = "type:nvidia-l4;count:1;install-nvidia-driver"
ACCELERATOR = "beam:resources:accelerator:v1"
DATAFLOW = [
    "--runner=DataflowRunner",
    "--project=my-project",
    "--region=us-central1",
    "--temp_location=gs://my-bucket/tmp",
    "--sdk_container_image=us-docker.pkg.dev/my-project/jestflow/worker:0.1.0",
    f"--dataflow_service_options=worker_accelerator={GPU}",
    # Beam's own switch for building without submitting: with the GCS client installed (the gcs
    # extra), validating the options otherwise asks GCS about the bucket and, offline, retries
    # for minutes.
    "--dry_run=True",
]
PORTABLE = ["--environment_type=DOCKER", "--environment_config=jestflow-worker:0.1.0"]


def graph(args, config):
    pipeline = beam.Pipeline(options=PipelineOptions(args))
    build(pipeline, config, plan_for(config))
    proto = pipeline.to_runner_api()
    # Valid: the portable form reads back into a pipeline.
    beam.Pipeline.from_runner_api(proto, pipeline.runner, pipeline.options)
    return pipeline, proto


def hinted(proto) -> dict[str, bool]:
    """Every leaf step's name → whether its environment asks for the accelerator."""
    environments = proto.components.environments
    return {
        t.unique_name: ACCELERATOR in environments[t.environment_id].resource_hints
        for t in proto.components.transforms.values()
        if not t.subtransforms and t.environment_id
    }


def test_dataflow_graph_puts_the_accelerator_on_the_scoring_step_only(noisy, tmp_path):
    config = config_for(noisy, tmp_path / "out", accelerator=GPU, cache=str(tmp_path / "cache"))
    pipeline, proto = graph(DATAFLOW, config)
    assert type(pipeline.runner).__name__ == "DataflowRunner"
    steps = hinted(proto)
    scoring = {name for name, gpu in steps.items() if gpu}
    assert scoring and all(name.startswith("Score/") for name in scoring)
    assert any("RunInference" in name for name in scoring)
    top = {name.split("/")[0] for name in steps}
    assert {
        "Read",
        "Deduplicate",
        "Cache parts",
        "Cut chunks",
        "Score",
        "Spill scores",
        "Select",
        "Write shards",
        "Write stats, run.json, _SUCCESS",
    } <= top
    hint = next(
        env.resource_hints[ACCELERATOR]
        for env in proto.components.environments.values()
        if ACCELERATOR in env.resource_hints
    )
    assert hint == GPU.encode()
    assert not (tmp_path / "out").exists()  # building the graph touched nothing


def test_no_accelerator_hint_unless_asked(noisy, tmp_path):
    _, proto = graph(DATAFLOW, config_for(noisy, tmp_path / "out"))
    assert not any(hinted(proto).values())
    assert "Score/BeamML_RunInference" in {
        t.unique_name for t in proto.components.transforms.values()
    }


@pytest.mark.parametrize(
    "runner",
    [
        ["--runner=FlinkRunner", "--flink_master=localhost:8081"],
        ["--runner=SparkRunner", "--spark_master_url=spark://localhost:7077"],
        ["--runner=PortableRunner", "--job_endpoint=localhost:8099"],
    ],
)
def test_the_same_graph_builds_for_portable_runners(noisy, tmp_path, runner):
    pipeline, proto = graph([*runner, *PORTABLE], config_for(noisy, tmp_path / "out"))
    assert type(pipeline.runner).__name__ == runner[0].split("=")[1]
    assert "Score/BeamML_RunInference" in {
        t.unique_name for t in proto.components.transforms.values()
    }


def test_a_classic_template_is_refused_before_anything_happens(noisy, tmp_path, monkeypatch):
    from jestflow.pipeline.job import FLEX_TEMPLATE, run_curation
    from jestflow.transforms.errors import JestflowError

    monkeypatch.delenv(FLEX_TEMPLATE, raising=False)
    args = (*DATAFLOW, "--template_location=gs://my-bucket/templates/curate")
    with pytest.raises(JestflowError, match="use the Flex Template"):
        run_curation(config_for(noisy, tmp_path / "out", beam_args=args))
    assert not (tmp_path / "out").exists()
