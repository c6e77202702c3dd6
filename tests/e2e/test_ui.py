"""The Prefect UI as a person uses it, in headless Chromium: open the deployment, fill its
parameter form (rendered from the flow's pydantic models), start a run, and see it complete.

Debian's Chromium (``apt-get install chromium``; ``make test`` installs it) driven by Playwright
for Python with ``executable_path``: no browser is downloaded. On a machine without it the test is
skipped, except in CI, where it must run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.conftest import deploy_one, server_log_tail, stop_group
from tests.e2e.test_deployments import REPO, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# as root on a machine with a closed network: no sandbox, no background connections
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

if not Path(CHROMIUM).is_file() and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


def test_a_run_started_from_the_ui_form_completes(demo_data: Path, user_env: dict[str, str], prefect_server: str,
                                                   tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter
    from prefect.settings import PREFECT_API_URL, temporary_settings

    env = {**user_env, "PREFECT_API_URL": prefect_server, "PREFECT_SERVER_EPHEMERAL_ENABLED": "false",
           "LEPTON_PROJECT_DIR": str(REPO), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    deploy_one(env, REPO, "validate-nightly")
    ui = prefect_server.removesuffix("/api")
    run_name = f"ui-{uuid.uuid4().hex[:8]}"

    with temporary_settings({PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("validate/validate-nightly")

        log = open(tmp_path / "worker.log", "w")
        worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "cpu", "--limit", "1"],
                                  cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(60_000)
                # what went wrong between the browser and the server, for the failure message
                failed_answers: list = []
                page.on("response", lambda r: failed_answers.append(r) if r.status >= 400 else None)
                page.on("requestfailed", lambda r: failed_answers.append(r))
                try:
                    # the deployment, from the list; its Run menu; the custom run form
                    page.goto(f"{ui}/deployments", wait_until="networkidle")
                    page.get_by_role("link", name="validate-nightly").first.click()
                    expect(page).to_have_url(re.compile(rf"/deployments/deployment/{deployment.id}"))
                    page.get_by_role("button", name="Run", exact=True).click()
                    page.get_by_role("button", name="Custom run").click()
                    page.get_by_text("side (Optional)").wait_for()
                    # the form shows the descriptions of the flow's parameters
                    expect(page.get_by_text("Path of the spec YAML on the worker; leave empty for the bundled demo")).to_be_visible()
                    page.locator(".p-label", has_text="Run Name").locator("input").fill(run_name)
                    page.get_by_role("button", name="str", exact=True).click()  # the path is a string, not None
                    page.locator("textarea").first.fill(str(demo_data))
                    side = page.locator(".schema-form-property-string button.p-select-button__control")
                    expect(side).to_have_text("target")  # the deployment's default
                    side.focus()
                    page.keyboard.press("Space")  # opens the choices, with a search box
                    page.locator("[role=listbox] input[type=search]").fill("source")
                    page.keyboard.press("ArrowDown")
                    page.keyboard.press("Enter")
                    expect(side).to_have_text("source")
                    # Submit, as a user does, and again while an error toast shows: the SQLite server of a busy
                    # 2-core CI machine has failed requests at times (a 5xx or a dropped connection: "Oops. Something went wrong." from the UI's
                    # API interceptor, or "Something went wrong trying to create a flow run"), keeping the form.
                    # The form ignores a Submit while its request is in flight, and a failed request rolls its run back, so
                    # exactly one run must exist at the end (the last assertion): a duplicate would show there.
                    back = re.compile(rf"/deployments/deployment/{deployment.id}(\?|$)")
                    submit = page.get_by_role("button", name="Submit")
                    for attempt in range(4):
                        if attempt == 0:
                            submit.click()
                        else:  # from the keyboard: the toasts, stacked at the bottom right, cover the button
                            submit.press("Enter")
                        try:
                            expect(page).to_have_url(back, timeout=45_000)  # back on the deployment
                            break
                        except AssertionError:
                            if attempt == 3 or not page.get_by_text("Something went wrong").first.is_visible():
                                raise
                    created = _flow_run_named(client, deployment.id, run_name, deadline_s=60)

                    run = wait_for(client, created.id, {"COMPLETED", "FAILED", "CRASHED"}, 600)
                    assert run.state.type.value == "COMPLETED", (tmp_path / "worker.log").read_text()[-3000:]
                    assert run.name == run_name and run.deployment_id == deployment.id
                    assert run.parameters == {"spec": {"path": str(demo_data)}, "side": "source"}
                    # and the UI says so: the run is listed on the deployment's page, and its own page shows it Completed
                    page.goto(f"{ui}/deployments/deployment/{deployment.id}", wait_until="networkidle")
                    expect(page.get_by_role("link", name=run_name)).to_be_visible()
                    page.get_by_role("link", name=run_name).click()
                    expect(page).to_have_url(re.compile(rf"/runs/flow-run/{run.id}"))
                    deadline = time.monotonic() + 60
                    while True:
                        page.reload(wait_until="networkidle")
                        if page.get_by_text("Completed", exact=True).first.is_visible() or time.monotonic() > deadline:
                            break
                        time.sleep(2)
                    expect(page.get_by_text("Completed", exact=True).first).to_be_visible()
                    expect(page.get_by_text(run_name).first).to_be_visible()
                except Exception as e:  # an assertion or a Playwright timeout: either way, say what the server said
                    raise AssertionError(f"{_describe(failed_answers)}\n--- the server's log, its end:\n{server_log_tail(user_env)}"
                                         f"\n--- what failed:\n{str(e)[:3000]}") from e
                finally:
                    page.screenshot(path=str(tmp_path / "ui.png"), full_page=True)
                    browser.close()
        finally:
            stop_group(worker)
            log.close()
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(), deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))
        assert [r.name for r in runs] == [run_name]  # one run: the one the form started


def _flow_run_named(client, deployment_id, name: str, deadline_s: float):
    """The deployment's flow run called ``name``, once the UI has created it."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter, FlowRunFilterName

    deadline = time.monotonic() + deadline_s
    while True:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])),
                                     deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
        if runs:
            return runs[0]
        assert time.monotonic() < deadline, f"no flow run {name!r} {deadline_s:.0f} s after the form was submitted"
        time.sleep(1)


def _describe(failed: list) -> str:
    """The browser's requests that failed or were answered with an error, with the answers' bodies."""
    lines = []
    for r in failed:
        if hasattr(r, "status"):  # a response
            try:
                body = r.text()[:500]
            except Exception as e:  # noqa: BLE001 - the page may be gone; the status is still worth showing
                body = f"(body unreadable: {e})"
            lines.append(f"{r.request.method} {r.url} -> {r.status}: {body}")
        else:  # a request that got no answer
            lines.append(f"{r.method} {r.url} -> failed: {r.failure}")
    return "--- the browser's failed API calls:\n" + ("\n".join(lines) or "(none)")
