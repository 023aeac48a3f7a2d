#!/bin/sh
# Submit the compiled pipeline to the kind cluster's Kubeflow Pipelines with the kfp SDK
# (`digitops pipeline submit`), tracking to the in-cluster MLflow and deploying the service to
# the `digitops` namespace. Extra arguments go to `digitops pipeline submit`, e.g. --wait.
set -eu
cd "$(dirname "$0")/.."
port=${PORT:-8080}
digitops=${DIGITOPS:-.venv/bin/digitops}
kubectl -n kubeflow port-forward svc/ml-pipeline-ui "$port:80" >/dev/null 2>&1 &
forward=$!
trap 'kill "$forward" 2>/dev/null || true' EXIT
sleep 3
"$digitops" pipeline submit --host "http://localhost:$port" \
  --param mlflow_tracking_uri=http://mlflow.mlflow.svc:5000 \
  --param deploy_target=kubernetes "$@"
