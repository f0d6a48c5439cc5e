"""The grading sandbox: one process group per student, run in parallel.

:func:`run_all` starts :mod:`nas_lab.grading.worker` per student, ``jobs`` at a time, each in a new
session with ``RLIMIT_DATA`` (memory), ``RLIMIT_FSIZE`` and no core files; when the grader runs as root
each slot also runs under its own unprivileged uid (so a submission can write nowhere but its folder, and
cannot signal other students' processes). Past the wall-clock limit, or when a worker ends, every process
of the job is killed: its process group, every process carrying its job token in its environment, and
(sandboxed) every process of its uid. Each job's folder (its private course, package and home) is laid
out beforehand by :mod:`nas_lab.grading.course`.
"""

from __future__ import annotations

import os
import resource
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from nas_lab.grading.submissions import Submission

UID_BASE = 61000


@dataclass
class Limits:
    """How much each submission may use."""

    jobs: int = 1
    timeout: float = 900.0  # wall-clock seconds per student
    cell_timeout: int = 300  # seconds per cell
    memory_mb: int = 4096  # RLIMIT_DATA of the worker and of the kernel, each
    grace: int = 10  # seconds an interrupted cell has to stop
    sandbox_user: bool = True  # when root: run each slot under its own uid


@dataclass
class Job:
    """One student's grading run: the submission, its cache key, its folder, and how the run ended."""

    student: str
    folder: Path  # laid out by nas_lab.grading.course.prepare
    sub: Submission
    key: str  # fingerprint of the normalised notebook, the lab and the grader: the cache key
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    returncode: int | None = None
    timed_out: bool = False
    seconds: float = 0.0


_CAN_DROP: dict[str, bool] = {}


def sandboxed(limits: Limits) -> bool:
    """Whether slots run under their own uids: only as root, and only if an unprivileged uid can run this
    interpreter (it cannot when Python lives in a private folder such as /root)."""
    if not (limits.sandbox_user and hasattr(os, "geteuid") and os.geteuid() == 0):
        return False
    if sys.executable not in _CAN_DROP:
        try:
            ok = subprocess.run([sys.executable, "-c", "import nbgrader, nas_lab"], user=UID_BASE, group=UID_BASE,
                                extra_groups=[], cwd="/", env={"PATH": "/usr/bin:/bin"}, capture_output=True,
                                timeout=120).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        _CAN_DROP[sys.executable] = ok
    return _CAN_DROP[sys.executable]


def _env(job: Job) -> dict[str, str]:
    f, home = job.folder, str(job.folder / "home")
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k in ("LANG", "LC_ALL", "TZ", "TERM")}
    env.update({
        "PATH": f"{bin_dir}{os.pathsep}/usr/local/bin{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": home, "TMPDIR": home, "IPYTHONDIR": f"{home}/.ipython", "MPLCONFIGDIR": f"{home}/.matplotlib",
        "XDG_CACHE_HOME": f"{home}/.cache", "XDG_CONFIG_HOME": f"{home}/.config", "XDG_DATA_HOME": f"{home}/.local",
        "JUPYTER_CONFIG_DIR": f"{home}/.jupyter", "JUPYTER_DATA_DIR": f"{home}/.jupyter-data",
        "JUPYTER_RUNTIME_DIR": f"{home}/.jupyter-runtime", "TORCH_HOME": f"{home}/.torch", "MPLBACKEND": "Agg",
        "PYTHONPATH": str(f / "site"), "NAS_LAB_DATA": str(f / "site" / "data"), "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1", "NAS_LAB_GRADE_JOB": job.token, "NBGRADER_EXECUTION": "autograde",
    })
    return env


def _data_mb() -> int:
    """This process's data segment (``VmData``, what RLIMIT_DATA limits), in MB; 0 if unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmData:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def _limit(memory_mb: int, sandbox: bool) -> None:
    """Limits of a worker: ``memory_mb`` more than it uses now (its kernel gets exactly ``memory_mb``, see
    :class:`~nas_lab.grading.execute.GuardedExecute`), 2 GB files, no core dumps, a process cap."""
    mem = (memory_mb + _data_mb()) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (mem, mem))
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 30, 2 << 30))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sandbox:
        resource.setrlimit(resource.RLIMIT_NPROC, (4096, 4096))


def _chown(path: Path, uid: int) -> None:
    for p in [path, *path.rglob("*")]:
        os.lchown(p, uid, uid)


class Forked:
    """A worker forked from this process (which has imported nbgrader already: ~5 s saved per student)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.returncode = pid, None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float = 30) -> int | None:
        end = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
        return self.returncode


