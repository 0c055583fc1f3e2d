"""pskit.launch: what a launcher tells a Python worker, read like ps-worker
reads it (worker/launch_env.cc): rank and world from torchrun (RANK/WORLD_SIZE),
SLURM, Open MPI, PMI or a Kubernetes Indexed Job; the shards, namespace, role,
token, TLS files and metrics port from PSKIT_* (psrun --worker_command sets
them: tools/psrun/launch/worker_command.h). No PyTorch needed."""

import dataclasses
import logging
import os
import stat
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

from . import _core

log = logging.getLogger("pskit.launch")

# A token has at least this many characters (common/auth_token.h
# kMinTokenLength: 32 random bytes, base64url).
MIN_TOKEN_LENGTH = 43

class LaunchError(ValueError):
    """A launch variable or argument is missing or wrong; the message names it
    and says how to fix it."""


# --------------------------------------------------------------------------
# The launch environment.

# (rank variable, world variable, launcher), in the order they are tried.
# torchrun comes first: under `srun torchrun ...` SLURM_PROCID is the node's
# rank, RANK the process's.
_LAUNCHERS = (
    ("RANK", "WORLD_SIZE", "torchrun"),
    ("SLURM_PROCID", "SLURM_NTASKS", "SLURM"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "Open MPI"),
    ("PMI_RANK", "PMI_SIZE", "PMI"),
    ("JOB_COMPLETION_INDEX", "PSKIT_WORLD_SIZE", "Kubernetes"),
)


@dataclasses.dataclass(frozen=True)
class LaunchEnv:
    """Where and as what this process runs. Make one with launch_env()."""

    shards: Tuple[str, ...]
    namespace: str = "default"
    role: str = "worker"          # "worker" or "evaluator"
    rank: int = 0
    world: int = 1
    rank_source: str = "default"  # "arguments", "torchrun", "SLURM", ...
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    token: str = dataclasses.field(default="", repr=False)  # never printed
    metrics_port: int = 0         # 0: no Prometheus endpoint
    metrics_host: str = "0.0.0.0"  # the address it binds

    def client(self, **options: Any) -> "_core.Client":
        """A pskit.Client for these shards with this TLS and token; `options`
        are Client's other keyword arguments (timeout_s, encoding, ...)."""
        return _core.Client(list(self.shards), tls_ca=self.tls_ca,
                            tls_cert=self.tls_cert, tls_key=self.tls_key,
                            token=self.token, **options)


def _env_int(environ: Mapping[str, str], name: str) -> int:
    text = environ[name]
    try:
        return int(text.strip())
    except ValueError:
        raise LaunchError(f"{name}='{text}' is not a whole number") from None


def _rank_world(environ: Mapping[str, str], rank: Optional[int],
                world: Optional[int]) -> Tuple[int, int, str]:
    if (rank is None) != (world is None):
        raise LaunchError("give both rank and world, or neither (then RANK/"
                          "WORLD_SIZE, SLURM, Open MPI, PMI or Kubernetes "
                          "variables are used)")
    if rank is not None:
        found = (int(rank), int(world), "arguments")
    else:
        found = None
        for rank_var, world_var, source in _LAUNCHERS:
            has_rank, has_world = rank_var in environ, world_var in environ
            if source == "torchrun" and has_rank != has_world:
                raise LaunchError(
                    f"{'RANK' if has_rank else 'WORLD_SIZE'} is set without "
                    f"{'WORLD_SIZE' if has_rank else 'RANK'}: set both (torchrun "
                    "does), or neither")
            if has_rank and has_world:
                found = (_env_int(environ, rank_var),
                         _env_int(environ, world_var), source)
                break
        if found is None:
            if "JOB_COMPLETION_INDEX" in environ:
                raise LaunchError(
                    f"JOB_COMPLETION_INDEX={environ['JOB_COMPLETION_INDEX']} is "
                    "set (a Kubernetes Indexed Job) but PSKIT_WORLD_SIZE is not: "
                    "set PSKIT_WORLD_SIZE in the pod template to the Job's "
                    "completions (the number of workers)")
            found = (0, 1, "default")
    r, w, source = found
    if w < 1 or not 0 <= r < w:
        raise LaunchError(f"rank {r} and world {w} (from {source}): the world "
                          "must be >= 1 and the rank in [0, world)")
    return found


def _parse_shards(text: str, source: str) -> Tuple[str, ...]:
    shards = tuple(s.strip() for s in text.split(",") if s.strip())
    for s in shards:
        host, sep, port = s.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise LaunchError(f"{source}: shard '{s}' is not host:port (e.g. "
                              "10.0.0.5:7000)")
    if len(set(shards)) != len(shards):
        raise LaunchError(f"{source}: a shard appears twice in '{text}'")
    return shards


