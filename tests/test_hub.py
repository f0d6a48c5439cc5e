"""A JupyterHub for the class, in small: two students log in, each gets a JupyterLab, each runs a cell.

JupyterHub (PyPI) behind its proxy ``configurable-http-proxy`` (npm), with ``SimpleLocalProcessSpawner``
(one JupyterLab per student, a home folder each under tmp, all as this unix user) and the dummy
authenticator, on free local ports. Over HTTP, as a browser would: each student logs in through the login
form, waits for the server the hub spawns, opens ``/user/<name>/lab`` (JupyterLab's page), starts a kernel
and runs one cell that imports the course library; and cannot reach the other student's server.
docs/hosting.md describes the real set-up this stands for.

Tier ``browser`` (tests/conftest.py): like the browser test, it serves the labs the way students meet them
and needs a program from outside PyPI. Skipped where npm is absent; where npm exists but the proxy is not
installed, it fails with the command that installs it (``make test`` runs it: target ``test-deps``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LOCAL_PROXY = ROOT / ".venv" / "node" / "node_modules" / ".bin" / "configurable-http-proxy"
INSTALL = ("npm install --prefix .venv/node configurable-http-proxy   (or: make test-deps; "
           "npm install -g configurable-http-proxy)")
STUDENTS = ("alice", "bob")
CELL = "import os, nas_lab\nprint(os.environ['JUPYTERHUB_USER'], nas_lab.__name__, 6 * 7)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proxy_command() -> str:
    """configurable-http-proxy: installed in the venv, or on PATH; else skip (no npm) or fail (how to install)."""
    for candidate in (os.environ.get("NAS_LAB_CHP"), str(LOCAL_PROXY), shutil.which("configurable-http-proxy")):
        if candidate and Path(candidate).is_file():
            return candidate
    if not shutil.which("npm"):
        pytest.skip("npm is absent, so JupyterHub's proxy (configurable-http-proxy, an npm package) cannot be "
                    "installed here: the hub smoke test is skipped")
    pytest.fail(f"configurable-http-proxy is not installed; install it with:\n    {INSTALL}", pytrace=False)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running JupyterHub on a free port; yields its public URL."""
    chp = proxy_command()
    if not (BIN / "jupyterhub").is_file():
        pytest.fail("jupyterhub is not installed: it is in the dev extra (.venv/bin/pip install -e '.[dev]')",
                    pytrace=False)
    base = tmp_path_factory.mktemp("hub")
    port, hub_port, api_port = _free_port(), _free_port(), _free_port()
    args = ["--allow-root"] if os.geteuid() == 0 else []
    config = f"""
c = get_config()  # noqa: F821
c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.auth_token = {uuid.uuid4().hex!r}
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {str(base / "homes" / "{username}")!r}
c.Spawner.cmd = [{str(BIN / "jupyterhub-singleuser")!r}]
c.Spawner.args = {args!r}
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 300
c.Spawner.http_timeout = 300
c.JupyterHub.db_url = "sqlite:///{base / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = {str(base / "cookie_secret")!r}
c.JupyterHub.cleanup_servers = True
"""
    (base / "jupyterhub_config.py").write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    log = open(base / "jupyterhub.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(BIN / "jupyterhub"), "-f", str(base / "jupyterhub_config.py")], cwd=base, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        import requests

        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"{url}/hub/api/", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterHub did not start:\n{(base / 'jupyterhub.log').read_text()[-4000:]}")
            time.sleep(1)
        yield url
    finally:
        proc.terminate()  # the hub stops the students' servers and its proxy (cleanup_servers)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()


def log_in(url: str, name: str):  # noqa: ANN201 - a requests.Session
    """Log in through the hub's form as ``name``; returns the session once the student's server answers."""
    import requests

    s = requests.Session()
    form = s.get(f"{url}/hub/login", timeout=30)
    xsrf = re.search(r'name="_xsrf"\s+value="([^"]+)"', form.text)
    r = s.post(f"{url}/hub/login", data={"username": name, "password": "any", **({"_xsrf": xsrf[1]} if xsrf else {})},
               timeout=300)
    assert r.status_code == 200, f"login of {name}: HTTP {r.status_code}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # the hub spawns the server; until it answers, /user/<name> redirects
        r = s.get(f"{url}/user/{name}/lab", timeout=60)  # once up: the hub's OAuth, then JupyterLab's page
        if r.status_code == 200 and r.url.split("?")[0].endswith(f"/user/{name}/lab"):
            assert "jupyter-config-data" in r.text, f"{name}: /user/{name}/lab is not JupyterLab's page"
            return s
        time.sleep(2)
    pytest.fail(f"{name}'s server did not start (last answer: HTTP {r.status_code} from {r.url})")


def run_cell(url: str, name: str, session, code: str) -> str:  # noqa: ANN001
    """Start a kernel on ``name``'s server, run ``code`` in it over the websocket, return what it printed."""
    import websocket

    base = f"{url}/user/{name}"
    xsrf = session.cookies.get("_xsrf", path=f"/user/{name}/") or session.cookies.get("_xsrf") or ""
    headers = {"X-XSRFToken": xsrf}
    r = session.post(f"{base}/api/kernels", json={"name": "python3"}, headers=headers, timeout=120)
    assert r.status_code == 201, f"{name}: starting a kernel: HTTP {r.status_code} {r.text[:300]}"
    kernel = r.json()["id"]
    cookie = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    ws = websocket.create_connection(f"{base.replace('http', 'ws', 1)}/api/kernels/{kernel}/channels",
                                     cookie=cookie, header=[f"X-XSRFToken: {xsrf}"], timeout=300)
    try:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({"channel": "shell", "header": {"msg_id": msg_id, "msg_type": "execute_request",
                                                           "username": name, "session": uuid.uuid4().hex,
                                                           "version": "5.3"},
                            "parent_header": {}, "metadata": {},
                            "content": {"code": code, "silent": False, "store_history": True,
                                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
        printed = []
        while True:  # outputs come on iopub before the kernel reports idle for this request
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                printed.append(content["text"])
            elif kind == "error":
                printed.append(f"{content['ename']}: {content['evalue']}")
            elif kind == "status" and content["execution_state"] == "idle":
                break
        return "".join(printed)
    finally:
        ws.close()
        session.delete(f"{base}/api/kernels/{kernel}", headers=headers, timeout=60)


def test_two_students_each_run_a_cell(hub: str) -> None:
    sessions = {name: log_in(hub, name) for name in STUDENTS}  # each has opened /user/<name>/lab
    for name, s in sessions.items():
        assert run_cell(hub, name, s, CELL).split() == [name, "nas_lab", "42"]
    other = sessions["alice"].get(f"{hub}/user/bob/api/contents", timeout=60, allow_redirects=False)
    assert other.status_code in (302, 403), f"alice reached bob's server: HTTP {other.status_code}"
