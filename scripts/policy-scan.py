"""Scan the Kubernetes manifests with checkov's policies (make lint and the tests run it).

Every kustomization is rendered by kustomize itself, through the renderer `deploy` uses, so
the scan sees what is applied. The RayCluster is a custom resource checkov does not read: its
pod templates are scanned as Pods. A waived finding is a `checkov.io/skipN: CHECK=reason`
annotation in the manifest it concerns.
Usage: python scripts/policy-scan.py [--manifests DIR] [--checkov PATH]
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from digitops.deploy.kubernetes import render  # kustomize's own rendering, as deploy applies it

REPO = Path(__file__).resolve().parents[1]
KUSTOMIZATIONS = ("serving", "mlflow", "digitops", "monitor")
CHECKOV = REPO / "tools" / "checkov" / ".venv" / "bin" / "checkov"


def rendered(manifests: Path) -> dict[str, list[dict]]:
    """Documents to scan, by file name."""
    files = {f"{name}.yaml": render(manifests / name) for name in KUSTOMIZATIONS}
    cluster = yaml.safe_load((manifests / "ray" / "raycluster.yaml").read_text())
    groups = {"head": cluster["spec"]["headGroupSpec"]}
    groups |= {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    files["ray.yaml"] = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{cluster['metadata']['name']}-{name}",
                "namespace": "kubeflow",
                **group["template"].get("metadata", {}),
            },
            "spec": group["template"]["spec"],
        }
        for name, group in groups.items()
    ]
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifests", type=Path, default=REPO / "manifests")
    parser.add_argument("--checkov", default=str(CHECKOV))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="digitops-policy-") as tmp:
        for file, docs in rendered(args.manifests).items():
            (Path(tmp) / file).write_text(yaml.safe_dump_all(docs))
        argv = [args.checkov, "-d", tmp, "--framework", "kubernetes", "--compact", "--quiet"]
        return subprocess.run([*argv, "--skip-download"], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
