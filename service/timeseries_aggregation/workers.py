"""Several server processes on one port: `serve --workers N`.

One Python process serves its calls on one core (the interpreter runs one thread at a time),
so the supervisor, the process `serve` starts, runs N worker processes of this same command.
Each is a whole server with its own database pools, and all listen on the one port with
SO_REUSEPORT; the kernel spreads new connections over them. The kernel lets a socket join a
port only when every socket on it asked for SO_REUSEPORT, and an independent `serve` never
asks: it still fails at start-up on a port the workers hold.

What must happen once stays with the supervisor: the embedded database, the migrations, the
background jobs (history and readings retention, compression policy). It forwards SIGTERM,
SIGINT and SIGHUP to every worker; on shutdown every worker reports NOT_SERVING and drains,
so a health probe gets the same answer whichever worker it reaches. A worker that dies stops
the whole server (an orchestrator restarts it as one unit), rather than leaving fewer workers
behind one port than were asked for.
"""

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from timeseries_aggregation.config import ENV_PREFIX, Config, join_host_port, split_host_port
from timeseries_aggregation.errors import StartupError

logger = logging.getLogger(__name__)

# Set by the supervisor for its workers only; not a setting of the service.
WORKER_INDEX_VARIABLE = ENV_PREFIX + "WORKER_INDEX"
WORKER_READY_FD_VARIABLE = ENV_PREFIX + "WORKER_READY_FD"
READY = b"ready\n"
# After the drain's grace period, how long a worker may take to close its pools and exit.
EXIT_MARGIN_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """This process is worker `index` of a supervisor; it reports readiness on `ready_fd`."""

    index: int
    ready_fd: int


def worker_role(environ: Mapping[str, str] | None = None) -> WorkerRole | None:
    env = os.environ if environ is None else environ
    index = env.get(WORKER_INDEX_VARIABLE)
    ready_fd = env.get(WORKER_READY_FD_VARIABLE)
    if index is None or ready_fd is None:
        return None
    return WorkerRole(int(index), int(ready_fd))


def report_ready(role: WorkerRole) -> None:
    """Tell the supervisor this worker serves (its port is bound, its pools are open)."""
    try:
        os.write(role.ready_fd, READY)
    finally:
        os.close(role.ready_fd)


def shared_listen_address(address: str) -> str:
    """The address with a port the workers can share: port 0 becomes a free port, chosen once."""
    host, port = split_host_port(address)
    if port != 0:
        return address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    return join_host_port(host, port)


def _metrics_address(address: str | None, index: int) -> str | None:
    """Worker `index`'s metrics endpoint: the configured port plus its index (0: any free port)."""
    if address is None:
        return None
    host, port = split_host_port(address)
    if port == 0:
        return address
    return join_host_port(host, port + index)


@dataclass(slots=True)
class WorkerGroup:
    """The running workers, in index order."""

    processes: list[asyncio.subprocess.Process]
    listen_address: str

    def send(self, signum: signal.Signals) -> None:
        for process in self.processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signum)

    async def first_exit(self) -> tuple[int, int]:
        """Wait until a worker exits; its index and exit code."""
        waits = {asyncio.ensure_future(process.wait()): index for index, process in enumerate(self.processes)}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        finished = next(iter(done))
        return waits[finished], finished.result()

    async def stop(self, grace_seconds: float) -> None:
        """SIGTERM to every worker; those still running after the grace period are killed."""
        self.send(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace_seconds + EXIT_MARGIN_SECONDS):
                for process in self.processes:
                    await process.wait()
        except TimeoutError:
            for index, process in enumerate(self.processes):
                if process.returncode is None:
                    logger.error("worker %d did not exit after SIGTERM; killing it", index)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()


async def _start_worker(
    index: int, config: Config, database_url: str, listen_address: str
) -> tuple[asyncio.subprocess.Process, int]:
    """Start worker `index`; the process and the pipe it reports readiness on."""
    read_end, write_end = os.pipe()
    environment = dict(os.environ)
    environment.update(
        {
            WORKER_INDEX_VARIABLE: str(index),
            WORKER_READY_FD_VARIABLE: str(write_end),
            # The embedded database's URL too, which only the supervisor knows.
            ENV_PREFIX + "DATABASE_URL": database_url,
            ENV_PREFIX + "LISTEN_ADDRESS": listen_address,
        }
    )
    metrics_address = _metrics_address(config.metrics_address, index)
    if metrics_address is not None:
        environment[ENV_PREFIX + "METRICS_ADDRESS"] = metrics_address
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "timeseries_aggregation",
            "serve",
            env=environment,
            pass_fds=(write_end,),
            # Ctrl-C at a terminal reaches the supervisor alone, which stops the workers in order.
            start_new_session=True,
        )
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return process, read_end


async def _readiness(read_end: int) -> bool:
    """True once the worker reports it serves; False when it exits first."""
    try:
        return await asyncio.to_thread(os.read, read_end, len(READY)) == READY
    finally:
        os.close(read_end)


@asynccontextmanager
async def worker_processes(config: Config, database_url: str) -> AsyncIterator[WorkerGroup]:
    """config.workers servers on one port; yields once every one serves, stops them all on exit."""
    group = WorkerGroup([], shared_listen_address(config.listen_address))
    try:
        read_ends = []
        for index in range(config.workers):
            process, read_end = await _start_worker(index, config, database_url, group.listen_address)
            group.processes.append(process)
            read_ends.append(read_end)
        ready = await asyncio.gather(*(_readiness(read_end) for read_end in read_ends))
        if not all(ready):
            failed = ready.index(False)
            code = await group.processes[failed].wait()
            raise StartupError(
                f"worker {failed} of {config.workers} exited while starting (exit code {code}); "
                "its log says why"
            )
        yield group
    finally:
        await group.stop(config.shutdown_grace_seconds)
