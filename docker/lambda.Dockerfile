# The serverless variant: the serving package on AWS Lambda (S3 events and a Function URL):
# digitops with its `lambda` extra (no torch, no CLI); the model is baked in at /opt/model
# (MODEL_DIR).
#
#   docker build -f docker/lambda.Dockerfile --build-arg MODEL_DIR=artifacts/model \
#       -t ghcr.io/digitops/lambda:0.1.0 .
#   BASE_IMAGE: the AWS Lambda Python base (default), or any Python 3.11 image (the runtime
#   interface client is installed either way; `make images` builds from a locally made base).
ARG BASE_IMAGE=public.ecr.aws/lambda/python:3.11

# Stage 1: the function's packages. The wheelhouse stays in this stage, out of the image.
FROM ${BASE_IMAGE} AS build
# Every stage is labelled, so `make images` can prune what an earlier build left dangling.
LABEL io.digitops.build="scripts/images.sh"
# docker/wheels: a wheelhouse (with PIP_NO_INDEX=1, an offline build) or empty (the index).
ARG WHEELS=docker/wheels
ARG PIP_NO_INDEX
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /tmp/build
COPY requirements.lock docker/requirements-lambda.txt docker/prune-site-packages.sh /tmp/build/
COPY pyproject.toml /tmp/build/stub/
COPY src/digitops/__init__.py /tmp/build/stub/src/digitops/
COPY ${WHEELS} /tmp/build/wheels/
# digitops's `lambda` extra, pinned by the lock, and the runtime interface client, installed with a
# stand-in for digitops (its __init__ and an empty README), so a source edit does not reinstall
# them; then what inference never loads goes, and the rest is compiled now because Lambda's file
# system is read-only and would otherwise compile at every cold start.
RUN touch stub/README.md \
    && python3 -m pip install --no-cache-dir --find-links wheels -c requirements.lock \
        --target /var/task './stub[lambda]' -r requirements-lambda.txt \
    && sh prune-site-packages.sh /var/task \
    && python3 -m compileall -q -j0 /var/task
# digitops itself: a wheel built from the source replaces the stand-in. The bundled MNIST in it
# is package data that the function never reads: it goes.
COPY pyproject.toml README.md /tmp/build/digitops/
COPY src /tmp/build/digitops/src
RUN python3 -m pip install --no-cache-dir --find-links wheels --no-deps --upgrade \
        --target /var/task ./digitops \
    && rm -rf /var/task/digitops/data/mnist \
    && python3 -m compileall -q /var/task/digitops

# Stage 2: the image.
FROM ${BASE_IMAGE}
# Every stage is labelled, so `make images` can prune what an earlier build left dangling.
LABEL io.digitops.build="scripts/images.sh"
# MODEL_DIR: a model directory to bake in at /opt/model (default: none, see docker/no-model).
ARG MODEL_DIR=docker/no-model
ENV LAMBDA_TASK_ROOT=/var/task \
    DIGITOPS_MODEL=/opt/model \
    DIGITOPS_RESULTS_PREFIX=results/ \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR ${LAMBDA_TASK_ROOT}
COPY --from=build /var/task ${LAMBDA_TASK_ROOT}
COPY ${MODEL_DIR}/ /opt/model/

USER 1000
ENTRYPOINT ["python3", "-m", "awslambdaric"]
CMD ["digitops.serving.aws_lambda.handler"]
