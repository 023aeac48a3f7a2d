# The serverless variant: the serving package on AWS Lambda (S3 events and a Function URL).
# Only the serving dependencies (no torch); the model is baked in at /opt/model (MODEL_DIR).
#
#   docker build -f docker/lambda.Dockerfile --build-arg MODEL_DIR=artifacts/model \
#       -t ghcr.io/digitops/lambda:0.1.0 .
#   BASE_IMAGE: the AWS Lambda Python base (default), or any Python 3.11 image (the runtime
#   interface client is installed either way; `make images` builds from a locally made base).
ARG BASE_IMAGE=public.ecr.aws/lambda/python:3.11

# Stage 1: the function's packages. The wheelhouse stays in this stage, out of the image.
FROM ${BASE_IMAGE} AS build
# docker/wheels: a wheelhouse (with PIP_NO_INDEX=1, an offline build) or empty (the index).
ARG WHEELS=docker/wheels
ARG PIP_NO_INDEX
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
COPY docker/requirements-serving.txt docker/requirements-lambda.txt docker/prune-site-packages.sh /tmp/build/
COPY ${WHEELS} /tmp/build/wheels/
# The complete pinned closure (--no-deps), minus what inference never loads, compiled now because
# Lambda's file system is read-only and would otherwise compile at every cold start.
RUN python3 -m pip install --no-cache-dir --no-deps --find-links /tmp/build/wheels \
        --target /var/task -r /tmp/build/requirements-lambda.txt \
    && sh /tmp/build/prune-site-packages.sh /var/task \
    && python3 -m compileall -q -j0 /var/task

# Stage 2: the image.
FROM ${BASE_IMAGE}
# MODEL_DIR: a model directory to bake in at /opt/model (default: none, see docker/no-model).
ARG MODEL_DIR=docker/no-model
ENV LAMBDA_TASK_ROOT=/var/task \
    DIGITOPS_MODEL=/opt/model \
    DIGITOPS_RESULTS_PREFIX=results/ \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR ${LAMBDA_TASK_ROOT}
COPY --from=build /var/task ${LAMBDA_TASK_ROOT}
# The serving package and the two modules it shares with the stages (tests/unit/serving checks
# that it imports no other part of digitops).
COPY src/digitops/__init__.py src/digitops/errors.py ${LAMBDA_TASK_ROOT}/digitops/
COPY src/digitops/data/__init__.py src/digitops/data/descriptors.py ${LAMBDA_TASK_ROOT}/digitops/data/
COPY src/digitops/serving ${LAMBDA_TASK_ROOT}/digitops/serving
COPY ${MODEL_DIR}/ /opt/model/
RUN python3 -m compileall -q "${LAMBDA_TASK_ROOT}/digitops"

USER 1000
ENTRYPOINT ["python3", "-m", "awslambdaric"]
CMD ["digitops.serving.aws_lambda.handler"]
