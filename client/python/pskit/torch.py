"""pskit.torch: train a PyTorch model against pskit shards from an ordinary
training loop.

    import pskit.torch as pt

    model = Net()
    with pt.Session(model, config=pt.namespace_config("adam", lr=1e-3)) as ps:
        strategy = pt.Downpour(ps, n_push=1, n_fetch=1)
        for x, y in batches:
            model.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            strategy.step(loss, samples=len(x))
            if ps.job_done:        # the evaluator reached its target
                break

and an evaluator beside the workers (PSKIT_ROLE=evaluator):

    pt.Evaluator(model, score=lambda m: evaluate(m, x_test, y_test),
                 target_accuracy=0.9).run()

What is here:
  launch_env()       rank and world from torchrun (RANK/WORLD_SIZE), SLURM,
                     Open MPI, PMI or a Kubernetes Indexed Job, like ps-worker;
                     shards, namespace, role, token and TLS from PSKIT_*
                     (pskit/launch.py, re-exported here; no torch needed there).
  namespace_config() the shards' optimizer, compensation and consistency, from
                     ps-worker's flag vocabulary, as a NamespaceConfig dict.
  ModelTensors       a module's trainable parameters as pskit tensors (name =
                     the dotted parameter name, shape = its shape), with the
                     host float32 buffers pull, push and exchange go through.
  Session            one process's membership of a job: declare (from rank 0's
                     own values, or the shards' initializers), register, a
                     heartbeat thread that learns when the job is over, leave.
  Downpour, EASGD    the strategies, each one call per training step.
  Evaluator          scores the shards' model every few seconds, reports to
                     the shards, ends the job at a target accuracy or patience.

Buffers: a float32, contiguous CPU parameter is its own buffer: pull and
exchange write it and push reads its .grad in place, with no copy at all.
Any other parameter (CUDA, float16, non-contiguous) is staged through one
host float32 buffer per parameter, pinned when the parameter is on CUDA, so a
call costs one device<->host copy each way.

Threads: every pskit call releases the GIL. A Session's heartbeat thread is a
daemon thread the Session starts and joins; a Session, its strategy and an
Evaluator are used from one thread (the training loop); job_done may be read
from any thread.
"""

import atexit
import dataclasses
import logging
import math
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from . import _core
from ._config import namespace_config  # noqa: F401 (part of this API)
from ._metrics import Metrics
from .launch import (  # noqa: F401 (part of this API)
    MIN_TOKEN_LENGTH, LaunchEnv, LaunchError, launch_env, read_token_file)

log = logging.getLogger("pskit.torch")

# Seconds between heartbeats: ps-worker's 0.5 s, so a worker learns within
# half a second that the evaluator ended the job.
DEFAULT_HEARTBEAT_S = 0.5


# namespace_config: pskit.namespace_config (pskit/_config.py), re-exported.

# --------------------------------------------------------------------------
# Parameters as pskit tensors.

Initializer = Union[str, Mapping[str, Any],
                    Callable[[str, torch.nn.Parameter], Mapping[str, Any]]]

# init= names other than "module": each gives a weight (2 or more dimensions)
# this distribution with PyTorch's fans, and a 1-D or 0-D parameter zeros
# (a bias; a norm layer's 1-D "weight" gets ones).
_NAMED_INITS = ("glorot_uniform", "he_normal", "torch_default", "zeros")


def _fans(shape: Sequence[int]) -> Tuple[int, int]:
    """PyTorch's fans (torch.nn.init): [out, in, *kernel]. The shards'
    INIT_GLOROT_UNIFORM and INIT_HE_NORMAL read Keras' order [*kernel, in,
    out], which is wrong for a PyTorch weight, so named inits become
    INIT_UNIFORM / INIT_NORMAL with the scale computed here."""
    receptive = 1
    for d in shape[2:]:
        receptive *= d
    return shape[1] * receptive, shape[0] * receptive


