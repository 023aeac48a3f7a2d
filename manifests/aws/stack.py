"""The serverless variant on AWS: a bucket whose image uploads are answered by the Lambda image.

Resources: an S3 bucket (private, TLS only, encrypted) that notifies the function for each image
suffix under `uploads/`; the function from `docker/lambda.Dockerfile` (model baked in), which
writes `results/<key>.json`, outside the notified prefix, so results never trigger it; a
Function URL serving the HTTP API; two retries for failed events, then an SQS queue; the request
store under `store/` (every prediction kept, labels from /feedback); an IAM role that may only
read `uploads/*`, write `results/*`, read and write `store/*`, and list those two prefixes.
"""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as notifications
from aws_cdk import aws_sqs as sqs
from constructs import Construct

REPO = Path(__file__).resolve().parents[2]
UPLOADS, RESULTS, STORE = "uploads/", "results/", "store/"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class DigitsLambdaStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        model_dir: str = "artifacts/model",
        public_url: bool = False,
        memory_mb: int = 1024,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)

        bucket = s3.Bucket(
            self,
            "Digits",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
        )
        failed = sqs.Queue(
            self,
            "FailedEvents",
            retention_period=cdk.Duration.days(14),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        function = lambda_.DockerImageFunction(
            self,
            "Predict",
            description="digitops: handwritten-digit predictions for S3 uploads and HTTP",
            code=lambda_.DockerImageCode.from_image_asset(
                str(REPO),
                file="docker/lambda.Dockerfile",
                build_args={"MODEL_DIR": model_dir},
                exclude=["data", "configs", "docker/wheels"],
            ),
            architecture=lambda_.Architecture.X86_64,
            memory_size=memory_mb,  # memory buys CPU: 1 GiB keeps cold starts under a second
            timeout=cdk.Duration.seconds(30),
            environment={
                "DIGITOPS_RESULTS_PREFIX": RESULTS,
                "DIGITOPS_STORE": f"s3://{bucket.bucket_name}/{STORE}",
            },
            log_group=logs.LogGroup(self, "PredictLogs", retention=logs.RetentionDays.ONE_MONTH),
            retry_attempts=2,
            on_failure=destinations.SqsDestination(failed),
        )
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"], resources=[bucket.arn_for_objects(f"{UPLOADS}*")]
            )
        )
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:PutObject"],
                resources=[bucket.arn_for_objects(f"{STORE}*")],
            )
        )
        # Without ListBucket, S3 answers a vanished object with AccessDenied, not NoSuchKey; the
        # store lists a request's labels.
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{UPLOADS}*", f"{STORE}*"]}},
            )
        )
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject"], resources=[bucket.arn_for_objects(f"{RESULTS}*")]
            )
        )
        for suffix in IMAGE_SUFFIXES:
            bucket.add_event_notification(
                s3.EventType.OBJECT_CREATED,
                notifications.LambdaDestination(function),
                s3.NotificationKeyFilter(prefix=UPLOADS, suffix=suffix),
            )
        url = function.add_function_url(
            auth_type=lambda_.FunctionUrlAuthType.NONE
            if public_url
            else lambda_.FunctionUrlAuthType.AWS_IAM
        )

        cdk.CfnOutput(self, "BucketName", value=bucket.bucket_name)
        cdk.CfnOutput(self, "UploadPrefix", value=f"s3://{bucket.bucket_name}/{UPLOADS}")
        cdk.CfnOutput(self, "ResultPrefix", value=f"s3://{bucket.bucket_name}/{RESULTS}")
        cdk.CfnOutput(self, "StorePrefix", value=f"s3://{bucket.bucket_name}/{STORE}")
        cdk.CfnOutput(self, "FunctionName", value=function.function_name)
        cdk.CfnOutput(self, "FunctionUrl", value=url.url)
        cdk.CfnOutput(self, "FailedEventsQueue", value=failed.queue_url)
