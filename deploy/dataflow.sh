#!/usr/bin/env bash
# Build the jestflow worker image and run `jestflow curate` on Dataflow (see deploy/README.md).
# `deploy/dataflow.sh --help` prints the usage; `--dry-run` prints each command, shell-quoted, one
# per line, instead of running it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEFAULT_GPU="type:nvidia-l4;count:1;install-nvidia-driver"

usage() {
  cat <<'EOF'
Usage: deploy/dataflow.sh [OPTIONS] COMMAND [ARGS...]

Commands:
  build           docker build the image (deploy/Dockerfile, context: the repository root) with
                  requirements.lock's apache-beam as BEAM_VERSION; ARGS go to docker build
                  (e.g. --build-arg JESTFLOW_EXTRAS=gcs,s3)
  push            docker push the image
  run             run `jestflow curate ARGS...` on Dataflow from this machine, e.g.
                    run 'gs://b/pool/*.jsonl' -o gs://b/curated --teacher gs://b/teacher \
                        --task lm --keep 0.2
                  other Beam options in ARGS (--name=value) override the ones added here
  template        build the Flex Template spec (gcloud dataflow flex-template build)
  run-template    launch the Flex Template (gcloud dataflow flex-template run); ARGS are
                  template parameters NAME=VALUE, e.g. inputs=gs://b/pool/*.jsonl
                  output=gs://b/curated teacher=gs://b/teacher task=lm keep=0.2

Options (or the environment variable in brackets):
  --project ID          Google Cloud project [JESTFLOW_PROJECT]
  --region REGION       Dataflow region, one with GPU capacity [JESTFLOW_REGION]
  --temp-location URL   gs:// folder for Dataflow's temporary files [JESTFLOW_TEMP_LOCATION]
  --image IMAGE         the image, e.g. REGION-docker.pkg.dev/PROJECT/REPO/jestflow:TAG
                        [JESTFLOW_IMAGE]
  --template URL        gs:// path of the Flex Template spec (.json) [JESTFLOW_TEMPLATE]
  --gpu SPEC|none       GPUs per worker [JESTFLOW_GPU, default type:nvidia-l4;count:1;install-nvidia-driver]
  --machine-type TYPE   machine type carrying the GPU [JESTFLOW_MACHINE_TYPE; default for count:1:
                        g2-standard-4 (L4), n1-standard-4 (T4), a2-highgpu-1g (A100);
                        n2-standard-4 with --gpu none]
  --right-fit           put the GPU on the scoring step only (curate --accelerator, Dataflow
                        right fitting) instead of on every worker
  --cpu-machine-type T  with --right-fit: the other steps' machine type [JESTFLOW_CPU_MACHINE_TYPE,
                        default n2-standard-4]
  --max-workers N       most workers [JESTFLOW_MAX_WORKERS, default 4]
  --disk-size-gb N      worker boot disk, which holds the image [JESTFLOW_DISK_SIZE_GB, default 50]
  --job-name NAME       run-template's job name [default jestflow-curate-DATE-TIME]
  --dry-run             print the commands instead of running them
  -h, --help            this help

`run` starts the command in $JESTFLOW [default: jestflow], which needs the gcs extra and
apache-beam[gcp] at requirements.lock's version, the image's (`make dataflow-setup`).
EOF
}

die() {
  echo "deploy/dataflow.sh: $*" >&2
  exit 2
}

# Run a command, or print it shell-quoted with --dry-run.
run_cmd() {
  if [[ $DRY_RUN == 1 ]]; then
    local line
    printf -v line '%q ' "$@"
    echo "${line% }"
  else
    "$@"
  fi
}

# require VALUE NAME FLAG ENV: stop with a clear error when a needed setting is missing.
require() {
  [[ -n $1 ]] || die "$COMMAND needs the $2: give $3 or set $4"
}

# The apache-beam version pinned in requirements.lock: the image's, and the launcher's.
locked_beam_version() {
  local version
  version=$(sed -n 's/^apache-beam==\([^ ]*\).*/\1/p' "$ROOT/requirements.lock")
  [[ -n $version ]] || die "no apache-beam==VERSION line in $ROOT/requirements.lock"
  echo "$version"
}

