#!/bin/sh
# Build the three images offline: a locally made Debian base (no registry needed), Python
# packages from a wheelhouse built on this host (docker/wheels), `PIP_NO_INDEX=1` in the builds.
#   scripts/images.sh [MODEL_DIR]   MODEL_DIR: baked into the serving and Lambda images if given
# Tags: ghcr.io/digitops/{digitops,serving,lambda}:$VERSION (the names the pipeline and the
# manifests use), so kfp.local.DockerRunner and `kind load docker-image` find them.
set -eu
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
version=$($python -c "import digitops; print(digitops.__version__)")
registry=${REGISTRY:-ghcr.io/digitops}
base=${BASE_IMAGE:-digitops/base:bookworm-py3.11}
model=${1:-}

sh scripts/docker-engine.sh
case "$base" in digitops/base:*) sh scripts/base-image.sh "$base" ;; esac

echo "wheelhouse: docker/wheels"
runtime=$(mktemp)
$python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['cluster']))" > "$runtime"
pip_wheel() { $python -m pip wheel --quiet --wheel-dir docker/wheels "$@" 2>&1 | grep -v "is ignored" || true; }
pip_wheel -c requirements.lock -r "$runtime" "setuptools>=68" uvicorn mlflow-skinny
pip_wheel --no-deps -r docker/requirements-lambda.txt
rm -f "$runtime"

build() {  # NAME DOCKERFILE [BUILD ARG...]
  name=$1 file=$2
  shift 2
  echo "building $registry/$name:$version"
  docker build --quiet -f "$file" -t "$registry/$name:$version" \
    --build-arg BASE_IMAGE="$base" --build-arg PIP_NO_INDEX=1 "$@" .
}
build digitops docker/component.Dockerfile
build serving docker/serving.Dockerfile ${model:+--build-arg MODEL_DIR="$model"}
build lambda docker/lambda.Dockerfile ${model:+--build-arg MODEL_DIR="$model"}
docker images "$registry/*"
