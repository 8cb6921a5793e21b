"""deploy/: the worker image's Dockerfile, the launch script and the Flex Template, checked
without docker, gcloud or the network. The script runs with --dry-run and its commands are
parsed back; the template's parameters are checked against the real `jestflow curate`."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import click
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from jestflow.cli.curate import curate

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
SCRIPT = DEPLOY / "dataflow.sh"
METADATA = DEPLOY / "flex_template" / "metadata.json"
L4 = "type:nvidia-l4;count:1;install-nvidia-driver"
IMAGE = "us-central1-docker.pkg.dev/proj/jestflow/jestflow:1"
# The Python each base image ships, as its publisher documents it. A new BASE_IMAGE goes here.
BASE_IMAGE_PYTHON = {"pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime": "3.11"}
LOCK = ROOT / "requirements.lock"
# curate options that mean nothing on Dataflow and so are no template parameters.
LOCAL_ONLY = {"workers"}


# ---- the Dockerfile ---------------------------------------------------------------------------


def locked_beam() -> str:
    """The apache-beam version requirements.lock pins: the one place that names it."""
    (version,) = re.findall(r"^apache-beam==(\S+)$", LOCK.read_text(), flags=re.M)
    return version


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line[:-1] if line.endswith("\\") else line
        if not line.endswith("\\"):
            lines.append(current)
            current = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1].strip()) for ln in lines]


def arg_defaults() -> dict[str, str]:
    return dict(a.split("=", 1) for op, a in instructions() if op == "ARG" and "=" in a)


def resolve(text: str) -> str:
    """`text` with the build arguments deploy/dataflow.sh build gives: the defaults and the lock's
    Beam (BEAM_VERSION has no default)."""
    args = {**arg_defaults(), "BEAM_VERSION": locked_beam()}
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], text)


def stages() -> dict[str, str]:
    """Named build stages → their (resolved) image."""
    named = {}
    for op, a in instructions():
        if op == "FROM" and " AS " in a.upper():
            image, name = re.split(r"\s+AS\s+", a, flags=re.I)
            named[name] = resolve(image)
    return named


def final_stage() -> list[tuple[str, str]]:
    ops = instructions()
    last_from = max(i for i, (op, _) in enumerate(ops) if op == "FROM")
    return ops[last_from:]


def copies() -> list[tuple[str | None, list[str], str]]:
    """The final stage's COPY instructions as (from, sources, destination)."""
    found = []
    for op, a in final_stage():
        if op == "COPY":
            words = a.split()
            source = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
            paths = [w for w in words if not w.startswith("--")]
            found.append((source, paths[:-1], paths[-1]))
    return found


def test_the_entrypoint_is_the_beam_boot_program():
    entrypoints = [a for op, a in final_stage() if op == "ENTRYPOINT"]
    assert len(entrypoints) == 1
    assert json.loads(entrypoints[0]) == ["/opt/apache/beam/boot"]


def test_the_beam_sdk_is_copied_from_the_sdk_image_of_our_beam_and_python():
    sdk = [src for src, paths, dst in copies() if paths == ["/opt/apache/beam"]]
    assert len(sdk) == 1 and sdk[0] is not None
    src = sdk[0]
    image = stages().get(src, src)
    match = re.fullmatch(r"apache/beam_python(\d+\.\d+)_sdk:(\S+)", image)
    assert match, image
    python, beam = match.groups()
    assert beam == locked_beam() and "BEAM_VERSION" not in arg_defaults()  # no second pin
    declared = arg_defaults()["PYTHON_VERSION"]
    assert python == declared
    assert BASE_IMAGE_PYTHON[arg_defaults()["BASE_IMAGE"]] == declared
    # The build itself checks the base image's Python against PYTHON_VERSION.
    runs = " ".join(a for op, a in final_stage() if op == "RUN")
    assert "sys.version_info" in runs and "${PYTHON_VERSION}" in runs
    # ... and BEAM_VERSION against the lock it copies.
    assert 'grep -qx "apache-beam==${BEAM_VERSION}" requirements.lock' in runs
    assert any(op == "COPY" and "requirements.lock" in a.split() for op, a in final_stage())