def _named_init(kind: str, name: str, shape: Sequence[int],
                weight_shapes: Mapping[str, Sequence[int]], seed: int) -> Dict[str, Any]:
    if kind == "zeros":
        return {"kind": "INIT_ZEROS"}
    if len(shape) < 2:
        if kind == "torch_default" and name.endswith("bias"):
            # nn.Linear / nn.ConvNd: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with
            # the fan_in of the layer's weight.
            weight = weight_shapes.get(name[:-len("bias")] + "weight")
            if weight is not None and len(weight) >= 2:
                bound = 1 / math.sqrt(_fans(weight)[0])
                return {"kind": "INIT_UNIFORM", "low": -bound, "high": bound,
                        "seed": seed}
        if name.endswith("weight"):  # LayerNorm, BatchNorm: scale 1
            return {"kind": "INIT_CONSTANT", "value": 1.0}
        return {"kind": "INIT_ZEROS"}
    fan_in, fan_out = _fans(shape)
    if kind == "glorot_uniform":
        limit = math.sqrt(6 / (fan_in + fan_out))
        return {"kind": "INIT_UNIFORM", "low": -limit, "high": limit, "seed": seed}
    if kind == "he_normal":
        return {"kind": "INIT_NORMAL", "mean": 0.0,
                "stddev": math.sqrt(2 / fan_in), "seed": seed}
    # torch_default: kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(fan_in), ...).
    bound = 1 / math.sqrt(fan_in)
    return {"kind": "INIT_UNIFORM", "low": -bound, "high": bound, "seed": seed}


class _Slot:
    """One parameter: where its values and gradient meet the client."""

    def __init__(self, name: str, param: torch.nn.Parameter):
        self.name = name
        self.param = param
        self.numel = param.numel()
        # Without a copy only when the parameter's own memory is the buffer
        # the client needs: float32, on the CPU, contiguous.
        self.direct = (param.device.type == "cpu" and param.dtype == torch.float32
                       and param.is_contiguous())
        pin = param.device.type == "cuda"
        self.host_t: Optional[torch.Tensor] = None
        if not self.direct:
            self.host_t = torch.empty(self.numel, dtype=torch.float32,
                                      pin_memory=pin)
        self.grad_t: Optional[torch.Tensor] = None  # staged or zero gradient
        self.pin = pin

    def weights(self) -> np.ndarray:
        if self.direct:
            return self.param.detach().view(-1).numpy()
        return self.host_t.numpy()

    def grad_buffer(self) -> torch.Tensor:
        if self.grad_t is None:
            self.grad_t = torch.zeros(self.numel, dtype=torch.float32,
                                      pin_memory=self.pin)
        return self.grad_t


