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
# digitops's wheel and every extra an image installs (pipeline and cluster: the component image;
# serve: the serving image, part of pipeline; lambda: the Lambda image), pinned by the lock, and
# setuptools, which builds digitops inside the images. Built from a copy of the sources so no
# build/ folder is left in the checkout.
source=$(mktemp -d)
cp -R pyproject.toml README.md src "$source/"
pip_wheel() { $python -m pip wheel --quiet --wheel-dir docker/wheels "$@" 2>&1 | grep -v "is ignored" || true; }
pip_wheel -c requirements.lock "$source[pipeline,lambda,cluster]" "setuptools>=77"
pip_wheel --no-deps -r docker/requirements-lambda.txt
rm -rf "$source"

build() {  # NAME DOCKERFILE [BUILD ARG...]
  name=$1 file=$2
  shift 2
  echo "building $registry/$name:$version"
  docker build --quiet -f "$file" -t "$registry/$name:$version" \
    --build-arg BASE_IMAGE="$base" --build-arg PIP_NO_INDEX=1 "$@" .
}
# The serving kustomization rendered by kustomize, for the deploy task in the component image
# (no kubectl there): docker/component.Dockerfile copies it (src/digitops/deploy/kubernetes.py).
command -v kubectl >/dev/null || {
  echo "error: make images needs kubectl (it renders manifests/serving with kubectl kustomize)" >&2
  exit 2
}
mkdir -p docker/rendered && kubectl kustomize manifests/serving > docker/rendered/serving.yaml
build digitops docker/component.Dockerfile
build serving docker/serving.Dockerfile ${model:+--build-arg MODEL_DIR="$model"}
build lambda docker/lambda.Dockerfile ${model:+--build-arg MODEL_DIR="$model"}
# The images and build stages these builds replaced, now untagged: only ours (by label), so a
# developer who runs `make test` again and again keeps the disk they had.
docker image prune --force --filter "label=io.digitops.build" >/dev/null
docker images "$registry/*"
