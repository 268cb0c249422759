"""A learner's first session: a real JupyterLab on loopback, driven in headless Chromium.

The Lab serves a temporary copy of the repository's notebooks/ folder (plus the chapter's solution
notebook), so Lab's autosave never writes outputs into the committed notebooks. The chapter is the
first exercise/solution pair in the toc (the smallest chapter, first in the book).

* the exercise notebook, run top to bottom from the Run menu, shows "not done yet" in its checks;
* the solution notebook, run the same way, shows "✓ Exercise ... passed";
* a notebook run without the data, offline, shows the loader's actionable MNISTUnavailableError.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pytest
import sitecheck

JUPYTER = Path(sys.executable).parent / "jupyter"
START_TIMEOUT_S = 180
RUN_TIMEOUT_S = 900  # a whole notebook on a busy 2-core machine
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook on screen
# Lab renders stderr and errors (tracebacks) alike: a red box with this MIME type.
RED_MIME = "application/vnd.jupyter.stderr"
# Lab settings for a test session: render every cell (no virtual scrolling), never fetch news.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
}


def first_chapter() -> tuple[str, str]:
    """(exercise docname, solution docname) of the first chapter in the toc."""
    pages = sitecheck.toc_pages()
    exercise = next(p for p in pages if p.endswith("_exercises"))
    chapter = exercise.removeprefix("notebooks/").removesuffix("_exercises")
    solution = f"solutions/{chapter}_solutions"
    assert solution in pages, f"{exercise}: {solution} is not in the toc"
    return exercise, solution


def no_data_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# A learner without the data, offline"),
        nbformat.v4.new_code_cell('import os\nos.environ.pop("MNIST_NPZ", None)  # no copy here'),
        nbformat.v4.new_code_cell("from bnbook.lessons.data import load_mnist\nload_mnist()"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(url: str, token: str, method: str = "GET"):
    request = urllib.request.Request(url, method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback only
        return response.status, response.read()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1: yields (base URL, token, workspace, names)."""
    with lab_server(tmp_path_factory.mktemp("lab")) as server:
        yield server


@contextmanager
def lab_server(tmp: Path):
    workspace = tmp / "notebooks"
    shutil.copytree(sitecheck.ROOT / "notebooks", workspace,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    exercise, solution = first_chapter()
    shutil.copy(sitecheck.ROOT / f"{solution}.ipynb", workspace)
    nbformat.write(no_data_notebook(), workspace / "no_data.ipynb")
    settings = tmp / "settings"
    for name, values in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values), encoding="utf-8")

    env = dict(os.environ)
    env.update({
        "JUPYTER_CONFIG_DIR": str(tmp / "config"), "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "ws"),
        # Offline, whatever this machine can reach: downloads go to a closed loopback port, and
        # Keras finds no cached MNIST. Notebooks that need MNIST still get MNIST_NPZ if it is set.
        "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost", "KERAS_HOME": str(tmp / "keras"),
    })
    token = secrets.token_hex(16)
    port = free_port()
    log_path = tmp / "lab.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [str(JUPYTER), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
             f"--ServerApp.root_dir={workspace}", "--LabApp.news_url=None",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             "--LabApp.extension_manager=readonly"]
            + (["--allow-root"] if os.geteuid() == 0 else []),  # CI runs as root
            stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"JupyterLab exited ({server.returncode}):\n"
                                   f"{log_path.read_text()[-3000:]}")
            try:
                if http(base + "api/status", token)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not start in {START_TIMEOUT_S} s:\n"
                            f"{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base, token, workspace, (Path(exercise).name, Path(solution).name)
    finally:
        stop(server, base, token)


