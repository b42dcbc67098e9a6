"""What journaling one ledger row costs the event loop: ``Journal.append`` timed on the main thread while
another thread does Python work the way the ledger writer does (30 ms of encoding every 250 ms) and the
journal is fsynced every second, as in the gateway.

    python bench/journal_append.py            # the mapped segment (what the gateway uses) and write()

``os.write`` releases the GIL; with another thread ready to run, the event loop then waits for it to give
the GIL back (up to the 5 ms switch interval, and more). A copy into the segment's shared mapping makes no
system call and keeps the GIL.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from strata.observe.journal import Journal

NOW = datetime.now(UTC)
ROW = {"request_id": "req_0123456789abcdef0123", "started_at": NOW, "finished_at": NOW, "endpoint": "chat",
       "key_id": "k_abcdef012345", "team": "admin", "user": None, "tags": {}, "route": "fixed",
       "deployment": "fixed-upstream", "engine": "openai", "model": "fixed", "stream": False, "prompt_tokens": 7,
       "completion_tokens": 3, "latency_ms": 0.51234, "ttft_ms": None, "tpot_ms": None, "status": 200,
       "error_type": None, "cost_usd": 1.3e-05, "role": "primary", "tier": None, "route_score": None,
       "attempts": [{"deployment": "fixed-upstream", "outcome": "ok", "status": 200, "ms": 0.41}],
       "saved_usd": None, "cached_tokens": None}


def run(mapped: bool, seconds: float) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="journal-bench-") as tmp:
        journal = Journal(Path(tmp), mapped=mapped)
        journal.open()
        stop = threading.Event()

        def writer_thread() -> None:  # the ledger writer: Python work between its database calls
            while not stop.wait(0.25):
                end = time.perf_counter() + 0.03
                while time.perf_counter() < end:
                    sum(range(1000))

        def fsync_thread() -> None:
            while not stop.wait(1.0):
                journal.sync()

        threads = [threading.Thread(target=writer_thread), threading.Thread(target=fsync_thread)]
        for t in threads:
            t.start()
        times = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            for _ in range(200):  # the rest of the request's work on the event loop
                sum(range(100))
            started = time.perf_counter()
            journal.append(ROW)
            times.append(time.perf_counter() - started)
        stop.set()
        for t in threads:
            t.join()
        journal.close(drained=False)
    return sorted(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    for _ in range(args.rounds):
        for mapped in (True, False):
            t = run(mapped, args.seconds)
            n = len(t)
            print(f"{'mapped' if mapped else 'write()':8} rows {n:6d}  mean {sum(t) / n * 1e6:6.1f} us  "
                  f"p50 {t[n // 2] * 1e6:5.1f} us  p99 {t[int(n * 0.99)] * 1e6:6.1f} us  "
                  f"p99.9 {t[int(n * 0.999)] * 1e3:6.2f} ms  max {t[-1] * 1e3:6.2f} ms", flush=True)


if __name__ == "__main__":
    main()
