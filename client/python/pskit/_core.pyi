# pskit/_core.pyi -- THE CONTRACT of the C++ extension module `pskit._core` (pybind11 over
# libpskit_client's Client). The lead implements it in client/python/core.cc; `pskit/__init__.py`
# re-exports every name below, so users write `pskit.Client`, `pskit.Error`.
#
# Tensors are passed as a dict {name: buffer} (a dict, not any Mapping), tensor specs as a
# list of dicts, shards as a list of str.
# Buffers: any object exporting a C-contiguous float32 buffer (NumPy float32 arrays, PyTorch
# CPU tensors through .numpy()), of exactly the declared tensor's element count (shape does not
# matter). Read buffers (grads) may be read-only; written ones (weights, params) must be
# writable. No copy is made: the call reads/writes the caller's memory; the GIL is released
# for the whole call (other Python threads run). Wrong dtype/size/layout -> pskit.Error
# INVALID_ARGUMENT naming the tensor.
#
# Protobuf messages (NamespaceConfig, TensorSpec, Evaluation, Admin answers) go in and out as
# dicts in protobuf's JSON form (field names as in proto/pskit/v1/*.proto, snake_case or
# lowerCamel; enums by their full names, e.g. "OPTIMIZER_ADAM", "INIT_GLOROT_UNIFORM").
# In answers, as protobuf's JSON form has it, 64-bit integers (updates_applied, bytes,
# time_unix_ms, ...) are strings: int(d["updates_applied"]).
from typing import Any, Dict, List, Optional

Buffer = Any

class Error(Exception):
    code: int        # gRPC status code number (0 OK ... 16 UNAUTHENTICATED; 14 UNAVAILABLE)
    code_name: str   # "UNAVAILABLE", "INVALID_ARGUMENT", ...
    message: str     # the status message
    # str(e) == f"{code_name}: {message}"; args == (code, code_name, message)

class PushResult:
    chunks: int            # chunks updated
    max_staleness: int     # over those chunks
    mean_staleness: float

class Client:
    def __init__(self, shards: List[str], *,
                 chunk_elems: int = 262144, max_request_bytes: int = 1 << 20,
                 max_in_flight_per_shard: int = 2, timeout_s: float = 60.0,
                 initial_backoff_s: float = 0.05, max_backoff_s: float = 2.0,
                 encoding: str = "f32",            # "f32", "f16" or "bf16"
                 channels_per_shard: int = 2, max_message_bytes: int = 64 << 20,
                 tls_ca: str = "", tls_cert: str = "", tls_key: str = "",
                 token: str = "") -> None: ...   # token: the bearer token itself
    @property
    def shards(self) -> list[str]: ...
    @property
    def worker_id(self) -> int: ...               # 0 until register_worker

    # Declares tensors in namespace ns ("" = "default") with config (NamespaceConfig JSON dict)
    # on every shard. Idempotent. tensors: TensorSpec JSON dicts, e.g.
    # {"name": "fc1.weight", "shape": [256, 784], "init": {"kind": "INIT_GLOROT_UNIFORM"}}.
    # values: name -> buffer for every tensor whose init kind is INIT_EXPLICIT.
    def declare(self, ns: str, config: Dict[str, Any],
                tensors: List[Dict[str, Any]],
                values: Optional[Dict[str, Buffer]] = None) -> None: ...
    def pull(self, ns: str, weights: Dict[str, Buffer]) -> None: ...
    def push(self, ns: str, grads: Dict[str, Buffer]) -> PushResult: ...
    # weights: same names (same order) as grads.
    def push_pull(self, ns: str, grads: Dict[str, Buffer],
                  weights: Dict[str, Buffer]) -> PushResult: ...
    # EASGD: params -= alpha * (params - centre), centre moved towards params.
    def exchange(self, ns: str, alpha: float, params: Dict[str, Buffer]) -> None: ...

    # Worker lease: register (returns the id every later push carries), heartbeat (renews;
    # returns True once namespace ns's job is over), leave.
    # register_worker's ns: the namespace the worker trains ("" = "default"); the shards
    # refuse to drop it while the lease is live (heartbeat(ns) updates it).
    def register_worker(self, name: str, ns: str = "") -> int: ...
    def heartbeat(self, ns: str = "") -> bool: ...
    def leave(self) -> None: ...
    # Reports an evaluation to every shard; returns True when the job is over.
    def report_evaluation(self, ns: str, *, loss: float, accuracy: float,
                          samples: int = 0, done: bool = False,
                          reason: str = "") -> bool: ...

    # Admin (every shard, in shard order; each a dict in protobuf JSON form).
    # status(evaluations=True): each namespace dict also has "evaluations", every evaluation
    # the shard holds for it, oldest first (a shard keeps the last 10,000):
    # [{"time_unix_ms": "1764500000000", "loss": 0.41, "accuracy": 0.85, "samples": "10000",
    #   "done": False, "reason": ""}, ...]. Without it the key is there and empty.
    def status(self, *, evaluations: bool = False) -> list[dict]: ...
    # Deletes namespace `namespace` on every shard: shard 0 first (a refusal there changes
    # nothing anywhere), then the others. One dict per shard:
    # {"chunks_freed": 3, "elements_freed": "1234"} (64-bit ints are strings).
    # Raises Error: FAILED_PRECONDITION while workers of the namespace hold leases (the message
    # names them), NOT_FOUND when shard 0 has no such namespace, INVALID_ARGUMENT for "" or a
    # malformed name ("" is not "default" here).
    def drop_namespace(self, namespace: str) -> list[dict]: ...
    def checkpoint(self, id: str = "") -> list[dict]: ...
    def restore(self, id: str) -> list[dict]: ...