def test_the_template_launcher_is_for_the_same_python():
    launchers = [s for s, paths, _ in copies() if paths[0].endswith("/python_template_launcher")]
    assert len(launchers) == 1
    image = stages().get(launchers[0], launchers[0])
    python = arg_defaults()["PYTHON_VERSION"].replace(".", "")
    assert f"dataflow-templates-base/python{python}-template-launcher-base" in image


def test_jestflow_is_installed_from_the_source_with_the_gcs_extra():
    workdir, pyproject_dir, copied = "/", None, set()
    for op, a in final_stage():
        if op == "WORKDIR":
            workdir = os.path.join(workdir, a)
        elif op == "COPY" and "--from=" not in a:
            *paths, dst = a.split()
            dst = os.path.normpath(os.path.join(workdir, dst))
            copied |= {(p.rstrip("/"), dst) for p in paths}
            pyproject_dir = dst if "pyproject.toml" in paths else pyproject_dir
        elif op == "RUN" and "pip install" in a:
            installs = re.findall(r'"?([^\s"]+)\[([^\]]+)\]"?', resolve(a))
            targets = {os.path.normpath(os.path.join(workdir, t)): x for t, x in installs}
            assert pyproject_dir in targets, (pyproject_dir, installs)
            assert "gcs" in targets[pyproject_dir].split(",")
            assert '"apache-beam[gcp]==${BEAM_VERSION}"' in a
            break
    else:
        pytest.fail("no pip install in the final stage")
    pyproject = (ROOT / "pyproject.toml").read_text()
    package_dir = pyproject.split("[tool.setuptools.package-dir]", 1)[1].split("\n[", 1)[0]
    folders = re.findall(r'=\s*"([^"]+)"', package_dir)
    assert folders
    for folder in folders:  # every subpackage is in the build context
        assert (folder, os.path.join(pyproject_dir, folder)) in copied, folder


def test_the_flex_template_main_file_is_copied_from_the_repository():
    env = dict(a.split("=", 1) for op, a in final_stage() if op == "ENV" and "=" in a)
    main_file = env["FLEX_TEMPLATE_PYTHON_PY_FILE"]
    sources = [
        (paths, dst) for src, paths, dst in copies() if src is None and main_file.startswith(dst)
    ]
    assert len(sources) == 1, sources
    (source,), dst = sources[0]
    assert source.endswith("/") and dst.endswith("/")
    assert (ROOT / source / main_file[len(dst) :]).is_file()


def test_the_dockerignore_keeps_what_the_image_copies():
    rules = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert "*" in rules  # everything else stays out (.venv, build/, .git)
    allowed = [r[1:].rstrip("/") for r in rules if r.startswith("!")]
    for src, paths, _ in copies():
        for path in paths if src is None else []:
            path = path.rstrip("/")
            assert any(path == a or path.startswith(a + "/") for a in allowed), path


# ---- deploy/dataflow.sh -----------------------------------------------------------------------


def script(*args, **env):
    """Run deploy/dataflow.sh without any JESTFLOW_* setting from the caller's environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JESTFLOW")}
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def commands(*args, **env) -> list[list[str]]:
    """The commands `--dry-run` prints, parsed back into argument lists."""
    run = script("--dry-run", *args, **env)
    assert run.returncode == 0, run.stderr
    return [shlex.split(line) for line in run.stdout.splitlines()]


SETTINGS = ["--project", "proj", "--region", "us-central1", "--temp-location", "gs://b/tmp"]
CURATE = ["gs://b/pool/*.jsonl", "-o", "gs://b/out", "--teacher", "gs://b/t", "--task", "lm"]
CURATE += ["--keep", "0.2"]


def launched(*args, **env) -> tuple[click.Context, dict]:
    """`run`'s one command, as curate parses it, and the Beam options it passes on."""
    (command,) = commands(*args, **env)
    assert command[:2] == ["jestflow", "curate"]
    ctx = curate.make_context("curate", command[2:])
    beam_args = [a for a in ctx.params["inputs"] if a.startswith("--")]
    return ctx, PipelineOptions(beam_args).get_all_options(drop_default=True)


