"""Deploy targets: where `digitops deploy` puts a model (`local`, `kubernetes`), and the smoke test.

Each target module drives a real tool (a detached process, the Kubernetes API); the stage in
`digitops.stages.deploy` picks one, smoke-tests the endpoint and keeps the record.
"""

from digitops.errors import DigitopsError


class DeployError(DigitopsError):
    """The service did not come up, or answered too badly to keep."""
