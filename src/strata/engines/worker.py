"""Entry point of a local engine worker process: ``python -m strata.engines.worker TYPE --port N --spec JSON``.

Kept free of gateway imports so a worker starts fast. A worker exits when its parent (the gateway)
disappears, so a killed gateway never leaves orphaned model servers behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time


def watch_parent() -> None:
    parent = os.getppid()

    def loop() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=loop, daemon=True, name="parent-watch").start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="strata-worker")
    parser.add_argument("engine", choices=["llamacpp", "sentence-transformers"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--spec", required=True, help="JSON engine parameters")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    watch_parent()
    spec = json.loads(args.spec)
    if args.engine == "llamacpp":
        from strata.engines.workers.llamacpp import serve
    else:
        from strata.engines.workers.embeddings import serve
    serve(args.port, spec)


if __name__ == "__main__":
    main()