class ModelTensors:
    """The trainable parameters of a torch.nn.Module as pskit tensors: name =
    the dotted parameter name (module.named_parameters()), shape = the
    parameter's shape ([1] for a 0-D one), elements in the parameter's
    row-major order. Parameters with requires_grad=False, and buffers
    (BatchNorm's running statistics), stay local.

    weights() and grads() are the name -> buffer dicts the client reads and
    writes; params_to_host(), host_to_params() and grads_to_host() move the
    values between the parameters and those buffers where they differ (see
    the module's docstring). Not thread-safe: one training thread."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.slots = [_Slot(n, p) for n, p in module.named_parameters()
                      if p.requires_grad]
        if not self.slots:
            raise ValueError(f"{type(module).__name__} has no trainable "
                             "parameters: nothing to train on the shards")
        self.cuda = any(s.param.device.type == "cuda" for s in self.slots)
        self.cuda_devices = sorted({s.param.device for s in self.slots
                                    if s.param.device.type == "cuda"}, key=str)

    @property
    def names(self) -> List[str]:
        return [s.name for s in self.slots]

    @property
    def numel(self) -> int:
        return sum(s.numel for s in self.slots)

    def specs(self, init: Initializer = "module", seed: int = 0) -> List[Dict[str, Any]]:
        """TensorSpec dicts for Client.declare. init: "module" (INIT_EXPLICIT:
        the parameters' current values, sent with declare), one of
        glorot_uniform, he_normal, torch_default (PyTorch's own Linear/Conv
        distributions), zeros (weights with PyTorch's fans; biases zeros), an
        Initializer dict for every tensor, or a function (name, parameter) ->
        Initializer dict. ValueError for an unknown name."""
        shapes = {s.name: list(s.param.shape) or [1] for s in self.slots}
        out = []
        for s in self.slots:
            if init == "module":
                ini: Mapping[str, Any] = {"kind": "INIT_EXPLICIT"}
            elif isinstance(init, str):
                if init not in _NAMED_INITS:
                    raise ValueError(f"init '{init}' is not known; use module, "
                                     f"{', '.join(_NAMED_INITS)}, an Initializer "
                                     "dict or a function (name, param) -> dict")
                ini = _named_init(init, s.name, shapes[s.name], shapes, seed)
            elif callable(init):
                ini = init(s.name, s.param)
            else:
                ini = init
            out.append({"name": s.name, "shape": shapes[s.name], "init": dict(ini)})
        return out

    def weights(self) -> Dict[str, np.ndarray]:
        """name -> the writable float32 buffer pull and exchange use."""
        return {s.name: s.weights() for s in self.slots}

    def grads(self) -> Dict[str, np.ndarray]:
        """name -> the float32 buffer push reads: the parameter's .grad itself
        where it can be, else its staging buffer (grads_to_host() fills it);
        zeros for a parameter without a gradient this step."""
        out = {}
        for s in self.slots:
            g = s.param.grad
            if s.direct and g is not None and g.is_contiguous() and g.dtype == torch.float32:
                out[s.name] = g.detach().view(-1).numpy()
            else:
                out[s.name] = s.grad_buffer().numpy()
        return out

    def params_to_host(self) -> None:
        """Copies the parameters into the host buffers (where they differ)."""
        with torch.no_grad():
            for s in self.slots:
                if not s.direct:
                    s.host_t.copy_(s.param.detach().reshape(-1), non_blocking=s.pin)
        self.synchronize()

    def host_to_params(self) -> None:
        """Copies the host buffers into the parameters (where they differ)."""
        with torch.no_grad():
            for s in self.slots:
                if not s.direct:
                    s.param.copy_(s.host_t.view(s.param.shape), non_blocking=s.pin)
        # The host buffers are written by the next call only after the copy
        # out of them is done.
        self.synchronize()

    def grads_to_host(self) -> None:
        """Stages the gradients push cannot read in place; a parameter without
        a gradient pushes zeros."""
        with torch.no_grad():
            for s in self.slots:
                g = s.param.grad
                if g is None:
                    if s.grad_t is not None:
                        s.grad_t.zero_()
                elif not (s.direct and g.is_contiguous() and g.dtype == torch.float32):
                    s.grad_buffer().copy_(g.detach().reshape(-1), non_blocking=s.pin)
        self.synchronize()

    def synchronize(self) -> None:
        # Every device a parameter lives on: torch.cuda.synchronize() alone
        # waits for the current device only.
        for device in self.cuda_devices:
            torch.cuda.synchronize(device)


# --------------------------------------------------------------------------
# A process's membership of a job.

class Session:
    """One worker's (or the evaluator's) membership of a job on the shards.

    join() (or `with`): connects, declares the model's tensors in the
    namespace with `config`, registers the worker (the lease every push
    carries), pulls the shards' values into the model and starts the
    heartbeat thread. leave() (or the end of `with`): stops the thread and
    leaves the shards, so the worker's lease and per-worker state go at once.

    init="module" (the default): rank 0 declares the tensors with its own
    parameters' values (INIT_EXPLICIT); every other rank, and an evaluator,
    waits until the tensors exist (up to join_timeout_s), then starts from
    rank 0's values. Declare is idempotent and a second declaration's values
    are ignored, so a rank that restarts picks up the shards' current values.
    Any other init (see ModelTensors.specs) lets every rank declare at once.

      env          LaunchEnv; default launch_env()
      config       NamespaceConfig dict; default namespace_config()
      name         the lease's name for people (psctl); default rank<N>
      client_options  Client keyword arguments (timeout_s, encoding, ...)
      metrics_port Prometheus port; default env.metrics_port (0: none)

    job_done turns True once a heartbeat answers that the job is over (the
    evaluator reached its target, or psctl drain): stop training then.

    Make the Session after the model is on its device and in its dtype (the
    buffers are chosen then). A Session joins once; after leave() make a new
    one."""

    def __init__(self, model: torch.nn.Module, env: Optional[LaunchEnv] = None, *,
                 config: Optional[Mapping[str, Any]] = None,
                 init: Initializer = "module", seed: int = 0,
                 name: Optional[str] = None,
                 client_options: Optional[Mapping[str, Any]] = None,
                 heartbeat_s: float = DEFAULT_HEARTBEAT_S,
                 join_timeout_s: float = 300.0,
                 metrics_port: Optional[int] = None):
        self.env = env if env is not None else launch_env()
        self.model = model
        self.tensors = ModelTensors(model)
        self.config = dict(config) if config is not None else namespace_config()
        self.init = init
        self.seed = seed
        self.specs = self.tensors.specs(init, seed)  # checks init now
        self.name = name or (f"rank{self.env.rank}" if self.env.role == "worker"
                             else "evaluator")
        self.client_options = dict(client_options or {})
        if not heartbeat_s > 0 or not join_timeout_s > 0:
            raise ValueError("heartbeat_s and join_timeout_s must be > 0")
        self.heartbeat_s = heartbeat_s
        self.join_timeout_s = join_timeout_s
        self._metrics_port = self.env.metrics_port if metrics_port is None else metrics_port
        self.client: Optional[_core.Client] = None
        self.metrics: Optional[Metrics] = None
        self.worker_id = 0
        self._done = threading.Event()
        self._stop = threading.Event()
        self._heartbeat: Optional[threading.Thread] = None

    @property
    def ns(self) -> str:
        return self.env.namespace

    @property
    def rank(self) -> int:
        return self.env.rank

    @property
    def world(self) -> int:
        return self.env.world

    @property
    def is_worker(self) -> bool:
        return self.env.role == "worker"

    @property
    def job_done(self) -> bool:
        """True once the shards said the job is over; stays True."""
        return self._done.is_set()

    def wait_job_done(self, timeout: Optional[float] = None) -> bool:
        """Blocks until job_done or `timeout` seconds; returns job_done."""
        return self._done.wait(timeout)

    def mark_job_done(self) -> None:
        self._done.set()

    # -- joining and leaving ------------------------------------------------

    def join(self) -> "Session":
        """See the class comment. Raises pskit.Error (the shards' answer after
        the client's retries) or TimeoutError (init="module" and rank 0 did not
        declare within join_timeout_s); on error nothing is left running."""
        if self.client is not None:
            return self
        try:
            if self._metrics_port:
                self.metrics = Metrics(self.env.role, self.rank if self.is_worker else 0,
                                       self._metrics_port, self.env.metrics_host)
                log.info("%s: metrics on %s", self.name, self.metrics.url)
            self.client = self.env.client(**self.client_options)
            if self.init == "module" and not (self.is_worker and self.rank == 0):
                self._wait_for_model()
            else:
                self.declare()
            if self.is_worker:
                self.worker_id = self.client.register_worker(self.name, self.ns)
            self.pull()
            if self.is_worker:
                self._heartbeat = threading.Thread(
                    target=self._heartbeat_loop, name=f"pskit-heartbeat-{self.name}",
                    daemon=True)
                self._heartbeat.start()
            # A script that ends without leave(): leave before the
            # interpreter stops its daemon threads (one stopped inside a
            # call that released the GIL would abort the process), and free
            # the lease at once rather than when it lapses.
            atexit.register(self.leave)
        except BaseException:
            self.leave()
            self.client = None  # a later join() starts again, from nothing
            raise
        return self

    def declare(self) -> None:
        """Declares the model in the namespace; with init="module" the values
        sent are the parameters' current ones (ignored by a shard that has the
        tensors already)."""
        values = None
        if self.init == "module":
            self.tensors.params_to_host()
            values = self.tensors.weights()
        self.client.declare(self.ns, self.config, self.specs, values)

    def _wait_for_model(self) -> None:
        # Rank 0 declares; nothing tells the others when, so they poll, with a
        # backoff up to 1 s. The first pull that finds every tensor gives this
        # rank rank 0's values.
        deadline = time.monotonic() + self.join_timeout_s
        wait = 0.05
        while True:
            try:
                self.client.pull(self.ns, self.tensors.weights())
                break
            except _core.Error as e:
                if e.code_name != "NOT_FOUND":
                    raise
                if time.monotonic() + wait > deadline:
                    raise TimeoutError(
                        f"{self.name}: namespace '{self.ns}' still lacks the model "
                        f"after {self.join_timeout_s:g} s ({e.message}). With "
                        "init='module' rank 0 declares the model from its own "
                        "values: start rank 0, or give every process an init "
                        "the shards compute (e.g. init='torch_default')") from None
                time.sleep(wait)
                wait = min(2 * wait, 1.0)
        self.tensors.host_to_params()
        # The shards now check that this process's config and shapes are the
        # declared ones; the values sent are the ones just pulled (ignored).
        self.declare()

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                if self.client.heartbeat(self.ns):
                    self._done.set()
            except Exception as e:  # noqa: BLE001: the thread must live on
                # The client retried within the call; a lease survives a few
                # missed renewals, and the next one is tried on time.
                log.warning("%s: heartbeat: %s", self.name, e)

    def leave(self) -> None:
        """Stops the heartbeat thread, leaves the shards (a failure is logged:
        the lease lapses by itself) and stops the metrics endpoint. Safe to
        call twice."""
        atexit.unregister(self.leave)
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        if self.client is not None and self.worker_id:
            try:
                self.client.leave()
            except _core.Error as e:
                log.warning("%s: leave: %s", self.name, e)
            self.worker_id = 0
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None

    def __enter__(self) -> "Session":
        return self.join()

    def __exit__(self, *exc) -> bool:
        self.leave()
        return False

    # -- calls, with recovery of a shard that restarted empty ---------------

    def _call(self, phase: str, fn: Callable[[], Any]) -> Tuple[Any, bool]:
        """Runs fn (a client call); (its result, True), or (None, False) when
        a shard answered NOT_FOUND (it restarted without a checkpoint) and the
        model was declared again and pulled, as ps-worker recovers: the update
        in hand is lost, not repeated."""
        if self.client is None:
            raise RuntimeError("the session has not joined: call join() or use "
                               "`with Session(...)`")
        start = time.perf_counter()
        try:
            return fn(), True
        except _core.Error as e:
            if e.code_name != "NOT_FOUND":
                raise
            log.warning("%s: %s; declaring the model again", self.name, e)
            self.declare()
            if self.worker_id:
                self.client.heartbeat(self.ns)
            self.pull()
            return None, False
        finally:
            if self.metrics is not None:
                self.metrics.phase(phase, time.perf_counter() - start)

    def pull(self) -> None:
        """The shards' values into the model."""
        self.client.pull(self.ns, self.tensors.weights())
        self.tensors.host_to_params()


