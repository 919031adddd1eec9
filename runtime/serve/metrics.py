"""Prometheus metrics of the service (a leaf of the import map in ``__init__``)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """Prometheus metrics of one app (its own registry, so several apps can coexist).

    With ``multiprocess_dir`` (``--processes N``: the parent sets ``PROMETHEUS_MULTIPROC_DIR``
    for its children), every process writes its values there and :meth:`exposition` sums them
    with prometheus-client's ``MultiProcessCollector``, so any process answers for all.
    """

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        r = self.registry = CollectorRegistry()
        self.requests = Counter("captcha_edge_requests", "HTTP requests to /v1/recognize, by "
                                "model and status code", ["model", "status"], registry=r)
        self.errors = Counter("captcha_edge_request_errors", "Requests answered with an error, "
                              "by model and reason", ["model", "reason"], registry=r)
        self.images = Counter("captcha_edge_images", "Images recognized, by model and outcome",
                              ["model", "outcome"], registry=r)
        self.duration = Histogram(
            "captcha_edge_request_duration_seconds", "Time from request start to response, "
            "POST /v1/recognize", ["model"], registry=r,
            buckets=(.001, .0025, .005, .0075, .01, .015, .02, .03, .05, .075, .1, .25, .5,
                     1.0, 2.5, 5.0, 10.0))
        self.batch = Histogram("captcha_edge_batch_size", "Images per job given to a worker "
                               "thread", ["model"], registry=r,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.in_flight = Gauge("captcha_edge_requests_in_flight", "Requests being answered",
                               registry=r, multiprocess_mode="livesum")
        self.models = Gauge("captcha_edge_models_loaded", "Models being served", registry=r,
                            multiprocess_mode="livemax")
        self.reloads = Counter("captcha_edge_model_reloads", "Re-reads of the model files, by "
                               "result", ["result"], registry=r)

    def exposition(self) -> bytes:
        """The Prometheus text of this app, or of all processes of a ``--processes N`` server."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