# The machine type that carries a GPU spec with count:1, when none is given.
default_machine_type() {
  local spec=$1
  if [[ $spec == none ]]; then
    echo n2-standard-4
    return
  fi
  [[ $spec =~ (^|;)count:1(;|$) ]] ||
    die "--gpu $spec: give --machine-type for more than one GPU per worker"
  case $spec in
    *type:nvidia-l4*) echo g2-standard-4 ;;
    *type:nvidia-tesla-t4*) echo n1-standard-4 ;;
    *type:nvidia-tesla-a100*) echo a2-highgpu-1g ;;
    *type:nvidia-a100-80gb*) echo a2-ultragpu-1g ;;
    *) die "--gpu $spec: no default machine type for this GPU, give --machine-type" ;;
  esac
}

PROJECT="${JESTFLOW_PROJECT:-}"
REGION="${JESTFLOW_REGION:-}"
TEMP_LOCATION="${JESTFLOW_TEMP_LOCATION:-}"
IMAGE="${JESTFLOW_IMAGE:-}"
TEMPLATE="${JESTFLOW_TEMPLATE:-}"
GPU="${JESTFLOW_GPU:-$DEFAULT_GPU}"
MACHINE_TYPE="${JESTFLOW_MACHINE_TYPE:-}"
CPU_MACHINE_TYPE="${JESTFLOW_CPU_MACHINE_TYPE:-n2-standard-4}"
MAX_WORKERS="${JESTFLOW_MAX_WORKERS:-4}"
DISK_SIZE_GB="${JESTFLOW_DISK_SIZE_GB:-50}"
JOB_NAME=""
RIGHT_FIT=0
DRY_RUN=0
COMMAND=""
ARGS=()

while [[ $# -gt 0 ]]; do
  case $1 in
    --project | --region | --temp-location | --image | --template | --gpu | --machine-type | \
      --cpu-machine-type | --max-workers | --disk-size-gb | --job-name)
      [[ $# -ge 2 ]] || die "$1 needs a value"
      case $1 in
        --project) PROJECT=$2 ;;
        --region) REGION=$2 ;;
        --temp-location) TEMP_LOCATION=$2 ;;
        --image) IMAGE=$2 ;;
        --template) TEMPLATE=$2 ;;
        --gpu) GPU=$2 ;;
        --machine-type) MACHINE_TYPE=$2 ;;
        --cpu-machine-type) CPU_MACHINE_TYPE=$2 ;;
        --max-workers) MAX_WORKERS=$2 ;;
        --disk-size-gb) DISK_SIZE_GB=$2 ;;
        --job-name) JOB_NAME=$2 ;;
      esac
      shift 2
      ;;
    --right-fit) RIGHT_FIT=1 && shift ;;
    --dry-run) DRY_RUN=1 && shift ;;
    -h | --help) usage && exit 0 ;;
    --) shift && ARGS+=("$@") && break ;;
    *)
      if [[ -z $COMMAND ]]; then
        COMMAND=$1
      else
        ARGS+=("$1")
      fi
      shift
      ;;
  esac
done