def test_the_script_is_valid_bash():
    check = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_run_launches_curate_on_dataflow_with_the_image_and_a_gpu():
    ctx, beam = launched(*SETTINGS, "--image", IMAGE, "run", *CURATE)
    assert ctx.params["output"] == "gs://b/out" and ctx.params["keep"] == 0.2
    assert [a for a in ctx.params["inputs"] if not a.startswith("--")] == ["gs://b/pool/*.jsonl"]
    assert beam["runner"] == "DataflowRunner"
    assert beam["sdk_container_image"] == IMAGE
    assert beam["dataflow_service_options"] == [f"worker_accelerator={L4}"]
    assert (beam["project"], beam["region"]) == ("proj", "us-central1")
    assert beam["temp_location"] == "gs://b/tmp"
    assert beam["machine_type"] == "g2-standard-4"  # the machine family that carries an L4
    assert "use_runner_v2" in beam["experiments"]
    assert beam["max_num_workers"] == 4 and beam["disk_size_gb"] == 50


def test_run_takes_its_settings_from_the_environment_and_flags_win():
    env = {"JESTFLOW_PROJECT": "env-proj", "JESTFLOW_REGION": "europe-west4"}
    env |= {"JESTFLOW_TEMP_LOCATION": "gs://env/tmp", "JESTFLOW_IMAGE": IMAGE}
    _, beam = launched("run", *CURATE, **env)
    assert (beam["project"], beam["region"], beam["temp_location"]) == (
        "env-proj",
        "europe-west4",
        "gs://env/tmp",
    )
    _, beam = launched("--project", "flag-proj", "run", *CURATE, **env)
    assert beam["project"] == "flag-proj"


@pytest.mark.parametrize(
    ("missing", "env_var"),
    [
        ("--project", "JESTFLOW_PROJECT"),
        ("--region", "JESTFLOW_REGION"),
        ("--temp-location", "JESTFLOW_TEMP_LOCATION"),
        ("--image", "JESTFLOW_IMAGE"),
    ],
)
def test_run_without_a_required_setting_fails_naming_it(missing, env_var):
    given = dict(zip(SETTINGS[::2], SETTINGS[1::2], strict=True)) | {"--image": IMAGE}
    del given[missing]
    run = script("--dry-run", *[x for kv in given.items() for x in kv], "run", *CURATE)
    assert run.returncode != 0
    assert missing in run.stderr and env_var in run.stderr
    assert run.stdout == ""  # nothing launched


def test_a_temp_location_outside_gcs_is_refused():
    run = script("--dry-run", "--temp-location", "/tmp/x", "run", *CURATE)
    assert run.returncode != 0 and "gs://" in run.stderr


def test_right_fit_puts_the_gpu_on_the_scoring_step_only():
    ctx, beam = launched(*SETTINGS, "--image", IMAGE, "--right-fit", "run", *CURATE)
    assert ctx.params["accelerator"] == f"{L4};machine_type:g2-standard-4"
    assert "dataflow_service_options" not in beam  # right fitting excludes worker_accelerator
    assert beam["machine_type"] == "n2-standard-4"  # the other steps: CPU workers


@pytest.mark.parametrize(
    ("gpu", "machine_type"),
    [
        ("none", "n2-standard-4"),
        ("type:nvidia-tesla-t4;count:1;install-nvidia-driver", "n1-standard-4"),
        ("type:nvidia-tesla-a100;count:1;install-nvidia-driver", "a2-highgpu-1g"),
    ],
)
def test_the_machine_type_follows_the_gpu(gpu, machine_type):
    _, beam = launched(*SETTINGS, "--image", IMAGE, "--gpu", gpu, "run", *CURATE)
    assert beam["machine_type"] == machine_type
    expected = [] if gpu == "none" else [f"worker_accelerator={gpu}"]
    assert beam.get("dataflow_service_options", []) == expected


def test_several_gpus_per_worker_need_a_machine_type():
    gpu = "type:nvidia-l4;count:2;install-nvidia-driver"
    run = script("--dry-run", *SETTINGS, "--image", IMAGE, "--gpu", gpu, "run", *CURATE)
    assert run.returncode != 0 and "--machine-type" in run.stderr
    _, beam = launched(
        *SETTINGS,
        "--image",
        IMAGE,
        "--gpu",
        gpu,
        "--machine-type",
        "g2-standard-24",
        "run",
        *CURATE,
    )
    assert beam["machine_type"] == "g2-standard-24"


