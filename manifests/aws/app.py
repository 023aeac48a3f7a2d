"""The CDK app: `cdk deploy` from this folder (needs AWS credentials and Docker).

cdk deploy -c model_dir=artifacts/model -c public_url=false
"""

import aws_cdk as cdk
from stack import DigitsLambdaStack

app = cdk.App()
DigitsLambdaStack(
    app,
    "DigitopsLambda",
    model_dir=app.node.try_get_context("model_dir") or "artifacts/model",
    public_url=str(app.node.try_get_context("public_url")).lower() == "true",
)
app.synth()
