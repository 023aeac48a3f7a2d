"""Screenshot the MLflow UI's page of a registered model with Debian's chromium (Playwright).

Starts `mlflow server` on a free 127.0.0.1 port over the given store, opens the model's page in
headless chromium, waits until its versions and aliases are drawn, saves a PNG, and stops the
server. Used for the README's registry screenshot:

    .venv/bin/python scripts/mlflow_ui_screenshot.py --store sqlite:///mlflow.db \\
        --out docs/images/mlflow-registry.png

With `--card-version N`, it shows version N's model card in its run's artifact view instead
(the page the version's `model_card` tag names):

    .venv/bin/python scripts/mlflow_ui_screenshot.py --store sqlite:///mlflow.db \\
        --card-version 1 --out docs/images/mlflow-model-card.png
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from digitops.net import NotReady, free_port, wait_for_url

CHROMIUM = "/usr/bin/chromium"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", default="sqlite:///mlflow.db", help="backend store URI")
    parser.add_argument("--model", default="digit-classifier", help="registered model name")
    parser.add_argument("--out", type=Path, default=Path("docs/images/mlflow-registry.png"))
    parser.add_argument("--card-version", type=int, help="show this version's model card")
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    artifacts = tempfile.mkdtemp(prefix="mlflow-ui-")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
            *("--backend-store-uri", args.store, "--artifacts-destination", artifacts),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        try:
            wait_for_url(f"{url}/health", 90, alive=lambda: server.poll() is None)
        except NotReady as exc:
            raise SystemExit(f"mlflow server: {exc}") from None
        if args.card_version is None:
            _screenshot(f"{url}/#/models/{args.model}", args.out)
        else:
            _screenshot(_card_page(url, args.model, args.card_version), args.out, card=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {args.out}")


def _card_page(url: str, model: str, version: int) -> str:
    """The artifact view of the version's model card (its `model_card` tag: runs:/ID/PATH)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=url, registry_uri=url)
    found = client.get_model_version(model, str(version))
    run = client.get_run(found.run_id)
    path = found.tags["model_card"].removeprefix(f"runs:/{found.run_id}/")
    return f"{url}/#/experiments/{run.info.experiment_id}/runs/{found.run_id}/artifacts/{path}"


def _screenshot(page_url: str, out: Path, card: bool = False) -> None:
    """The registered model's page (its versions table, the whole page), or a model card in
    the artifact view (`card`: the window's first screen)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--headless", "--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 1500, "height": 1400 if card else 1250})
        page.goto(page_url)
        if card:
            page.frame_locator("iframe").locator("h1").wait_for(timeout=60_000)
        else:
            page.get_by_text("Version 1", exact=False).first.wait_for(timeout=60_000)
        close_assistant = page.locator("button[aria-label='Close']")
        if close_assistant.count():  # the side panel of MLflow 3's assistant hides the page
            close_assistant.first.click()
        if not card:
            page.get_by_text("Versions", exact=True).first.scroll_into_view_if_needed()
        page.wait_for_timeout(1500)  # let the alias chips, tags and figures settle
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=not card)
        browser.close()


if __name__ == "__main__":
    main()
