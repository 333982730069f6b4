"""Worker processes for `digest run --workers N`: each sends one run of ids of an issue's pending deliveries.

The split is explicit, so that it is also the shape for several hosts over a shared ledger: a worker is
given the config once, then (issue id, first delivery id, last delivery id) per issue, and needs nothing
else. It opens its own Store connection (a connection never crosses a process), renders the variants its
range needs, and claims and records its own batches on the same ledger, exactly as one process does
(dispatch.py): a batch is claimed, with the last-moment active check, and committed before it goes out.
SQLite serialises the writers (WAL, BEGIN IMMEDIATE, a 30 s busy timeout: store/connection.py).

Each worker renders the variants its range needs, lazily as one process does: a variant is compiled once by
each worker that meets it, so at most N times. An issue's rows are planned in order of topics, so a range
holds a run of topic choices and most variants are met by one worker only (the benchmark: 18 compiles with
two workers, 15 with one; about 20 ms each). Rendering in the parent and shipping the results would save
those few, but a worker would then need more than the config and its range.

The parent (digest.py) holds the run lock for the whole run and does per issue what comes before and
after the batches (dispatch.Dispatcher.prepare_issue, conclude_issue). When a worker trips the breaker,
fails or dies, the parent asks the others to stop before their next claim and waits for them; a dead
worker's claimed batch stays `sending` and the next run marks it unknown, like any interrupted run. A
worker dies with its parent (PR_SET_PDEATHSIG): no worker sends after the run lock is gone.

Each worker is a fresh interpreter (`python -c`, the same package the parent runs) talking to the parent
over a pipe of pickled messages: nothing of the parent is inherited, its SQLite connection above all, no
main module is re-run, and each worker's peak RSS is its own.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import sys
from dataclasses import dataclass
from multiprocessing import Pipe
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable

from .context import Context
from .dispatch import Dispatcher, Tally, requires_consent
from .messengers import messenger_from_config
from .model import Messenger
from .render import Renderer, issue_variants
from .tokens import Tokens

PR_SET_PDEATHSIG = 1  # linux/prctl.h
#: a messenger's own counters a worker reports, when it has them (the benchmark's messengers do)
MESSENGER_FIGURES = ("requests", "recipients", "encode_seconds", "floor_seconds")
STOP_WAIT = 600.0  # seconds a stopping worker may take to finish the batch it has in flight


class WorkerFailed(Exception):
    """A worker died or failed; the message is the run's one line."""


@dataclass
class WorkerStats:
    """What a worker process reports when it ends (the benchmark shows it): its own peak RSS and CPU."""
    peak_rss_mb: float
    cpu_s: float
    mjml_compiles: int
    premailer_compiles: int
    render_s: float
    ledger_write_s: float
    messenger_s: float
    messenger_figures: dict[str, float]  # what the messenger counts of itself (MESSENGER_FIGURES it has)


class RangeWorker:
    """One worker's own parts: a Store connection, the renderer, the link signer and a messenger."""

    def __init__(self, config: Any, share: int = 1, messenger_factory: Callable[[], Messenger] | None = None,
                 on_progress: Callable[[int], None] | None = None, should_stop: Callable[[], bool] | None = None):
        self.context = Context(config)
        self.store = self.context.store
        self.renderer = Renderer.from_config(config)
        self.messenger = messenger_factory() if messenger_factory else messenger_from_config(config)
        # the site's rate limit is for the whole run: each of `share` workers takes its part
        self.dispatcher = Dispatcher(self.store, self.messenger, Tokens(config.require_secret()), config.site_url,
                                     rate_limit=config.rate_limit / share, on_progress=on_progress,
                                     require_consent=requires_consent(config), should_stop=should_stop)

    def send_range(self, issue_id: int, first: int, last: int) -> Tally:
        tally = Tally()
        issue = self.store.get_issue(issue_id)
        if issue is None or issue["status"] != "sending":  # planned by the parent, not yet concluded
            return tally
        variant_for = issue_variants(self.renderer, issue, self.store.issue_summaries(issue_id),
                                     self.context.segments[issue["segment"]])
        self.dispatcher.send_range(issue_id, variant_for, tally, (first, last))
        return tally

    def stats(self) -> WorkerStats:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        counts, seconds = self.renderer.stats.counts, self.renderer.stats.seconds
        return WorkerStats(round(usage.ru_maxrss / 1024, 1), round(usage.ru_utime + usage.ru_stime, 3),
                           counts["mjml"], counts["premailer"], round(sum(seconds.values()), 3),
                           round(self.store.write_seconds, 3), round(self.dispatcher.send_seconds, 3),
                           messenger_figures(self.messenger))

    def close(self) -> None:
        try:
            self.messenger.close()
        finally:
            self.context.close()


def messenger_figures(messenger: Any) -> dict[str, float]:
    return {name: value for name in MESSENGER_FIGURES
            if isinstance(value := getattr(messenger, name, None), (int, float))}