# --------------------------------------------------------------------------
# Strategies.

class _Strategy:
    def __init__(self, session: Session):
        if session.client is None:
            raise RuntimeError("join the session first (`with Session(...) as s:`)")
        if not session.is_worker:
            raise ValueError("a strategy trains: this session's role is "
                             f"'{session.env.role}' (PSKIT_ROLE); use Evaluator")
        self.session = session
        self.steps = 0
        self.samples = 0
        self.start = time.monotonic()
        self._last = time.perf_counter()

    @property
    def job_done(self) -> bool:
        return self.session.job_done

    def _begin(self, loss: Any, samples: int) -> None:
        self.steps += 1
        self.samples += samples
        m = self.session.metrics
        if m is not None:
            m.phase("compute", time.perf_counter() - self._last)
            m.add_step(samples, None if loss is None else float(loss))

    def _end(self) -> None:
        self._last = time.perf_counter()

    @property
    def samples_per_s(self) -> float:
        return self.samples / max(time.monotonic() - self.start, 1e-9)


class Downpour(_Strategy):
    """Downpour SGD (Dean et al. 2012): after each backward pass, step() sums
    the gradient and pushes the sum every n_push steps; every n_fetch steps
    it pulls the shards' weights into the model (one push_pull when both fall
    on the same step). The shards apply the namespace's optimizer.

    optimizer (optional, any torch.optim optimizer over the model's
    parameters; needs n_fetch >= 2): every step also moves the worker's own
    copy with it before the exchange (Dean et al.'s Algorithm 7.1, ps-worker
    --local_update), so the steps between fetches do not recompute gradients
    at the same weights. step() calls its step() but never zero_grad(): the
    loop zeroes gradients as usual."""

    def __init__(self, session: Session, n_push: int = 1, n_fetch: int = 1,
                 optimizer: Optional[torch.optim.Optimizer] = None):
        super().__init__(session)
        if n_push < 1 or n_fetch < 1:
            raise ValueError(f"n_push ({n_push}) and n_fetch ({n_fetch}) must be >= 1")
        if optimizer is not None and n_fetch < 2:
            raise ValueError(f"a local optimizer needs n_fetch of 2 or more (it is "
                             f"{n_fetch}): the weights fetched after every step "
                             "would overwrite each local update")
        self.n_push, self.n_fetch = n_push, n_fetch
        self.optimizer = optimizer
        self.pushes = 0
        self._pushes_in_model = 0
        self._sums: Optional[List[torch.Tensor]] = None
        if n_push > 1:
            self._sums = [torch.zeros(s.numel, dtype=torch.float32, device=s.param.device)
                          for s in session.tensors.slots]

    def step(self, loss: Any = None, samples: int = 0) -> None:
        """Call after loss.backward(). `loss` (a number or tensor) and
        `samples` (the batch's size) only feed the metrics and samples_per_s."""
        s = self.session
        t = s.tensors
        self._begin(loss, samples)
        push = self.steps % self.n_push == 0
        fetch = self.steps % self.n_fetch == 0
        if self._sums is not None:
            with torch.no_grad():
                for sum_, slot in zip(self._sums, t.slots):
                    if slot.param.grad is not None:
                        sum_.add_(slot.param.grad.reshape(-1))
        if self.optimizer is not None:
            self.optimizer.step()
        if push:
            grads = self._stage_push()
            if s.metrics is not None:
                s.metrics.staleness.observe(self.pushes - self._pushes_in_model)
            self.pushes += 1
            if fetch:
                _, ok = s._call("pushpull", lambda: s.client.push_pull(
                    s.ns, grads, t.weights()))
                if ok:
                    t.host_to_params()
            else:
                s._call("push", lambda: s.client.push(s.ns, grads))
            if self._sums is not None:
                for sum_ in self._sums:
                    sum_.zero_()
        elif fetch:
            _, ok = s._call("pull", lambda: s.client.pull(s.ns, t.weights()))
            if ok:
                t.host_to_params()
        if fetch:
            self._pushes_in_model = self.pushes
        self._end()

    def _stage_push(self) -> Dict[str, np.ndarray]:
        t = self.session.tensors
        if self._sums is None:
            t.grads_to_host()
            return t.grads()
        # A sum on the CPU is pushed from where it is (and zeroed after the
        # push); one on a GPU goes through the pinned staging buffer.
        out = {}
        for sum_, slot in zip(self._sums, t.slots):
            if sum_.device.type == "cpu":
                out[slot.name] = sum_.numpy()
            else:
                buf = slot.grad_buffer()
                buf.copy_(sum_, non_blocking=True)
                out[slot.name] = buf.numpy()
        t.synchronize()
        return out


