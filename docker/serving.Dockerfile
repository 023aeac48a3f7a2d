# The serving image: the FastAPI service on onnxruntime, with MLflow's client (mlflow-skinny) to
# resolve `models:/` URIs. No torch, Lightning, Ray, Captum or Evidently.
#
#   docker build -f docker/serving.Dockerfile -t ghcr.io/digitops/serving:0.1.0 .
#   docker run -p 8000:8000 -e DIGITOPS_MODEL=models:/digit-classifier@production \
#       -e MLFLOW_TRACKING_URI=http://mlflow:5000 ghcr.io/digitops/serving:0.1.0
ARG BASE_IMAGE=python:3.11.14-slim-bookworm

# Stage 1: the virtual environment. The wheelhouse stays in this stage, out of the image.
FROM ${BASE_IMAGE} AS build
# docker/wheels: a wheelhouse (with PIP_NO_INDEX=1, an offline build) or empty (the index).
ARG WHEELS=docker/wheels
ARG PIP_NO_INDEX
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.lock docker/requirements-serving.txt docker/prune-site-packages.sh /tmp/build/
COPY ${WHEELS} /tmp/build/wheels/
# The serving closure without onnxruntime's model tooling (--no-deps), then uvicorn and the MLflow
# client with their dependencies, pinned by the lock; then what inference never loads goes.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps --find-links /tmp/build/wheels \
        -r /tmp/build/requirements-serving.txt \
    && /opt/venv/bin/pip install --no-cache-dir --find-links /tmp/build/wheels \
        -c /tmp/build/requirements.lock uvicorn mlflow-skinny \
    && sh /tmp/build/prune-site-packages.sh /opt/venv/lib/python3.11/site-packages \
    && python3 -m compileall -q /opt/venv/lib/python3.11/site-packages

# Stage 2: the image.
FROM ${BASE_IMAGE}
# MODEL_DIR: a model directory to bake in at /opt/model (default: none, see docker/no-model).
ARG MODEL_DIR=docker/no-model
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/app \
    DIGITOPS_MODEL=/opt/model \
    PORT=8000 \
    WORKERS=1
RUN useradd --uid 1000 --no-create-home --shell /usr/sbin/nologin digitops
COPY --from=build /opt/venv /opt/venv
# The serving package and the two modules it shares with the stages (tests/unit/serving checks
# that it imports no other part of digitops), and the model, if one is baked in.
COPY src/digitops/__init__.py src/digitops/errors.py /app/digitops/
COPY src/digitops/data/__init__.py src/digitops/data/descriptors.py /app/digitops/data/
COPY src/digitops/serving /app/digitops/serving
COPY ${MODEL_DIR}/ /opt/model/
RUN python3 -m compileall -q /app

USER 1000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['PORT']}/health\", timeout=2)"]
CMD ["sh", "-c", "exec uvicorn --factory digitops.serving.main:app_from_env --host 0.0.0.0 --port \"$PORT\" --workers \"$WORKERS\""]
