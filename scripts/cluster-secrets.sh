#!/bin/sh
# Credentials for the cluster, generated here and never committed (make kind-up runs this):
#   mlflow/mlflow-credentials   the PostgreSQL and MinIO passwords, the MLflow admin login and
#                               the key of its login pages (MLFLOW_FLASK_SERVER_SECRET_KEY)
#   <ns>/mlflow-client          that login, for MLflow's clients: the pipeline's tasks (kubeflow)
#                               and the prediction service (digitops)
#   digitops/store-client       the MinIO login, for the prediction service's request store
#   kubeflow/ray-auth           the Ray cluster's token (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN), for
#                               its nodes (manifests/ray) and the pipeline's search task
# A secret that exists is kept, so running it again changes nothing. Needs kubectl, and the
# namespaces mlflow, kubeflow and digitops.
set -eu

random() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }

exists() { kubectl -n "$1" get secret "$2" >/dev/null 2>&1; }

if exists mlflow mlflow-credentials; then
  echo "kept secret mlflow/mlflow-credentials"
else
  kubectl -n mlflow create secret generic mlflow-credentials \
    --from-literal=POSTGRES_USER=mlflow \
    --from-literal=POSTGRES_PASSWORD="$(random)" \
    --from-literal=POSTGRES_DB=mlflow \
    --from-literal=MINIO_ROOT_USER=mlflow \
    --from-literal=MINIO_ROOT_PASSWORD="$(random)" \
    --from-literal=MLFLOW_TRACKING_USERNAME=digitops \
    --from-literal=MLFLOW_TRACKING_PASSWORD="$(random)" \
    --from-literal=MLFLOW_FLASK_SERVER_SECRET_KEY="$(random)"
fi
# A secret made before MLflow 3.17 has no key for the login pages, and the server needs one.
if [ -z "$(kubectl -n mlflow get secret mlflow-credentials \
  -o 'jsonpath={.data.MLFLOW_FLASK_SERVER_SECRET_KEY}')" ]; then
  kubectl -n mlflow patch secret mlflow-credentials --type merge \
    -p "{\"stringData\":{\"MLFLOW_FLASK_SERVER_SECRET_KEY\":\"$(random)\"}}"
  echo "added MLFLOW_FLASK_SERVER_SECRET_KEY to secret mlflow/mlflow-credentials"
fi

field() {
  kubectl -n mlflow get secret mlflow-credentials -o "jsonpath={.data.$1}" | base64 -d
}
user=$(field MLFLOW_TRACKING_USERNAME)
password=$(field MLFLOW_TRACKING_PASSWORD)
for namespace in kubeflow digitops; do
  if exists "$namespace" mlflow-client; then
    echo "kept secret $namespace/mlflow-client"
  else
    kubectl -n "$namespace" create secret generic mlflow-client \
      --from-literal=MLFLOW_TRACKING_USERNAME="$user" \
      --from-literal=MLFLOW_TRACKING_PASSWORD="$password"
  fi
done

if exists digitops store-client; then
  echo "kept secret digitops/store-client"
else
  kubectl -n digitops create secret generic store-client \
    --from-literal=AWS_ACCESS_KEY_ID="$(field MINIO_ROOT_USER)" \
    --from-literal=AWS_SECRET_ACCESS_KEY="$(field MINIO_ROOT_PASSWORD)"
fi
if exists kubeflow ray-auth; then
  echo "kept secret kubeflow/ray-auth"
else
  kubectl -n kubeflow create secret generic ray-auth \
    --from-literal=RAY_AUTH_MODE=token \
    --from-literal=RAY_AUTH_TOKEN="$(random)$(random)"
fi