class EASGD(_Strategy):
    """Asynchronous elastic averaging SGD (Zhang, Choromanska & LeCun 2015):
    step() moves the worker's own model with `optimizer` (any torch.optim
    optimizer over the model's parameters; the loop zeroes gradients as
    usual), and every tau steps exchanges it with the shards' centre:
    x -= alpha (x - centre), the centre moving by as much towards x.
    alpha: in (0, 1]; default 0.9 / world, as ps-worker."""

    def __init__(self, session: Session, optimizer: torch.optim.Optimizer,
                 tau: int = 4, alpha: Optional[float] = None):
        super().__init__(session)
        if tau < 1:
            raise ValueError(f"tau {tau} must be >= 1")
        self.alpha = 0.9 / session.world if alpha is None else float(alpha)
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha {self.alpha} must be in (0, 1]")
        if optimizer is None:
            raise ValueError("EASGD needs a local optimizer, e.g. "
                             "torch.optim.SGD(model.parameters(), lr=0.05, "
                             "momentum=0.9)")
        self.tau = tau
        self.optimizer = optimizer
        self.exchanges = 0

    def step(self, loss: Any = None, samples: int = 0) -> None:
        """Call after loss.backward(); see Downpour.step for loss and samples."""
        s = self.session
        t = s.tensors
        self._begin(loss, samples)
        self.optimizer.step()
        if self.steps % self.tau == 0:
            t.params_to_host()
            _, ok = s._call("exchange", lambda: s.client.exchange(
                s.ns, self.alpha, t.weights()))
            if ok:
                t.host_to_params()
                self.exchanges += 1
        self._end()


