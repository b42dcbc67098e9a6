"""llama.cpp worker: xllamacpp's in-process llama.cpp HTTP server, configured from the deployment.

Jinja chat templates are on (tool calls are parsed into OpenAI ``tool_calls``); with the unified KV cache
(``kv_unified``) the ``n_ctx`` tokens are one pool shared by the slots, so a single request can use all of
them instead of ``n_ctx / n_parallel``.
"""

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
    params.kv_unified = bool(spec.get("kv_unified", True))  # one request may use the whole n_ctx
    params.use_jinja = True  # the model's Jinja chat template: tools, tool_choice, response_format
    if spec.get("chat_template"):
        params.chat_template = spec["chat_template"]
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