def read_token_file(path: str, source: str = "PSKIT_TOKEN_FILE") -> str:
    """The bearer token in the file at `path` (surrounding whitespace removed),
    as ReadTokenFile (common/auth_token.h) reads it. LaunchError, naming
    `source` and the path but never the token, when the file cannot be read or
    does not hold one token; a warning when group or others may read it."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise LaunchError(f"{source}: cannot read token file '{path}': "
                          f"{e.strerror}") from None
    token = raw.decode("utf-8", "replace").strip()
    if len(token) < MIN_TOKEN_LENGTH:
        raise LaunchError(
            f"{source}: token file '{path}' holds {len(token)} characters; a "
            f"token has at least {MIN_TOKEN_LENGTH} (make one with: psctl token "
            "new --role worker --out FILE)")
    if any(c <= " " or c == "\x7f" for c in token):
        raise LaunchError(f"{source}: token file '{path}' holds whitespace or "
                          "control characters inside the token; it must hold "
                          "one token and nothing else")
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("token file %s is readable by group or others (mode %04o); "
                    "`chmod 600 %s` keeps the token to its owner", path,
                    mode & 0o7777, path)
    return token


def launch_env(environ: Optional[Mapping[str, str]] = None, *,
               shards: Optional[Union[str, Sequence[str]]] = None,
               namespace: Optional[str] = None, role: Optional[str] = None,
               rank: Optional[int] = None,
               world: Optional[int] = None) -> LaunchEnv:
    """Reads the launch environment (`environ`, default os.environ) the way
    ps-worker does; an argument given here wins over its variable.

      rank, world   RANK/WORLD_SIZE (torchrun), SLURM_PROCID/SLURM_NTASKS,
                    OMPI_COMM_WORLD_RANK/OMPI_COMM_WORLD_SIZE, PMI_RANK/PMI_SIZE,
                    JOB_COMPLETION_INDEX/PSKIT_WORLD_SIZE, in that order; else
                    rank 0 of 1. PSKIT_WORLD_SIZE alone is ignored.
      shards        PSKIT_SHARDS: host:port,... in shard order (required)
      namespace     PSKIT_NAMESPACE (default "default")
      role          PSKIT_ROLE: worker (default) or evaluator
      token         the file named by PSKIT_TOKEN_FILE, else PSKIT_TOKEN
      TLS           PSKIT_TLS_CA, PSKIT_TLS_CERT and PSKIT_TLS_KEY (files)
      metrics_port  PSKIT_METRICS_PORT: serve Prometheus metrics there; 0 or
                    unset: none. PSKIT_METRICS_HOST: the address it binds
                    (default 0.0.0.0; psrun sets both)

    Raises LaunchError naming the variable that is missing or wrong."""
    env = os.environ if environ is None else environ
    r, w, source = _rank_world(env, rank, world)

    if shards is None:
        if not env.get("PSKIT_SHARDS", "").strip():
            raise LaunchError("no shards: set PSKIT_SHARDS=host:port,... (every "
                              "shard, in shard order), or pass shards=")
        shard_list = _parse_shards(env["PSKIT_SHARDS"], "PSKIT_SHARDS")
    else:
        text = shards if isinstance(shards, str) else ",".join(shards)
        shard_list = _parse_shards(text, "shards")
        if not shard_list:
            raise LaunchError("shards is empty: give host:port of every shard")

    ns = namespace if namespace is not None else env.get("PSKIT_NAMESPACE", "default")
    if not ns or any(not "\x21" <= c <= "\x7e" for c in ns):
        raise LaunchError(f"namespace '{ns}' must be non-empty printable ASCII "
                          "without spaces (PSKIT_NAMESPACE)")

    the_role = role if role is not None else env.get("PSKIT_ROLE", "worker")
    if the_role not in ("worker", "evaluator"):
        raise LaunchError(f"role '{the_role}' is not known (PSKIT_ROLE): use "
                          "worker or evaluator")

    token = ""
    if env.get("PSKIT_TOKEN_FILE"):
        token = read_token_file(env["PSKIT_TOKEN_FILE"])
    elif env.get("PSKIT_TOKEN", "").strip():
        token = env["PSKIT_TOKEN"].strip()
        if len(token) < MIN_TOKEN_LENGTH:
            raise LaunchError(f"PSKIT_TOKEN holds {len(token)} characters; a "
                              f"token has at least {MIN_TOKEN_LENGTH}")

    tls = {}
    for key in ("ca", "cert", "key"):
        var = f"PSKIT_TLS_{key.upper()}"
        path = env.get(var, "")
        if path and not os.access(path, os.R_OK):
            raise LaunchError(f"{var}='{path}' is not a readable file")
        tls[key] = path
    if bool(tls["cert"]) != bool(tls["key"]):
        raise LaunchError("PSKIT_TLS_CERT and PSKIT_TLS_KEY go together (mTLS): "
                          "set both or neither")
    if tls["cert"] and not tls["ca"]:
        raise LaunchError("PSKIT_TLS_CERT is set without PSKIT_TLS_CA: a client "
                          "certificate needs TLS, which needs the shards' CA")

    metrics_port = 0
    if env.get("PSKIT_METRICS_PORT", "").strip():
        metrics_port = _env_int(env, "PSKIT_METRICS_PORT")
        if not 0 <= metrics_port < 65536:
            raise LaunchError(f"PSKIT_METRICS_PORT={metrics_port} is not a port "
                              "(1-65535; 0 or unset: no metrics)")

    return LaunchEnv(shards=shard_list, namespace=ns, role=the_role, rank=r,
                     world=w, rank_source=source, tls_ca=tls["ca"],
                     tls_cert=tls["cert"], tls_key=tls["key"], token=token,
                     metrics_port=metrics_port,
                     metrics_host=env.get("PSKIT_METRICS_HOST", "").strip() or "0.0.0.0")