# --------------------------------------------------------------------------
# The evaluator.

@dataclasses.dataclass
class EvalSummary:
    evaluations: int = 0
    best_accuracy: float = 0.0
    last_accuracy: float = 0.0
    last_loss: float = 0.0
    seconds: float = 0.0
    seconds_to_target: float = -1.0  # -1: not reached
    reason: str = ""                 # why the job ended

    @property
    def target_reached(self) -> bool:
        return self.seconds_to_target >= 0


Score = Callable[[torch.nn.Module], Any]


def _unpack_score(result: Any) -> Tuple[float, float, int]:
    if isinstance(result, Mapping):
        missing = [k for k in ("loss", "accuracy") if k not in result]
        if missing:
            raise TypeError(f"score returned a dict without {' and '.join(missing)}: "
                            f"it needs loss and accuracy (and may give samples); "
                            f"got keys {sorted(result)}")
        return float(result["loss"]), float(result["accuracy"]), int(result.get("samples", 0))
    if isinstance(result, tuple) and len(result) in (2, 3):
        return float(result[0]), float(result[1]), int(result[2]) if len(result) == 3 else 0
    raise TypeError("score must return (loss, accuracy), (loss, accuracy, "
                    "samples) or a dict with loss and accuracy; got "
                    f"{type(result).__name__}")


