"""Online quality: sample a share of live answers after they were served, score them (LLM-as-judge through a
route, refusal, empty/truncated, JSON validity), store the scores next to ``/v1/feedback``'s, aggregate them
per route and deployment over windows, and feed the canary analysis.

Modules: ``config`` (per-route ``quality:`` and the top-level ``quality:`` rubrics), ``scorers`` (the scorer
protocol, the registry by name, the built-in heuristic scorers), ``judge`` (versioned rubrics and the judge
scorer), ``sampler`` (the background sampling with bounded concurrency), ``tables`` and ``store`` (the
``quality_scores`` table), ``report`` (windows, means and confidence intervals).
"""