def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL when the parent goes, however it goes (Linux); if it is gone already, go now."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: a dead parent shows as a broken pipe at the next message
        pass
    if os.getppid() != parent_pid:
        os._exit(1)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def worker_main(fd: int, parent_pid: int) -> None:
    """A worker process. In: ("start", config, share, messenger_factory, progress), then ("range", issue_id,
    first, last) each, ("stop",) and ("quit",). Out: ("progress", n) per batch when asked for, ("done", Tally)
    per range, ("failed", line), and at the end ("stats", WorkerStats)."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it asks its workers to stop
    conn = Connection(fd)
    inbox: list[tuple] = []
    stopped = False

    def should_stop() -> bool:
        nonlocal stopped
        while conn.poll():
            message = conn.recv()
            stopped = stopped or message[0] == "stop"
            inbox.append(message)
        return stopped

    _, config, share, messenger_factory, progress = conn.recv()
    try:
        worker = RangeWorker(config, share, messenger_factory, should_stop=should_stop,
                             on_progress=(lambda n: conn.send(("progress", n))) if progress else None)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as its one line
        conn.send(("failed", one_line(exc)))
        sys.exit(1)
    try:
        while (message := inbox.pop(0) if inbox else conn.recv())[0] != "quit":
            if message[0] == "range":
                stopped = False
                conn.send(("done", worker.send_range(*message[1:])))
            # a "stop" while idle: nothing to stop
    except Exception as exc:  # noqa: BLE001
        conn.send(("failed", one_line(exc)))
        sys.exit(1)
    finally:
        worker.close()
    conn.send(("stats", worker.stats()))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # all is closed: the interpreter's teardown would only keep the parent waiting


class _Worker:
    def __init__(self, number: int, process: subprocess.Popen, conn: Connection):
        self.number, self.process, self.conn = number, process, conn
        self.task: tuple[int, int, int] | None = None

    def tell(self, *message: Any) -> bool:
        try:
            self.conn.send(message)
            return True
        except OSError:  # it is gone
            return False


class WorkerPool:
    """N worker processes for one run, started once and given one range of each issue in turn."""

    def __init__(self, config: Any, count: int, messenger_factory: Callable[[], Messenger] | None = None,
                 on_progress: Callable[[int], None] | None = None):
        self.count = count
        self.on_progress = on_progress or (lambda n: None)
        self.workers: list[_Worker] = []
        self.stats: list[WorkerStats] = []
        package_root = str(Path(__file__).resolve().parent.parent)  # the workers run the parent's code
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        try:
            for number in range(1, count + 1):
                parent_end, child_end = Pipe()
                fd = child_end.fileno()
                process = subprocess.Popen(
                    [sys.executable, "-c", f"from newsletter.workers import worker_main; worker_main({fd}, {os.getpid()})"],
                    pass_fds=(fd,), stdin=subprocess.DEVNULL, env=env)
                child_end.close()
                worker = _Worker(number, process, parent_end)
                self.workers.append(worker)
                # progress only for a progress bar: each message wakes the parent, a cost on a busy machine
                parent_end.send(("start", config, count, messenger_factory, on_progress is not None))
        except BaseException:
            self.close()
            raise

    def describe(self, worker: _Worker) -> str:
        where = f" (issue {worker.task[0]}, deliveries {worker.task[1]}-{worker.task[2]})" if worker.task else ""
        return f"worker {worker.number} of {self.count}{where}"

    def run_issue(self, issue_id: int, ranges: list[tuple[int, int]], tally: Tally) -> None:
        """Each range to a worker, then wait for all; their tallies are added to `tally`. WorkerFailed when one
        died or failed (after the others stopped before their next claim)."""
        failure = ""
        busy: list[_Worker] = []
        for worker, (first, last) in zip(self.workers, ranges):
            worker.task = (issue_id, first, last)
            if not worker.tell("range", issue_id, first, last):
                failure = self._death(worker)
                break
            busy.append(worker)
        stopping, told = bool(failure), set()
        while busy:
            if stopping:
                for worker in busy:
                    if worker.number not in told:
                        told.add(worker.number)
                        worker.tell("stop")
            ready = wait([w.conn for w in busy])
            for worker in [w for w in busy if w.conn in ready]:
                outcome = self._read(worker, tally)
                if outcome is None:
                    continue
                busy.remove(worker)
                failure = failure or outcome
                # a worker gone, or the relay down for all: the others stop before their next claim
                stopping = stopping or bool(outcome) or bool(tally.tripped)
        if failure:
            raise WorkerFailed(failure)

    def _read(self, worker: _Worker, tally: Tally) -> str | None:
        """Whatever the worker has sent; None while it is still busy, "" once its range is done, else why not."""
        try:
            while worker.conn.poll():
                kind, value = worker.conn.recv()
                if kind == "progress":
                    self.on_progress(value)
                elif kind == "done":
                    tally.add(value)
                    return ""
                elif kind == "failed":
                    return f"{self.describe(worker)}: {value}"
        except (EOFError, OSError):
            return self._death(worker)
        return None

    def _death(self, worker: _Worker) -> str:
        try:  # it may have said why before it went
            while worker.conn.poll():
                kind, value = worker.conn.recv()
                if kind == "failed":
                    return f"{self.describe(worker)}: {value}"
        except (EOFError, OSError):
            pass
        try:
            code: int | None = worker.process.wait(10)
        except subprocess.TimeoutExpired:
            code = None
        how = (f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exited with status {code}" if code is not None else "stopped answering")
        return (f"{self.describe(worker)} {how}: the batch it had claimed becomes unknown at the next run, "
                "the rest of its range is still pending")

    def close(self) -> None:
        """Let each live worker end (and report its figures); whatever does not end in time is killed.
        A worker still busy (the parent was interrupted) stops before its next claim."""
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.tell("stop") and worker.tell("quit")
        for worker in self.workers:
            try:
                while worker.conn.poll(STOP_WAIT):
                    kind, value = worker.conn.recv()
                    if kind == "stats":
                        self.stats.append(value)
                        break
            except (EOFError, OSError):
                pass
            try:
                worker.process.wait(10)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
            worker.conn.close()
