"""The CDK app of manifests/aws synthesizes and its template is what the Lambda handler relies on:
its tests (manifests/aws/test_stack.py) run in the CDK's own environment, tools/cdk/.venv
(aws-cdk-lib's jsii pins typeguard 2; the project's feast needs 4)."""

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CDK_PYTHON = REPO / "tools" / "cdk" / ".venv" / "bin" / "python"

pytestmark = pytest.mark.slow


def test_the_cdk_stack_synthesizes_as_the_handler_needs():
    if not CDK_PYTHON.is_file():
        pytest.fail("the CDK environment is missing: `make test` installs it (tools/cdk)")
    run = subprocess.run(
        [str(CDK_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_stack.py"],
        cwd=REPO / "manifests" / "aws",
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failed" not in run.stdout