def _child(job: Job, limits: Limits, uid: int | None) -> None:
    """In the forked child: new session, log file, limits, uid, environment, then the worker. Never returns."""
    code = 70
    try:
        os.setsid()
        fd = os.open(job.folder / "worker.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        _limit(limits.memory_mb, uid is not None)
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        os.environ.clear()
        os.environ.update(_env(job))
        import asyncio  # the parent's event loop (its epoll instance is shared after fork) must not be reused

        asyncio.set_event_loop(None)
        try:
            from jupyter_core import utils

            utils._loop.set(None)
        except (ImportError, AttributeError):
            pass
        os.chdir(job.folder / "home")
        from nas_lab.grading import worker

        code = worker.main([str(job.folder / "job.json")])
    except BaseException:  # noqa: BLE001 - report and leave
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def preload() -> None:
    """Import what the workers need, once, before they are forked."""
    import nbconvert.exporters  # noqa: F401
    import nbgrader.apps  # noqa: F401

    import nas_lab.grading.worker  # noqa: F401


def _launch(job: Job, slot: int, limits: Limits) -> subprocess.Popen | Forked:
    sandbox = sandboxed(limits)
    uid = UID_BASE + slot if sandbox else None
    if uid is not None:
        for d in ("course", "home", "out"):
            _chown(job.folder / d, uid)
    if hasattr(os, "fork") and threading.active_count() == 1:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(job, limits, uid)
        return Forked(pid)
    kw: dict = {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}
    log = open(job.folder / "worker.log", "wb")  # noqa: SIM115 - closed by the child's exit
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "nas_lab.grading.worker", str(job.folder / "job.json")],
            cwd=job.folder / "home", env=_env(job), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=lambda: _limit(limits.memory_mb, sandbox), **kw)
    finally:
        log.close()


def _token_pids(token: str) -> set[int]:
    """Processes whose environment carries the job token (children that left the process group too)."""
    needle = f"NAS_LAB_GRADE_JOB={token}".encode()
    found = set()
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if needle in (d / "environ").read_bytes().split(b"\0"):
                found.add(int(d.name))
        except OSError:
            continue
    return found - {os.getpid()}


def kill(job: Job, proc: subprocess.Popen | Forked, slot: int, limits: Limits) -> None:
    """Kill every process of the job (group, token carriers, and the slot's uid when sandboxed)."""
    for _ in range(3):
        targets = _token_pids(job.token) | {proc.pid}
        for pid in targets:
            for fn, arg in ((os.killpg, pid), (os.kill, pid)):
                try:
                    fn(arg, signal.SIGKILL)
                except (ProcessLookupError, PermissionError, OSError):
                    pass
        if sandboxed(limits):  # kill(-1) from the slot's uid: every process of that uid, and only those
            uid = UID_BASE + slot
            code = (f"import os, signal\nif os.getuid() == os.geteuid() == {uid} != 0:\n"
                    "    try: os.kill(-1, signal.SIGKILL)\n    except ProcessLookupError: pass")
            subprocess.run([sys.executable, "-c", code], user=uid, group=uid, extra_groups=[], env={},
                           check=False, timeout=30)
        time.sleep(0.05)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    if proc.returncode is None and isinstance(proc, subprocess.Popen):
        proc.poll()


def run_all(jobs: list[Job], limits: Limits, on_done=None) -> None:  # noqa: ANN001 - callback
    """Run the jobs, ``limits.jobs`` at a time; ``on_done(job)`` is called as each one finishes."""
    pending = deque(jobs)
    if jobs:
        preload()
    running: dict[int, tuple[Job, subprocess.Popen | Forked, float]] = {}
    free = list(range(max(1, limits.jobs)))
    while pending or running:
        while pending and free:
            slot, job = free.pop(0), pending.popleft()
            running[slot] = (job, _launch(job, slot, limits), time.monotonic())
        time.sleep(0.1)
        for slot, (job, proc, start) in list(running.items()):
            rc = proc.poll()
            if rc is None and time.monotonic() - start <= limits.timeout:
                continue
            job.timed_out = rc is None
            kill(job, proc, slot, limits)
            job.returncode, job.seconds = proc.returncode, time.monotonic() - start
            del running[slot]
            free.append(slot)
            free.sort()
            if on_done is not None:
                on_done(job)
