"""llama.cpp worker: xllamacpp's in-process llama.cpp HTTP server, configured from the deployment."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

log = logging.getLogger(__name__)


def serve(port: int, spec: dict[str, Any]) -> None:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = spec["model"]
    params.n_parallel = int(spec["n_parallel"])
    params.n_ctx = int(spec["n_ctx"])
    params.n_batch = int(spec["n_batch"])
    threads = int(spec.get("threads") or os.cpu_count() or 1)
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.cont_batching = True
    params.endpoint_metrics = True
    params.port = port
    params.hostnames = ["127.0.0.1"]
    params.warmup = True
    server = xllamacpp.Server(params)
    log.info("llama.cpp serving %s on 127.0.0.1:%d with %d slots", spec["model"], port, params.n_parallel)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    del server
    os._exit(0)
