"""pskit._metrics: a Python worker's Prometheus metrics, named and labelled as
ps-worker's (worker/worker_metrics.h), served on their own thread."""

import socket
import threading
from typing import Optional

from .launch import LaunchError


try:
    import prometheus_client as _prom
except ImportError:  # Debian: apt-get install python3-prometheus-client
    _prom = None

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """ps-worker's pskit_worker_* families, labelled role and rank, served at
    http://HOST:PORT/metrics by a thread this object owns (close() stops it).
    Needs prometheus_client (Debian: python3-prometheus-client)."""

    def __init__(self, role: str, rank: int, port: int, host: str = "0.0.0.0"):
        if _prom is None:
            raise LaunchError("metrics asked for (PSKIT_METRICS_PORT or "
                              "metrics_port) but prometheus_client is not "
                              "installed: apt-get install python3-prometheus-"
                              "client, or unset PSKIT_METRICS_PORT")
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
        import socketserver

        self.registry = _prom.CollectorRegistry()
        labels = {"role": role, "rank": str(rank)}
        names = list(labels)
        values = list(labels.values())

        def make(kind, name, doc, **kw):
            return kind(name, doc, names, registry=self.registry, **kw).labels(*values)

        self.steps = make(_prom.Counter, "pskit_worker_steps_total",
                          "training steps taken (one batch each)")
        self.samples = make(_prom.Counter, "pskit_worker_samples_total",
                            "samples trained on")
        self._phases = _prom.Histogram(
            "pskit_worker_phase_duration_seconds",
            "time per step phase: compute (the training loop between steps), "
            "push, pull, pushpull, exchange", names + ["phase"],
            registry=self.registry, buckets=_LATENCY_BUCKETS)
        self._labels = values
        self.loss = make(_prom.Gauge, "pskit_worker_loss",
                         "training loss, moving average over about 100 steps")
        self.staleness = make(
            _prom.Histogram, "pskit_worker_staleness_pushes",
            "per pushed gradient: this worker's own earlier pushes missing "
            "from the weights it was computed on", buckets=(0, 1, 2, 4, 8, 16, 64))
        self.evaluations = self.eval_accuracy = self.eval_loss = None
        if role == "evaluator":
            self.evaluations = make(_prom.Counter, "pskit_worker_evaluations_total",
                                    "evaluations of the model on the test set")
            self.eval_accuracy = make(_prom.Gauge, "pskit_worker_eval_accuracy_ratio",
                                      "the evaluator's last test accuracy")
            self.eval_loss = make(_prom.Gauge, "pskit_worker_eval_loss",
                                  "the evaluator's last test loss")
        self._loss_average: Optional[float] = None

        class Quiet(WSGIRequestHandler):
            def log_message(self, *args):  # no line per scrape
                pass

        class Server(socketserver.ThreadingMixIn, WSGIServer):
            daemon_threads = True

        try:
            self._server = make_server(host, port, _prom.make_wsgi_app(self.registry),
                                       Server, handler_class=Quiet)
        except OSError as e:
            raise LaunchError(f"cannot serve metrics on {host}:{port}: {e.strerror} "
                              "(PSKIT_METRICS_PORT: give each process on a host a "
                              "port of its own)") from None
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="pskit-metrics", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{socket.gethostname()}:{self.port}/metrics"

    def add_step(self, samples: int, loss: Optional[float]) -> None:
        self.steps.inc()
        if samples:
            self.samples.inc(samples)
        if loss is not None:
            self._loss_average = (loss if self._loss_average is None
                                  else 0.99 * self._loss_average + 0.01 * loss)
            self.loss.set(self._loss_average)

    def phase(self, name: str, seconds: float) -> None:
        self._phases.labels(*self._labels, name).observe(seconds)

    def add_evaluation(self, accuracy: float, loss: float) -> None:
        if self.evaluations is not None:
            self.evaluations.inc()
            self.eval_accuracy.set(accuracy)
            self.eval_loss.set(loss)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
