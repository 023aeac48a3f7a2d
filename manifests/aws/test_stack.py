"""The CDK app in manifests/aws synthesizes, and its template is what the handler relies on:
image uploads notify the function, results cannot, the role is least-privilege.

Runs in the CDK's own environment (tools/cdk/.venv), from tests/unit/test_aws_stack.py.
"""

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# jsii warns at every start that Debian 12's Node.js 20 has reached its end of life.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "18,20")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory):
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    sys.path.insert(0, str(HERE))
    try:
        from stack import IMAGE_SUFFIXES, DigitsLambdaStack
    finally:
        sys.path.pop(0)
    app = cdk.App(outdir=str(tmp_path_factory.mktemp("cdk.out")))
    stack = DigitsLambdaStack(app, "DigitopsLambda")
    return Template.from_stack(stack), IMAGE_SUFFIXES


def test_function_is_the_container_image_with_retries_then_a_queue(template):
    from aws_cdk.assertions import Match

    template, _ = template
    template.resource_count_is("AWS::Lambda::Function", 2)  # ours + CDK's notification helper
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "PackageType": "Image",
            "MemorySize": 1024,
            "Timeout": 30,
            "Environment": {
                "Variables": {
                    "DIGITOPS_RESULTS_PREFIX": "results/",
                    "DIGITOPS_STORE": Match.any_value(),
                }
            },
        },
    )
    template.has_resource_properties(
        "AWS::Lambda::EventInvokeConfig",
        {
            "MaximumRetryAttempts": 2,
            "DestinationConfig": {"OnFailure": {"Destination": Match.any_value()}},
        },
    )


def test_only_image_uploads_notify_the_function(template):
    template, suffixes = template
    (notification,) = template.find_resources("Custom::S3BucketNotifications").values()
    configs = notification["Properties"]["NotificationConfiguration"][
        "LambdaFunctionConfigurations"
    ]
    filters = []
    for config in configs:
        assert config["Events"] == ["s3:ObjectCreated:*"]
        rules = {r["Name"]: r["Value"] for r in config["Filter"]["Key"]["FilterRules"]}
        filters.append((rules["prefix"], rules["suffix"]))
    assert sorted(filters) == sorted(("uploads/", s) for s in suffixes)
    # A result key (results/<key>.json) matches no filter, so it cannot trigger the function.
    result = "results/uploads/digit.png.json"
    assert not any(result.startswith(p) and result.endswith(s) for p, s in filters)


def test_role_is_least_privilege(template):
    template, _ = template
    policies = template.find_resources("AWS::IAM::Policy")
    s3_statements = [
        statement
        for policy in policies.values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if any(a.startswith("s3:") for a in _list(statement["Action"]))
        and "Notifications" not in str(policy)  # CDK's own notification helper
    ]
    granted = {
        (action, _resource_suffix(statement["Resource"]))
        for statement in s3_statements
        for action in _list(statement["Action"])
    }
    assert granted == {
        ("s3:GetObject", "/uploads/*"),
        ("s3:ListBucket", ""),
        ("s3:PutObject", "/results/*"),
        ("s3:GetObject", "/store/*"),
        ("s3:PutObject", "/store/*"),
    }
    (listing,) = [s for s in s3_statements if s["Action"] == "s3:ListBucket"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["uploads/*", "store/*"]}}


def test_bucket_is_private_and_the_url_needs_iam_auth(template):
    template, _ = template
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            }
        },
    )
    template.has_resource_properties("AWS::Lambda::Url", {"AuthType": "AWS_IAM"})
    outputs = template.find_outputs("*")
    expected = {"BucketName", "UploadPrefix", "ResultPrefix", "StorePrefix", "FunctionName"}
    assert expected | {"FunctionUrl"} <= set(outputs)


def _list(value):
    return value if isinstance(value, list) else [value]


def _resource_suffix(resource) -> str:
    """'/uploads/*' for Fn::Join [bucket arn, '/uploads/*'], '' for the bucket itself."""
    if isinstance(resource, dict) and "Fn::Join" in resource:
        parts = resource["Fn::Join"][1]
        return parts[-1] if isinstance(parts[-1], str) else ""
    return ""