class Evaluator:
    """The evaluator of a job, as ps-worker --role evaluator: every interval_s
    it pulls the shards' model into `model`, scores it with score(model) (in
    eval mode, without gradients; it returns (loss, accuracy[, samples]) or a
    dict), reports the score to the shards, and ends the job, for every
    worker through their heartbeats, on reaching target_accuracy, after
    `patience` evaluations without a new best, or after max_seconds. It also
    stops when the job was ended elsewhere (psctl drain, another evaluator)
    or stop() is called from another thread.

    The session's keyword arguments (config, init, client_options, ...) are
    Session's; its role is evaluator whatever PSKIT_ROLE says."""

    def __init__(self, model: torch.nn.Module, score: Score,
                 env: Optional[LaunchEnv] = None, *, interval_s: float = 2.0,
                 target_accuracy: float = 0.0, patience: int = 0,
                 max_seconds: float = 0.0, **session_args: Any):
        env = env if env is not None else launch_env()
        if not interval_s > 0:
            raise ValueError(f"interval_s {interval_s} must be > 0")
        if not (target_accuracy > 0 or patience >= 1 or max_seconds > 0):
            raise ValueError("the evaluator needs a way to end the job: give "
                             "target_accuracy, patience or max_seconds")
        self.session = Session(model, dataclasses.replace(env, role="evaluator"),
                               **session_args)
        self.model = model
        self.score = score
        self.interval_s = interval_s
        self.target_accuracy = target_accuracy
        self.patience = patience
        self.max_seconds = max_seconds
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ends run() at its next wait (any thread)."""
        self._stop.set()

    def _judge(self, loss: float, accuracy: float, secs: float,
               summary: EvalSummary) -> str:
        summary.evaluations += 1
        summary.last_loss, summary.last_accuracy = loss, accuracy
        if accuracy > summary.best_accuracy:
            summary.best_accuracy = accuracy
            self._since_best = 0
        else:
            self._since_best += 1
        if (self.target_accuracy > 0 and accuracy >= self.target_accuracy
                and summary.seconds_to_target < 0):
            summary.seconds_to_target = secs
            return f"target accuracy {self.target_accuracy:g} reached after {secs:.1f} s"
        if self.patience > 0 and self._since_best >= self.patience:
            return f"no better accuracy in {self.patience} evaluations"
        if self.max_seconds > 0 and secs >= self.max_seconds:
            return f"time limit of {self.max_seconds:g} s"
        return ""

    def run(self) -> EvalSummary:
        """Runs until the job ends (see the class comment); the summary says
        how. Raises pskit.Error for the shards' errors after the client's
        retries, TimeoutError as Session.join."""
        s = self.session
        summary = EvalSummary()
        self._since_best = 0
        with s:
            start = time.monotonic()
            while True:
                round_start = time.monotonic()
                s._call("pull", s.pull)
                was_training = self.model.training
                self.model.eval()
                try:
                    with torch.no_grad():
                        loss, accuracy, samples = _unpack_score(self.score(self.model))
                finally:
                    self.model.train(was_training)
                secs = time.monotonic() - start
                summary.reason = self._judge(loss, accuracy, secs, summary)
                log.info("eval: %.1f s accuracy %.4f loss %.4f (best %.4f)", secs,
                         accuracy, loss, summary.best_accuracy)
                if s.metrics is not None:
                    s.metrics.add_evaluation(accuracy, loss)
                done = bool(summary.reason)
                job_done = s.client.report_evaluation(
                    s.ns, loss=loss, accuracy=accuracy, samples=samples,
                    done=done, reason=summary.reason)
                if done:
                    break
                if job_done:
                    summary.reason = ("the job was ended on the shards (psctl "
                                      "drain or another evaluator)")
                    break
                wait = round_start + self.interval_s - time.monotonic()
                if self._stop.wait(max(wait, 0)):
                    summary.reason = "stopped"
                    break
            summary.seconds = time.monotonic() - start
        s.mark_job_done()
        log.info("eval: job ended: %s", summary.reason)
        return summary
