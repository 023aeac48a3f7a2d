#!/bin/sh
# The whole stack on a local kind cluster: the cluster, the project's images (loaded, no registry),
# Kubeflow Pipelines (pinned release), the deploy task's namespace and role, MLflow (PostgreSQL +
# MinIO), and, with WITH_RAY=1, the KubeRay operator and a RayCluster. Needs docker, kind and
# kubectl; `make kind-up` builds the images first. Then: scripts/kind-submit.sh.
# Not exercised by this repository's tests (no cluster can run where they run); see README.
set -eu
cd "$(dirname "$0")/.."
cluster=${CLUSTER:-digitops}
registry=${REGISTRY:-ghcr.io/digitops}
version=${VERSION:-$(sed -n 's/^__version__ = "\(.*\)"/\1/p' src/digitops/__init__.py)}
kuberay=${KUBERAY_VERSION:-v1.4.2}
for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not installed" >&2; exit 2; }
done

step() { printf '\n== %s\n' "$*"; }

step "kind cluster '$cluster'"
kind get clusters | grep -qx "$cluster" ||
  kind create cluster --name "$cluster" --config manifests/kind/cluster.yaml --wait 120s
kubectl config use-context "kind-$cluster"

step "images $registry/{digitops,serving}:$version"
for name in digitops serving; do
  kind load docker-image --name "$cluster" "$registry/$name:$version"
done

step "Kubeflow Pipelines"
kubectl apply -k manifests/kubeflow-pipelines/cluster-scoped
kubectl wait --for condition=established --timeout=120s crd/applications.app.k8s.io
kubectl apply -k manifests/kubeflow-pipelines
kubectl -n kubeflow wait --for=condition=Available --timeout=900s deployment --all

step "Credentials (generated here, never committed)"
kubectl apply -f manifests/mlflow/namespace.yaml -f manifests/digitops/namespace.yaml
sh scripts/cluster-secrets.sh

step "MLflow (PostgreSQL, MinIO, tracking server behind its login)"
kubectl apply -k manifests/mlflow
kubectl -n mlflow wait --for=condition=Available --timeout=600s deployment --all

if [ "${WITH_RAY:-0}" = 1 ]; then
  step "KubeRay $kuberay and the RayCluster"
  kubectl apply --server-side -k "github.com/ray-project/kuberay/ray-operator/config/default?ref=$kuberay"
  kubectl -n ray-system wait --for=condition=Available --timeout=300s deployment --all
  kubectl -n kubeflow apply -f manifests/ray/raycluster.yaml
fi

step "ready"
echo "Kubeflow Pipelines UI: kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80"
echo "MLflow UI:             kubectl -n mlflow port-forward svc/mlflow 5000:5000"
echo "Submit the pipeline:   scripts/kind-submit.sh"
