"""Start and stop `digitops serve` on a free 127.0.0.1 port for tests."""

import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from digitops.net import NotReady, free_port, wait_for_url


@contextmanager
def running_server(
    name: str,
    argv: Callable[[int], list[str]],
    health: str,
    work: Path,
    env: dict[str, str] | None = None,
    timeout_s: float = 90,
    port: int | None = None,
) -> Iterator[str]:
    """The server `argv(port)` starts (with `env` added to the environment), on `port` (default:
    a free 127.0.0.1 port), logging to `work`; yields its base URL once `health` answers, and
    stops it afterwards."""
    port = port or free_port()
    log = work / f"{name}-{port}.log"
    with open(log, "w") as stream:
        process = subprocess.Popen(
            argv(port),
            stdout=stream,
            stderr=subprocess.STDOUT,
            cwd=work,
            env=None if env is None else os.environ | env,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_for_url(f"{url}{health}", timeout_s, alive=lambda: process.poll() is None)
            except NotReady as exc:
                raise RuntimeError(f"{exc}:\n{log.read_text()}") from None
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)


def running_service(
    model: Path, work: Path, *extra: str, env: dict[str, str] | None = None
) -> AbstractContextManager[str]:
    """`digitops serve` in a subprocess; yields its base URL and stops it afterwards."""
    serve = [sys.executable, "-m", "digitops.cli", "serve", "--model", str(model)]
    return running_server(
        "serve", lambda port: [*serve, "--port", str(port), *extra], "/health", work, env
    )


CHROMIUM = Path("/usr/bin/chromium")


@contextmanager
def chromium_page(url: str) -> Iterator:
    """`url` open in Debian's headless chromium (Playwright never downloads a browser here)."""
    import pytest
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail("chromium is missing: `make install` installs it (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--headless", "--no-sandbox"]
        )
        try:
            page = browser.new_page()
            page.goto(url)
            yield page
        finally:
            browser.close()


def png(image: np.ndarray, invert: bool = True, scale: int = 4) -> bytes:
    """An MNIST digit as users send it: dark ink on white, larger, PNG."""
    pixels = 255 - image if invert else image
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((28 * scale, 28 * scale)).save(buffer, "PNG")
    return buffer.getvalue()


def running_moto(work: Path) -> AbstractContextManager[str]:
    """A moto S3 server (the real S3 protocol) on a free 127.0.0.1 port; yields its URL."""
    moto = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p"]
    return running_server("moto", lambda port: [*moto, str(port)], "/moto-api/", work)


def aws_env(endpoint: str) -> dict[str, str]:
    """Environment for boto3 talking to a local S3 with throwaway credentials."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def s3_client(endpoint: str):
    """A boto3 S3 client for the local endpoint, whatever the process environment says."""
    import boto3

    env = aws_env(endpoint)
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def s3_event(bucket: str, key: str, size: int) -> dict:
    """An S3 ObjectCreated:Put notification as Lambda receives it (the key URL-encoded)."""
    from urllib.parse import quote_plus

    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2026-11-23T00:00:00.000Z",
                "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "AWS:TESTING"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {"x-amz-request-id": "TEST", "x-amz-id-2": "TEST"},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "digits",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "TESTING"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": {
                        "key": quote_plus(key, safe="/"),
                        "size": size,
                        "eTag": "0",
                        "sequencer": "0",
                    },
                },
            }
        ]
    }


def function_url_event(
    method: str, path: str, body: bytes = b"", content_type: str | None = None
) -> dict:
    """A Lambda Function URL request (payload format 2.0), the body base64-encoded."""
    import base64

    host = "digits.lambda-url.us-east-1.on.aws"
    headers = {"host": host, "user-agent": "digitops-tests", "content-length": str(len(body))}
    if content_type:
        headers["content-type"] = content_type
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "digits",
            "domainName": host,
            "domainPrefix": "digits",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "digitops-tests",
            },
            "requestId": "test",
            "routeKey": "$default",
            "stage": "$default",
            "time": "23/Nov/2026:00:00:00 +0000",
            "timeEpoch": 1795392000000,
        },
        "body": base64.b64encode(body).decode(),
        "isBase64Encoded": True,
    }
