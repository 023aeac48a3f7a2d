# The component image: every stage of the pipeline (torch, Lightning, Ray, Captum, Evidently,
# MLflow with PostgreSQL and S3 clients for the MLflow server manifest) and the `digitops` CLI:
# digitops with its `pipeline` and `cluster` extras.
#
#   docker build -f docker/component.Dockerfile -t ghcr.io/digitops/digitops:0.1.0 .
#   BASE_IMAGE: any Debian-based Python 3.11 image (`make images` builds from a locally made one).
ARG BASE_IMAGE=python:3.11.14-slim-bookworm

# Stage 1: the virtual environment. The wheelhouse stays in this stage, out of the image.
FROM ${BASE_IMAGE} AS build
# Every stage is labelled, so `make images` can prune what an earlier build left dangling.
LABEL io.digitops.build="scripts/images.sh"
# docker/wheels: a wheelhouse (with PIP_NO_INDEX=1, an offline build) or empty (the index).
ARG WHEELS=docker/wheels
ARG PIP_NO_INDEX
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY requirements.lock pyproject.toml /app/
COPY src/digitops/__init__.py /app/src/digitops/__init__.py
COPY ${WHEELS} /tmp/wheels/
# The `pipeline` and `cluster` extras, pinned by the lock, and digitops itself, editable: the
# environment points at /app/src, which stage 2 fills (the bundled MNIST included: it is package
# data under src/digitops/data/mnist), so a source edit does not rebuild this stage. README.md,
# which pyproject names, is a stand-in here so that a README edit does not reinstall either.
RUN touch README.md \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --find-links /tmp/wheels \
        -c requirements.lock -e '.[pipeline,cluster]'

# Stage 2: the image.
FROM ${BASE_IMAGE}
# Every stage is labelled, so `make images` can prune what an earlier build left dangling.
LABEL io.digitops.build="scripts/images.sh"
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    RAY_AIR_NEW_OUTPUT=0
RUN useradd --uid 1000 --create-home --shell /usr/sbin/nologin digitops \
    && mkdir /work && chown digitops:digitops /work
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY pyproject.toml README.md /app/
COPY configs /app/configs
# The deploy task's `kubernetes` target applies these from inside the cluster.
COPY manifests/serving /app/manifests/serving
# ...as kustomize renders them (scripts/images.sh runs `kubectl kustomize`; no kubectl here).
COPY docker/rendered/serving.yaml /app/manifests/serving.yaml
COPY src /app/src
RUN python3 -m compileall -q /app/src && digitops --help >/dev/null

WORKDIR /work
USER 1000
CMD ["digitops", "--help"]
