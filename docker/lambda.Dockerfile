# The serverless variant: the serving package on AWS Lambda (S3 events and a Function URL).
# Only the serving dependencies (no torch); the model is baked in at /opt/model.
#
#   docker build -f docker/lambda.Dockerfile -t digitops-lambda .
#   BASE_IMAGE: the AWS Lambda Python base (default), or any Python 3.11 image (the runtime
#   interface client is installed either way; `make images` builds from a locally made base).
ARG BASE_IMAGE=public.ecr.aws/lambda/python:3.11
FROM ${BASE_IMAGE}

ARG MODEL_DIR=artifacts/model
# docker/wheels: a wheelhouse (with PIP_NO_INDEX=1, an offline build) or empty (the index).
ARG WHEELS=docker/wheels
ARG PIP_NO_INDEX
ENV LAMBDA_TASK_ROOT=/var/task \
    DIGITOPS_MODEL=/opt/model \
    DIGITOPS_RESULTS_PREFIX=results/ \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR ${LAMBDA_TASK_ROOT}

COPY docker/requirements-serving.txt docker/requirements-lambda.txt docker/prune-site-packages.sh /tmp/build/
COPY ${WHEELS} /tmp/build/wheels/
RUN python3 -m pip install --no-cache-dir --no-deps --find-links /tmp/build/wheels \
        --target "${LAMBDA_TASK_ROOT}" -r /tmp/build/requirements-lambda.txt \
    && sh /tmp/build/prune-site-packages.sh "${LAMBDA_TASK_ROOT}" \
    && rm -rf /tmp/build

# The serving package and the two modules it shares with the stages (tests/unit/serving checks
# that it imports no other part of digitops).
COPY src/digitops/__init__.py src/digitops/errors.py ${LAMBDA_TASK_ROOT}/digitops/
COPY src/digitops/data/__init__.py src/digitops/data/descriptors.py ${LAMBDA_TASK_ROOT}/digitops/data/
COPY src/digitops/serving ${LAMBDA_TASK_ROOT}/digitops/serving
COPY ${MODEL_DIR}/model.onnx ${MODEL_DIR}/model.json /opt/model/
# Lambda's file system is read-only: compile now so that cold starts do not.
RUN python3 -m compileall -q -j0 "${LAMBDA_TASK_ROOT}"

USER 1000
ENTRYPOINT ["python3", "-m", "awslambdaric"]
CMD ["digitops.serving.aws_lambda.handler"]