[[ -n $COMMAND ]] || { usage >&2 && exit 2; }
[[ -z $TEMP_LOCATION || $TEMP_LOCATION == gs://* ]] ||
  die "--temp-location must be a gs:// URL, not $TEMP_LOCATION"

# The GPU as Dataflow options (GPU_OPTIONS) and the workers' MACHINE_TYPE: a GPU on every worker
# (the worker_accelerator service option), or with --right-fit a resource hint on the scoring
# step only, the other steps on CPU machines.
gpu_options() {
  [[ $RIGHT_FIT == 0 || $GPU != none ]] || die "--right-fit needs a GPU, not --gpu none"
  [[ -n $MACHINE_TYPE ]] || MACHINE_TYPE=$(default_machine_type "$GPU")
  GPU_OPTIONS=()
  if [[ $GPU == none ]]; then
    return
  elif [[ $RIGHT_FIT == 1 ]]; then
    local hint=$GPU
    [[ $hint == *machine_type:* ]] || hint="$hint;machine_type:$MACHINE_TYPE"
    GPU_OPTIONS=("--accelerator=$hint")
    MACHINE_TYPE=$CPU_MACHINE_TYPE
  else
    GPU_OPTIONS=("--dataflow_service_options=worker_accelerator=$GPU")
  fi
}

case $COMMAND in
  build)
    require "$IMAGE" image --image JESTFLOW_IMAGE
    beam_version=$(locked_beam_version)
    run_cmd env DOCKER_BUILDKIT=1 docker build --platform=linux/amd64 \
      -f "$ROOT/deploy/Dockerfile" -t "$IMAGE" --build-arg "BEAM_VERSION=$beam_version" \
      ${ARGS[@]+"${ARGS[@]}"} "$ROOT"
    ;;
  push)
    require "$IMAGE" image --image JESTFLOW_IMAGE
    run_cmd docker push "$IMAGE"
    ;;
  run)
    require "$PROJECT" project --project JESTFLOW_PROJECT
    require "$REGION" region --region JESTFLOW_REGION
    require "$TEMP_LOCATION" "temp location" --temp-location JESTFLOW_TEMP_LOCATION
    require "$IMAGE" image --image JESTFLOW_IMAGE
    [[ ${#ARGS[@]} -gt 0 ]] || die "run needs curate's arguments: INPUT... -o URL --teacher DIR --task T --keep F"
    gpu_options
    run_cmd "${JESTFLOW:-jestflow}" curate \
      --runner=DataflowRunner \
      "--project=$PROJECT" \
      "--region=$REGION" \
      "--temp_location=$TEMP_LOCATION" \
      "--sdk_container_image=$IMAGE" \
      --experiments=use_runner_v2 \
      "--machine_type=$MACHINE_TYPE" \
      "--max_num_workers=$MAX_WORKERS" \
      "--disk_size_gb=$DISK_SIZE_GB" \
      ${GPU_OPTIONS[@]+"${GPU_OPTIONS[@]}"} \
      "${ARGS[@]}"
    ;;
  template)
    require "$PROJECT" project --project JESTFLOW_PROJECT
    require "$IMAGE" image --image JESTFLOW_IMAGE
    require "$TEMPLATE" "template path" --template JESTFLOW_TEMPLATE
    run_cmd gcloud dataflow flex-template build "$TEMPLATE" \
      "--project=$PROJECT" \
      "--image=$IMAGE" \
      --sdk-language=PYTHON \
      "--metadata-file=$ROOT/deploy/flex_template/metadata.json"
    ;;
  run-template)
    require "$PROJECT" project --project JESTFLOW_PROJECT
    require "$REGION" region --region JESTFLOW_REGION
    require "$IMAGE" image --image JESTFLOW_IMAGE
    require "$TEMPLATE" "template path" --template JESTFLOW_TEMPLATE
    [[ ${#ARGS[@]} -gt 0 ]] || die "run-template needs parameters: inputs=URL output=URL teacher=DIR task=T keep=F"
    gpu_options
    # Parameters joined with ~ (gcloud's ^~^ form): values may hold commas (inputs) and =.
    PARAMETERS="^~^sdk_container_image=$IMAGE~disk_size_gb=$DISK_SIZE_GB"
    for option in ${GPU_OPTIONS[@]+"${GPU_OPTIONS[@]}"} "${ARGS[@]}"; do
      [[ ${option#--} == *=* ]] || die "template parameter $option: give NAME=VALUE"
      [[ $option != *"~"* ]] || die "template parameter $option: ~ separates parameters"
      PARAMETERS+="~${option#--}"
    done
    TEMP_OPTIONS=()
    [[ -z $TEMP_LOCATION ]] || TEMP_OPTIONS=("--temp-location=$TEMP_LOCATION")
    run_cmd gcloud dataflow flex-template run "${JOB_NAME:-jestflow-curate-$(date +%Y%m%d-%H%M%S)}" \
      "--project=$PROJECT" \
      "--region=$REGION" \
      "--template-file-gcs-location=$TEMPLATE" \
      ${TEMP_OPTIONS[@]+"${TEMP_OPTIONS[@]}"} \
      "--worker-machine-type=$MACHINE_TYPE" \
      "--max-workers=$MAX_WORKERS" \
      --launcher-machine-type=n1-standard-4 \
      --additional-experiments=use_runner_v2 \
      "--parameters=$PARAMETERS"
    ;;
  *)
    die "unknown command '$COMMAND' (build, push, run, template, run-template; --help)"
    ;;
esac