def test_build_uses_the_dockerfile_with_the_repository_as_context():
    ((*command, context),) = commands("--image", IMAGE, "build")
    assert command[:4] == ["env", "DOCKER_BUILDKIT=1", "docker", "build"]
    assert Path(command[command.index("-f") + 1]) == DOCKERFILE
    assert command[command.index("-t") + 1] == IMAGE
    assert Path(context) == ROOT
    assert command[command.index("--build-arg") + 1] == f"BEAM_VERSION={locked_beam()}"
    assert commands("--image", IMAGE, "push") == [["docker", "push", IMAGE]]


def test_template_builds_the_flex_template_with_the_image_and_metadata():
    template = "gs://b/templates/jestflow.json"
    ((*command,),) = commands(
        "--project", "proj", "--image", IMAGE, "--template", template, "template"
    )
    assert command[:5] == ["gcloud", "dataflow", "flex-template", "build", template]
    options = dict(a.split("=", 1) for a in command[5:])
    assert options["--image"] == IMAGE and options["--sdk-language"] == "PYTHON"
    assert Path(options["--metadata-file"]) == METADATA


def test_run_template_passes_parameters_the_flex_main_turns_into_curate():
    template = "gs://b/templates/jestflow.json"
    params = ["inputs=gs://b/a/*.jsonl,gs://b/c/*.parquet", "output=gs://b/out"]
    params += ["teacher=gs://b/t", "task=lm", "keep=0.2", "keep_field=kind,source"]
    ((*command,),) = commands(
        *SETTINGS, "--image", IMAGE, "--template", template, "run-template", *params
    )
    assert command[:4] == ["gcloud", "dataflow", "flex-template", "run"]
    options = dict(a.split("=", 1) for a in command[5:])
    assert options["--template-file-gcs-location"] == template
    assert options["--worker-machine-type"] == "g2-standard-4"
    delimited = options["--parameters"]
    assert delimited.startswith("^~^")  # values hold commas
    parameters = dict(p.split("=", 1) for p in delimited[3:].split("~"))
    assert parameters["sdk_container_image"] == IMAGE
    assert parameters["dataflow_service_options"] == f"worker_accelerator={L4}"
    assert parameters["inputs"] == "gs://b/a/*.jsonl,gs://b/c/*.parquet"
    names = {p["name"] for p in json.loads(METADATA.read_text())["parameters"]}
    assert {"inputs", "output", "teacher", "task", "keep", "keep_field"} <= names
    # What the launcher hands the template's main file becomes one curate command line.
    args = flex_main().curate_args([f"--{k}={v}" for k, v in parameters.items()])
    ctx = curate.make_context("curate", args[1:])
    assert ctx.params["keep_field"] == ("kind", "source") and ctx.params["task"] == "lm"
    assert f"--sdk_container_image={IMAGE}" in ctx.params["inputs"]


def test_help_and_bad_commands():
    run = script("--help")
    assert run.returncode == 0
    for command in ("build", "push", "run", "template", "run-template", "--dry-run"):
        assert command in run.stdout
    run = script("deploy")
    assert run.returncode != 0 and "unknown command 'deploy'" in run.stderr
    assert script().returncode != 0


# ---- the Flex Template ------------------------------------------------------------------------


