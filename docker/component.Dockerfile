# The component image: every stage of the pipeline (torch, Lightning, Ray, Captum, Evidently,
# MLflow with PostgreSQL and S3 clients for the MLflow server manifest) and the `digitops` CLI.
#
#   docker build -f docker/component.Dockerfile -t ghcr.io/digitops/digitops:0.1.0 .
#   BASE_IMAGE: any Debian-based Python 3.11 image (`make images` builds from a locally made one).
ARG BASE_IMAGE=python:3.11.14-slim-bookworm

# Stage 1: the virtual environment. The wheelhouse stays in this stage, out of the image.
FROM ${BASE_IMAGE} AS build
# docker/wheels: a wheelhouse (with PIP_NO_INDEX=1, an offline build) or empty (the index).
ARG WHEELS=docker/wheels
ARG PIP_NO_INDEX
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY requirements.lock pyproject.toml /app/
COPY ${WHEELS} /tmp/wheels/
# The runtime dependencies (pyproject's, plus the `cluster` extra), pinned by the lock.
RUN python3 -m venv /opt/venv \
    && python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['cluster']))" > /tmp/runtime.txt \
    && /opt/venv/bin/pip install --no-cache-dir --find-links /tmp/wheels \
        -c requirements.lock -r /tmp/runtime.txt
# digitops itself, editable: the environment points at /app/src, which stage 2 fills, so a
# source change does not rebuild this stage. (Editable also keeps the bundled MNIST under
# /app/data beside the source, where digitops looks for it.)
COPY README.md /app/
COPY src/digitops/__init__.py /app/src/digitops/__init__.py
RUN /opt/venv/bin/pip install --no-cache-dir --find-links /tmp/wheels --no-deps -e .

# Stage 2: the image.
FROM ${BASE_IMAGE}
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
COPY data/mnist /app/data/mnist
COPY configs /app/configs
# The deploy task's `kubernetes` target applies these from inside the cluster.
COPY manifests/serving /app/manifests/serving
COPY src /app/src
RUN python3 -m compileall -q /app/src && digitops --help >/dev/null

WORKDIR /work
USER 1000
CMD ["digitops", "--help"]
