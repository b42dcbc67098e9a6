"""Drift detection: do prompts, answers and retrieved chunks still look like what a route was validated on?

``config`` (``drift:`` settings), ``features`` (what one request becomes: lengths, refusal, language, tool
call), ``stats`` (the two-sample tests, pure), ``store``/``tables`` (observations, baselines, reports),
``report`` (reference vs current window for one route), ``monitor`` (sampling, background embedding, the
control loops, metrics and ``drift_detected`` events), ``setup`` (built by the composition root).

Retrieval code reports the chunks it used with ``state.observe.drift.record_retrieved(route, embeddings)``
(when drift is on: ``state.observe.drift`` is None otherwise).
"""
