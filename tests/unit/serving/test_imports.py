"""The serving package stays free of the training stack, so its images stay small (the serving
and Lambda images install digitops with only the `serve`/`lambda` extras)."""

import subprocess
import sys

FORBIDDEN = {"torch", "lightning", "ray", "captum", "evidently", "albumentations", "mlflow"}


def test_serving_imports_no_training_libraries():
    code = (
        "import sys\n"
        "import digitops.serving.app, digitops.serving.main, digitops.serving.client\n"
        "import digitops.serving.predictor, digitops.serving.preprocess\n"
        "import digitops.serving.recorder, digitops.serving.aws_lambda\n"
        "import digitops.serving.feedback, digitops.store.writer, digitops.store.reader\n"
        "import digitops.serving.batch\n"
        f"loaded = {sorted(FORBIDDEN)!r}\n"
        "bad = sorted(m for m in loaded if m in sys.modules)\n"
        "assert not bad, bad\n"
        "ours = sorted(m for m in sys.modules if m.startswith('digitops.stages'))\n"
        "assert not ours, ours\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