def flex_main():
    spec = importlib.util.spec_from_file_location("flex_main", DEPLOY / "flex_template/main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def curate_options() -> dict[str, click.Option]:
    """curate's options by their long name with underscores, as template parameters spell them."""
    return {
        max(p.opts, key=len)[2:].replace("-", "_"): p
        for p in curate.params
        if isinstance(p, click.Option)
    }


def parameters() -> dict[str, dict]:
    meta = json.loads(METADATA.read_text())
    assert meta["name"] and meta["description"]
    names = [p["name"] for p in meta["parameters"]]
    assert len(names) == len(set(names))
    return {p["name"]: p for p in meta["parameters"]}


def test_every_template_parameter_is_a_curate_option():
    unknown = set(parameters()) - {"inputs"} - set(curate_options())
    assert not unknown, f"metadata.json parameters that curate does not know: {sorted(unknown)}"


def test_every_curate_option_is_a_template_parameter():
    missing = set(curate_options()) - LOCAL_ONLY - set(parameters())
    assert not missing, f"curate options missing from metadata.json: {sorted(missing)}"


def test_required_parameters_are_the_required_options():
    params, options = parameters(), curate_options()
    assert params["inputs"]["isOptional"] is False
    for name, option in options.items():
        if name in params:
            assert params[name]["isOptional"] is not option.required, name
            assert params[name]["label"] and params[name]["helpText"], name


def test_parameter_regexes_accept_what_curate_accepts():
    params, options = parameters(), curate_options()
    for name, param in params.items():
        patterns = [re.compile(r) for r in param.get("regexes", [])]
        option = options.get(name)
        if not patterns or option is None:
            continue
        valid = []  # for options of a constrained type: values curate takes
        if isinstance(option.type, click.Choice):
            valid = list(option.type.choices)
        elif option.is_flag:
            valid = ["true", "false"]
        elif isinstance(option.default, int | float) and not isinstance(option.default, bool):
            valid = [str(option.default)]
        for value in valid:
            assert all(p.search(value) for p in patterns), (name, value)
        if valid:
            assert not all(p.search("not a valid value") for p in patterns), name
    assert re.search(params["inputs"]["regexes"][0], "gs://b/a/*.jsonl,gs://b/c.parquet")


def test_the_flex_main_turns_launcher_arguments_into_one_curate_command():
    launcher = [
        "--runner=DataflowRunner",
        "--project=proj",
        "--region=us-central1",
        "--staging_location=gs://b/staging",
        "--temp_location=gs://b/tmp",
        "--template_location=gs://b/staging/template_launches/1/job_object",
        "--job_name=curate-1",
        f"--sdk_container_image={IMAGE}",
        f"--dataflow_service_options=worker_accelerator={L4}",
    ]
    template = ["--inputs=gs://b/a/*.jsonl, gs://b/c/*.parquet", "--output=gs://b/out"]
    template += ["--teacher=gs://b/t", "--task=lm", "--keep=0.2", "--super_batch=2048"]
    template += ["--keep-field=kind,source", "--large_model=false", "--overwrite=true", "--quiet"]
    template += ["--student="]  # a parameter left empty is not given
    args = flex_main().curate_args(launcher[:4] + template + launcher[4:])
    assert args == [
        "curate",
        "gs://b/a/*.jsonl",
        "gs://b/c/*.parquet",
        "--output=gs://b/out",
        "--teacher=gs://b/t",
        "--task=lm",
        "--keep=0.2",
        "--super-batch=2048",
        "--keep-field=kind",
        "--keep-field=source",
        "--overwrite",
        "--quiet",
        *launcher,
    ]
    ctx = curate.make_context("curate", args[1:])
    assert ctx.params["super_batch"] == 2048 and ctx.params["keep_field"] == ("kind", "source")
    assert ctx.params["overwrite"] and ctx.params["quiet"] and not ctx.params["large_model"]
    assert ctx.params["student"] is None
    assert set(launcher) <= set(ctx.params["inputs"])  # Beam's options, passed on unchanged


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--output=gs://b/out"], "no inputs"),
        (["--inputs=gs://b/a", "--overwrite=maybe"], "true or false"),
        (["--inputs=gs://b/a", "--seed"], "needs a value"),
        (["--inputs=gs://b/a", "gs://b/c"], "--name=value"),
    ],
)
def test_the_flex_main_refuses_bad_parameters(argv, message):
    main = flex_main()
    with pytest.raises(ValueError, match=message):
        main.curate_args(argv)
    with pytest.raises(SystemExit, match=message):
        main.main(argv)


def test_the_flex_main_runs_jestflow_with_the_translated_arguments(monkeypatch, capsys):
    main = flex_main()
    calls = []
    monkeypatch.setattr(main, "jestflow", lambda args, **kw: calls.append((args, kw)))
    monkeypatch.delenv(main.FLEX_TEMPLATE, raising=False)
    main.main(["--inputs=gs://b/a", "--task=lm", "--project=proj"])
    assert os.environ.pop(main.FLEX_TEMPLATE) == "1"  # curate may stage the job at launch
    assert calls == [
        (["curate", "gs://b/a", "--task=lm", "--project=proj"], {"prog_name": "jestflow"})
    ]
    assert "jestflow curate gs://b/a --task=lm --project=proj" in capsys.readouterr().err
