# The serving image: the FastAPI service on onnxruntime, with MLflow's client (mlflow-skinny) to
# resolve `models:/` URIs: digitops with its `serve` extra. No torch, Lightning, Ray, Captum or
# Evidently.
#
#   docker build -f docker/serving.Dockerfile -t ghcr.io/digitops/serving:0.1.0 .
#   docker run -p 8000:8000 -e DIGITOPS_MODEL=models:/digit-classifier@production \
#       -e MLFLOW_TRACKING_URI=http://mlflow:5000 ghcr.io/digitops/serving:0.1.0
ARG BASE_IMAGE=python:3.11.14-slim-bookworm

# Stage 1: the virtual environment. The wheelhouse stays in this stage, out of the image.
FROM ${BASE_IMAGE} AS build
# Every stage is labelled, so `make images` can prune what an earlier build left dangling.
LABEL io.digitops.build="scripts/images.sh"
# docker/wheels: a wheelhouse (with PIP_NO_INDEX=1, an offline build) or empty (the index).
ARG WHEELS=docker/wheels
ARG PIP_NO_INDEX
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /tmp/build
COPY requirements.lock docker/prune-site-packages.sh /tmp/build/
COPY pyproject.toml /tmp/build/stub/
COPY src/digitops/__init__.py /tmp/build/stub/src/digitops/
COPY ${WHEELS} /tmp/build/wheels/
# digitops's `serve` extra, pinned by the lock, installed with a stand-in for digitops (its
# __init__ and an empty README), so a source edit does not reinstall the dependencies; then what
# inference never loads goes.
RUN touch stub/README.md \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --find-links wheels -c requirements.lock \
        './stub[serve]' \
    && sh prune-site-packages.sh /opt/venv/lib/python3.11/site-packages \
    && python3 -m compileall -q /opt/venv/lib/python3.11/site-packages
# digitops itself: a wheel built from the source replaces the stand-in. Its static page is package
# data; so is the bundled MNIST, which serving never reads: it goes.
COPY pyproject.toml README.md /tmp/build/digitops/
COPY src /tmp/build/digitops/src
RUN /opt/venv/bin/pip install --no-cache-dir --find-links wheels --no-deps --force-reinstall \
        ./digitops \
    && rm -rf /opt/venv/lib/python3.11/site-packages/digitops/data/mnist \
    && python3 -m compileall -q /opt/venv/lib/python3.11/site-packages/digitops

# Stage 2: the image.
FROM ${BASE_IMAGE}
# Every stage is labelled, so `make images` can prune what an earlier build left dangling.
LABEL io.digitops.build="scripts/images.sh"
# MODEL_DIR: a model directory to bake in at /opt/model (default: none, see docker/no-model).
ARG MODEL_DIR=docker/no-model
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DIGITOPS_MODEL=/opt/model \
    PORT=8000 \
    WORKERS=1
RUN useradd --uid 1000 --no-create-home --shell /usr/sbin/nologin digitops
COPY --from=build /opt/venv /opt/venv
COPY ${MODEL_DIR}/ /opt/model/

USER 1000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['PORT']}/health\", timeout=2)"]
# uvicorn with the service's limits and its workers' metrics summed (digitops.serving.main).
CMD ["python3", "-m", "digitops.serving.main"]
