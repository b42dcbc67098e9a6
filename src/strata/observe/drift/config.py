"""Config of drift detection (``drift:`` in strata.yaml)."""

from __future__ import annotations

from pydantic import Field

from strata.config.base import Strict


class DriftEffects(Strict):
    """The smallest effect each kind of signal must show to be flagged, whatever its p-value (a huge sample
    makes any shift significant; these say which shifts matter)."""

    embedding: float = Field(0.002, ge=0, description="MMD² (RBF kernel, median-heuristic bandwidth) of the "
                             "prompt, answer and retrieved-chunk embeddings")
    length: float = Field(0.1, ge=0, le=1, description="Kolmogorov-Smirnov distance D of prompt/answer tokens")
    rate: float = Field(0.05, ge=0, le=1, description="Absolute change of the refusal and tool-call rates")
    category: float = Field(0.1, ge=0, le=1, description="Cramér's V of the language mix")


class DriftSettings(Strict):
    """Sampled observations of live traffic per route, compared with a reference window (``observe.drift``)."""

    enabled: bool = False
    sample_rate: float = Field(0.05, ge=0, le=1, description="Share of chat/completion requests observed, after "
                               "their response is sent")
    routes: list[str] | None = Field(None, description="Only these routes (default: every route that serves chat "
                                     "or completions)")
    embedding_route: str | None = Field("minilm", description="The embeddings route the prompt and answer "
                                        "embeddings come from (ledger role drift); null: no embedding signals")
    interval: float = Field(300.0, gt=0, description="Seconds between drift checks (one report per route)")
    window: float = Field(86400.0, gt=0, description="Seconds of traffic in the current window")
    reference_days: float = Field(7.0, gt=0, description="Without a registered baseline, the reference is this "
                                  "many days before the current window")
    min_samples: int = Field(100, ge=5, description="Fewer observations than this on either side: the signal "
                             "is not tested")
    alpha: float = Field(0.01, gt=0, lt=1, description="Family-wise error rate per report (Holm-corrected)")
    min_effect: DriftEffects = DriftEffects()
    permutations: int = Field(500, ge=50, le=100000, description="Permutations of the MMD test (raised to at "
                              "least 2 x 8 signals / alpha, so its smallest p-value can pass the correction)")
    max_embeddings: int = Field(500, ge=20, le=5000, description="Embeddings per side in one MMD test "
                                "(subsampled; its cost is quadratic)")
    max_rows: int = Field(20000, ge=100, description="Newest observations read per window")
    retention_days: float = Field(30.0, gt=0, description="Observations older than this are deleted")
    queue: int = Field(1000, ge=1, description="Observations waiting for their embeddings; beyond, new ones are "
                       "dropped (counted as dropped_busy)")
    batch_size: int = Field(32, ge=1, le=512, description="Observations embedded in one embeddings call")
    flush_interval: float = Field(1.0, gt=0, description="Seconds between embedding/writing passes")
    max_text_chars: int = Field(2000, ge=16, description="Text cut to this length before it is embedded")
