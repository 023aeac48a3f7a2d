"""The serving package stays free of the training stack, so its images stay small, and imports
no part of digitops beyond what docker/serving.Dockerfile and docker/lambda.Dockerfile copy."""

import subprocess
import sys

FORBIDDEN = {"torch", "lightning", "ray", "captum", "evidently", "albumentations", "mlflow"}


def test_serving_imports_no_training_libraries():
    code = (
        "import sys\n"
        "import digitops.serving.app, digitops.serving.main, digitops.serving.client\n"
        "import digitops.serving.predictor, digitops.serving.preprocess\n"
        "import digitops.serving.request_log, digitops.serving.aws_lambda\n"
        f"loaded = {sorted(FORBIDDEN)!r}\n"
        "bad = sorted(m for m in loaded if m in sys.modules)\n"
        "assert not bad, bad\n"
        "ours = {m for m in sys.modules if m.startswith('digitops')}\n"
        "shared = {'digitops', 'digitops.errors', 'digitops.data', 'digitops.data.descriptors'}\n"
        "extra = sorted(ours - shared - {m for m in ours if m.startswith('digitops.serving')})\n"
        "assert not extra, f'the serving images copy only {sorted(shared)}; also needs {extra}'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