def stop(server: subprocess.Popen, base: str, token: str) -> None:
    """A clean stop: the server shuts its kernels down and exits; signals only if it does not."""
    if server.poll() is not None:
        return
    try:
        http(base + "api/shutdown", token, method="POST")
        server.wait(timeout=60)
        return
    except (OSError, subprocess.TimeoutExpired):
        pass
    server.terminate()  # Jupyter shuts its kernels down on SIGTERM too
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def run_all(browser, base: str, token: str, name: str, screenshots: Path):
    """Open notebook ``name`` in Lab, Run > Run All Cells, wait.

    Returns (each code cell's input prompt, each code cell's outputs as {mime, text} dicts).
    """
    page = browser.context.new_page()
    page.set_default_timeout(120_000)
    try:
        # A workspace of its own, reset: Lab would otherwise reopen the previous notebook too.
        page.goto(f"{base}lab/workspaces/{Path(name).stem}/tree/{name}?reset&token={token}",
                  wait_until="load")
        page.locator(f"{PANEL} .jp-CodeCell").first.wait_for()
        # Wait for the kernel: Run All before it is connected gets lost.
        page.wait_for_function("""() => {
            const panel = document.querySelector(PANEL);
            const name = panel && panel.querySelector('.jp-KernelName');
            const state = panel && panel.querySelector('.jp-Notebook-ExecutionIndicator');
            return name && /Python/.test(name.textContent) && state && state.dataset.status === 'idle';
          }""".replace("PANEL", repr(PANEL)))
        prompts = wait_for_run_all(page, name, screenshots)
        page.locator(f"{PANEL} .jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for()
        page.screenshot(path=str(screenshots / f"lab__{Path(name).stem}.png"))
        return prompts, page.evaluate("""(panel) => [...document.querySelector(panel)
          .querySelectorAll('.jp-CodeCell')].map(cell =>
            [...cell.querySelectorAll('.jp-OutputArea-output')].map(out => ({
              mime: out.getAttribute('data-mime-type') || '', text: out.innerText})))""", PANEL)
    finally:
        page.close()


def click_run_all(page) -> None:
    """Run > Run All Cells, from the menu bar, as a learner does."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()


def wait_for_run_all(page, name: str, screenshots: Path) -> list[str]:
    """Run all cells; return the input prompts when every code cell has run, or when the run
    stopped (at an error).

    If no cell has started a minute after the click (Lab can drop a Run All that arrives while it
    is still settling on a busy machine), click again, at most twice more.
    """
    state_js = """(panel) => {
        const notebook = document.querySelector(panel);
        const prompts = [...notebook.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
          .map(p => p.textContent.trim());
        const status = notebook.querySelector('.jp-Notebook-ExecutionIndicator').dataset.status;
        return {prompts, status};
      }"""
    click_run_all(page)
    clicks, clicked_at, start, stopped_since = 1, time.monotonic(), time.monotonic(), None
    while True:
        state = page.evaluate(state_js, PANEL)
        numbered = [bool(re.fullmatch(r"\[\d+\]:", p)) for p in state["prompts"]]
        running = any("*" in p for p in state["prompts"])
        if numbered and all(numbered):
            return state["prompts"]
        if any(numbered) and not running and state["status"] == "idle":
            stopped_since = stopped_since or time.monotonic()
            if time.monotonic() - stopped_since > 3:
                return state["prompts"]  # Lab stopped the run at an error: the caller reports it
        else:
            stopped_since = None
        if not any(numbered) and not running and time.monotonic() - clicked_at > 60 and clicks < 3:
            click_run_all(page)
            clicks, clicked_at = clicks + 1, time.monotonic()
        if time.monotonic() - start > RUN_TIMEOUT_S:
            page.screenshot(path=str(screenshots / f"lab__{Path(name).stem}__timeout.png"))
            raise AssertionError(f"{name}: Run All did not finish in {RUN_TIMEOUT_S} s "
                                 f"(prompts {state['prompts']}, kernel {state['status']})")
        time.sleep(1)


def tagged_raises(path: Path) -> list[bool]:
    """For each code cell of a notebook: may it show an error (tagged raises-exception)?"""
    cells = nbformat.read(path, as_version=4).cells
    return ["raises-exception" in c.metadata.get("tags", []) for c in cells if c.cell_type == "code"]


def unexpected(outputs: list[list[dict]], allowed_errors: list[bool], name: str) -> list[str]:
    problems = []
    for index, (cell, may_raise) in enumerate(zip(outputs, allowed_errors, strict=True)):
        for out in cell:
            if out["mime"] == RED_MIME and not may_raise:
                problems.append(f"{name}, code cell {index + 1} shows stderr or an error: "
                                f"{out['text'][-600:]}")
    return problems


def texts(outputs: list[list[dict]]) -> str:
    return "\n".join(out["text"] for cell in outputs for out in cell)


def test_exercise_notebook_says_not_done_yet(lab, browser, screenshot_dir):
    base, token, workspace, (exercise, _) = lab
    prompts, outputs = run_all(browser, base, token, f"{exercise}.ipynb", screenshot_dir)
    assert all(re.fullmatch(r"\[\d+\]:", p) for p in prompts), \
        f"{exercise}: Run All stopped before the end: {prompts}\n{texts(outputs)[-2000:]}"
    path = workspace / f"{exercise}.ipynb"
    assert not unexpected(outputs, tagged_raises(path), exercise), \
        "\n".join(unexpected(outputs, tagged_raises(path), exercise))
    assert "is not done yet" in texts(outputs), \
        f"{exercise}: no check cell said 'not done yet':\n{texts(outputs)[-2000:]}"
    assert "✓ Exercise" not in texts(outputs), f"{exercise}: a stub passed its check"
    assert not browser.blocked, f"Lab requested other hosts: {browser.blocked[:3]}"


def test_solution_notebook_passes_its_checks(lab, browser, screenshot_dir):
    base, token, workspace, (_, solution) = lab
    prompts, outputs = run_all(browser, base, token, f"{solution}.ipynb", screenshot_dir)
    assert all(re.fullmatch(r"\[\d+\]:", p) for p in prompts), \
        f"{solution}: Run All stopped before the end: {prompts}\n{texts(outputs)[-2000:]}"
    path = workspace / f"{solution}.ipynb"
    assert not unexpected(outputs, tagged_raises(path), solution), \
        "\n".join(unexpected(outputs, tagged_raises(path), solution))
    passed = [line for line in texts(outputs).splitlines() if line.startswith("✓ Exercise")]
    assert passed and all(" passed: " in line for line in passed), \
        f"{solution}: no '✓ Exercise ... passed' line:\n{texts(outputs)[-2000:]}"
    assert "not done yet" not in texts(outputs), f"{solution}: a check says 'not done yet'"
    assert not browser.blocked, f"Lab requested other hosts: {browser.blocked[:3]}"


def test_no_data_offline_gets_the_loaders_advice(lab, browser, screenshot_dir):
    base, token, _, _ = lab
    _, outputs = run_all(browser, base, token, "no_data.ipynb", screenshot_dir)
    errors = [out["text"] for cell in outputs for out in cell if out["mime"] == RED_MIME]
    assert len(errors) == 1, f"expected one error, got: {errors}"
    for words in ("MNISTUnavailableError", "Keras could not download MNIST", "export MNIST_NPZ"):
        assert words in errors[0], f"the error lacks {words!r}:\n{errors[0][-2000:]}"
