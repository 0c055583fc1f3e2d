"""Tests of pskit.torch (client/python/pskit/torch.py): the parameter mapping,
the launch environment (good and bad), the namespace config, and real
training runs (two downpour workers and two EASGD workers, each pair with an
evaluator ending the job) against two ps-server shards this file starts.

  PSKIT_BUILD_DIR=build /usr/bin/python3 -m pytest tests/python/test_torch_integration.py

The module comes from $PSKIT_BUILD_DIR/python (default ./build/python):
build it with `cmake --build build --target ps-server pskit_core`.
"""
import os
import hashlib
import socket
import subprocess
import sys
import threading
import urllib.request

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from conftest import Shards  # noqa: E402

BUILD = os.path.abspath(os.environ.get("PSKIT_BUILD_DIR", "build"))
sys.path.insert(0, os.path.join(BUILD, "python"))
try:
    import pskit  # noqa: E402
    import pskit.torch as pt  # noqa: E402
except ImportError as e:  # a clear failure, not a skip: the build is missing
    raise ImportError(f"cannot import pskit from {BUILD}/python ({e}): build it "
                      "(cmake --build build --target pskit_core) or set "
                      "PSKIT_BUILD_DIR") from e

torch.set_num_threads(1)
TOKEN = "t" * pt.MIN_TOKEN_LENGTH


# ---------------------------------------------------------------- mapping

class Tied(torch.nn.Module):
    """A conv, a linear layer sharing nothing, a frozen tensor, a weight used
    twice and a 0-D scale: every case named_parameters() has."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, kernel_size=3)
        self.fc = torch.nn.Linear(4, 5)
        self.frozen = torch.nn.Parameter(torch.ones(2), requires_grad=False)
        self.scale = torch.nn.Parameter(torch.tensor(2.0))
        self.norm = torch.nn.LayerNorm(5)
        self.head = torch.nn.Linear(5, 5, bias=False)
        self.tail = self.head  # the same weight again

    def forward(self, x):
        h = self.conv(x).mean(dim=(2, 3))
        return self.tail(self.head(self.norm(self.fc(h)))) * self.scale


def test_names_shapes_and_specs():
    t = pt.ModelTensors(Tied())
    assert t.names == ["scale", "conv.weight", "conv.bias", "fc.weight", "fc.bias",
                       "norm.weight", "norm.bias", "head.weight"]
    specs = {s["name"]: s for s in t.specs()}
    assert specs["conv.weight"]["shape"] == [4, 3, 3, 3]
    assert specs["scale"]["shape"] == [1]  # a 0-D parameter is one element
    assert all(s["init"] == {"kind": "INIT_EXPLICIT"} for s in specs.values())
    assert t.numel == 4 * 27 + 4 + 20 + 5 + 1 + 5 + 5 + 25


def test_named_inits_use_pytorch_fans():
    specs = {s["name"]: s["init"] for s in pt.ModelTensors(Tied()).specs("torch_default", seed=3)}
    bound = 1 / np.sqrt(3 * 3 * 3)  # the conv's fan_in: in_channels * kernel
    assert specs["conv.weight"] == {"kind": "INIT_UNIFORM", "low": -bound,
                                    "high": bound, "seed": 3}
    assert specs["conv.bias"]["high"] == pytest.approx(bound)
    assert specs["norm.weight"] == {"kind": "INIT_CONSTANT", "value": 1.0}
    assert specs["norm.bias"] == {"kind": "INIT_ZEROS"}
    glorot = {s["name"]: s["init"] for s in pt.ModelTensors(Tied()).specs("glorot_uniform")}
    limit = np.sqrt(6 / (3 * 9 + 4 * 9))
    assert glorot["conv.weight"]["high"] == pytest.approx(limit)
    he = {s["name"]: s["init"] for s in pt.ModelTensors(Tied()).specs("he_normal")}
    assert he["fc.weight"]["stddev"] == pytest.approx(np.sqrt(2 / 4))
    same = pt.ModelTensors(Tied()).specs({"kind": "INIT_ZEROS"})
    assert all(s["init"] == {"kind": "INIT_ZEROS"} for s in same)
    by_fn = pt.ModelTensors(Tied()).specs(lambda name, p: {"kind": "INIT_CONSTANT",
                                                            "value": p.dim()})
    assert [s["init"]["value"] for s in by_fn[:2]] == [0, 4]  # scale, conv.weight
    with pytest.raises(ValueError, match="init 'xavier' is not known"):
        pt.ModelTensors(Tied()).specs("xavier")


def test_cpu_float32_parameters_are_their_own_buffers():
    model = torch.nn.Linear(3, 2)
    t = pt.ModelTensors(model)
    w = t.weights()
    w["weight"][:] = 7  # what a pull does
    assert torch.equal(model.weight.detach(), torch.full((2, 3), 7.0))
    model(torch.ones(1, 3)).sum().backward()
    g = t.grads()
    assert np.shares_memory(g["weight"], model.weight.grad.numpy())
    model.bias.grad = None  # a parameter without a gradient pushes zeros
    t.grads_to_host()
    assert not t.grads()["bias"].any()


def test_other_parameters_are_staged_through_host_buffers():
    model = torch.nn.Linear(3, 2).double()  # float64: not a float32 buffer
    t = pt.ModelTensors(model)
    t.params_to_host()
    w = t.weights()
    assert w["weight"].dtype == np.float32
    assert not np.shares_memory(w["weight"], model.weight.detach().numpy())
    np.testing.assert_allclose(w["weight"], model.weight.detach().numpy().ravel(), rtol=1e-6)
    w["weight"][:] = 3
    t.host_to_params()
    assert torch.equal(model.weight.detach(), torch.full((2, 3), 3.0, dtype=torch.float64))
    model(torch.ones(1, 3, dtype=torch.float64)).sum().backward()
    t.grads_to_host()
    np.testing.assert_allclose(t.grads()["weight"], np.ones(6))


def test_a_module_without_trainable_parameters_is_refused():
    with pytest.raises(ValueError, match="no trainable parameters"):
        pt.ModelTensors(torch.nn.ReLU())


# ---------------------------------------------------------------- environment

BASE = {"PSKIT_SHARDS": "h1:7000, h2:7001"}


@pytest.mark.parametrize("extra,rank,world,source", [
    ({}, 0, 1, "default"),
    ({"RANK": "1", "WORLD_SIZE": "3"}, 1, 3, "torchrun"),
    ({"SLURM_PROCID": "2", "SLURM_NTASKS": "4"}, 2, 4, "SLURM"),
    ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"}, 1, 2, "Open MPI"),
    ({"PMI_RANK": "0", "PMI_SIZE": "5"}, 0, 5, "PMI"),
    ({"JOB_COMPLETION_INDEX": "3", "PSKIT_WORLD_SIZE": "4"}, 3, 4, "Kubernetes"),
    # torchrun inside srun: the process's rank, not the node's.
    ({"RANK": "5", "WORLD_SIZE": "8", "SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, 5, 8,
     "torchrun"),
    ({"SLURM_PROCID": "1"}, 0, 1, "default"),  # srun without -n: no world
    ({"PSKIT_WORLD_SIZE": "4"}, 0, 1, "default"),  # a ConfigMap gives it to all
])
def test_rank_and_world_from_launchers(extra, rank, world, source):
    env = pt.launch_env({**BASE, **extra})
    assert (env.rank, env.world, env.rank_source) == (rank, world, source)
    assert env.shards == ("h1:7000", "h2:7001")
    assert (env.namespace, env.role, env.token, env.metrics_port) == ("default", "worker", "", 0)


def test_arguments_win_and_the_rest_comes_from_pskit_variables(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem"))
    for f in (ca, cert, key):
        f.write_text("pem")
    env = pt.launch_env({**BASE, "RANK": "1", "WORLD_SIZE": "2",
                         "PSKIT_NAMESPACE": "jobA", "PSKIT_ROLE": "evaluator",
                         "PSKIT_TOKEN_FILE": str(token_file), "PSKIT_TLS_CA": str(ca),
                         "PSKIT_TLS_CERT": str(cert), "PSKIT_TLS_KEY": str(key),
                         "PSKIT_METRICS_PORT": "9100", "PSKIT_METRICS_HOST": "127.0.0.1"},
                        rank=0, world=1, shards=["a:1"])
    assert (env.rank, env.world, env.rank_source, env.shards) == (0, 1, "arguments", ("a:1",))
    assert (env.namespace, env.role, env.token, env.metrics_port) == ("jobA", "evaluator", TOKEN, 9100)
    assert (env.tls_ca, env.tls_cert, env.tls_key) == (str(ca), str(cert), str(key))
    assert env.metrics_host == "127.0.0.1"
    assert TOKEN not in repr(env)
    assert pt.launch_env({**BASE, "PSKIT_TOKEN": " " + TOKEN + " "}).token == TOKEN


@pytest.mark.parametrize("environ,args,message", [
    ({}, {}, "no shards: set PSKIT_SHARDS"),
    ({"PSKIT_SHARDS": "h1"}, {}, "shard 'h1' is not host:port"),
    ({"PSKIT_SHARDS": "h1:70000"}, {}, "shard 'h1:70000' is not host:port"),
    ({"PSKIT_SHARDS": "h1:1,h1:1"}, {}, "a shard appears twice"),
    ({**BASE, "RANK": "x", "WORLD_SIZE": "2"}, {}, "RANK='x' is not a whole number"),
    ({**BASE, "RANK": "1"}, {}, "RANK is set without WORLD_SIZE"),
    ({**BASE, "SLURM_PROCID": "4", "SLURM_NTASKS": "4"}, {},
     r"rank 4 and world 4 \(from SLURM\)"),
    ({**BASE, "PMI_RANK": "0", "PMI_SIZE": "0"}, {}, "the world must be >= 1"),
    ({**BASE, "JOB_COMPLETION_INDEX": "2"}, {}, "PSKIT_WORLD_SIZE is not"),
    (BASE, {"rank": 1}, "give both rank and world"),
    ({**BASE, "PSKIT_ROLE": "trainer"}, {}, "role 'trainer' is not known"),
    ({**BASE, "PSKIT_NAMESPACE": "my job"}, {}, "namespace 'my job'"),
    ({**BASE, "PSKIT_TOKEN_FILE": "/nonexistent/token"}, {},
     "PSKIT_TOKEN_FILE: cannot read token file '/nonexistent/token'"),
    ({**BASE, "PSKIT_TOKEN": "short"}, {}, "PSKIT_TOKEN holds 5 characters"),
    ({**BASE, "PSKIT_TLS_CA": "/nonexistent/ca.pem"}, {}, "PSKIT_TLS_CA='/nonexistent/ca.pem'"),
    ({**BASE, "PSKIT_METRICS_PORT": "http"}, {}, "PSKIT_METRICS_PORT='http'"),
    ({**BASE, "PSKIT_METRICS_PORT": "70000"}, {}, "PSKIT_METRICS_PORT=70000 is not a port"),
])
def test_bad_launch_environments_say_what_to_fix(environ, args, message):
    with pytest.raises(pt.LaunchError, match=message):
        pt.launch_env(environ, **args)


def test_bad_token_files_never_show_the_token(tmp_path, caplog):
    short = tmp_path / "short"
    short.write_text("secret")
    with pytest.raises(pt.LaunchError, match="holds 6 characters") as e:
        pt.launch_env({**BASE, "PSKIT_TOKEN_FILE": str(short)})
    assert "secret" not in str(e.value)
    two = tmp_path / "two"
    two.write_text(TOKEN + " " + TOKEN)
    with pytest.raises(pt.LaunchError, match="whitespace or control characters"):
        pt.launch_env({**BASE, "PSKIT_TOKEN_FILE": str(two)})
    loose = tmp_path / "loose"
    loose.write_text(TOKEN)
    loose.chmod(0o644)
    assert pt.launch_env({**BASE, "PSKIT_TOKEN_FILE": str(loose)}).token == TOKEN
    assert "chmod 600" in caplog.text and TOKEN not in caplog.text


def test_tls_certificate_and_key_go_together(tmp_path):
    pem = tmp_path / "x.pem"
    pem.write_text("pem")
    with pytest.raises(pt.LaunchError, match="PSKIT_TLS_CERT and PSKIT_TLS_KEY go together"):
        pt.launch_env({**BASE, "PSKIT_TLS_CA": str(pem), "PSKIT_TLS_CERT": str(pem)})
    with pytest.raises(pt.LaunchError, match="without PSKIT_TLS_CA"):
        pt.launch_env({**BASE, "PSKIT_TLS_CERT": str(pem), "PSKIT_TLS_KEY": str(pem)})


# ---------------------------------------------------------------- config

def test_namespace_config_defaults_are_ps_workers():
    assert pt.namespace_config() == {
        "optimizer": {"kind": "OPTIMIZER_ADAM", "learning_rate": 0.001},
        "compensation": "COMPENSATION_NONE", "consistency": "CONSISTENCY_ASYNC"}


def test_namespace_config_settings():
    c = pt.namespace_config("Momentum", lr=0.05, momentum=0.8, weight_decay=1e-4,
                            compensation="dcasgd-a", dc_lambda=2, consistency="ssp:3")
    assert c == {"optimizer": {"kind": "OPTIMIZER_MOMENTUM", "learning_rate": 0.05,
                               "momentum": 0.8, "weight_decay": 1e-4},
                 "compensation": "COMPENSATION_DCASGD_A", "consistency": "CONSISTENCY_SSP",
                 "staleness": {"ssp_bound": 3, "dc_lambda": 2.0}}
    assert pt.namespace_config("sgd", consistency="sync:1")["staleness"] == {"backup_workers": 1}
    assert "staleness" not in pt.namespace_config("rmsprop", rho=0.95, consistency="sync")


@pytest.mark.parametrize("kwargs,message", [
    ({"optimizer": "lbfgs"}, "optimizer 'lbfgs' is not known"),
    ({"optimizer": "adam", "momentum": 0.9}, "optimizer adam does not read 'momentum'"),
    ({"lr": 0}, "learning_rate 0 must be a finite number > 0"),
    ({"lr": float("nan")}, "learning_rate nan"),
    ({"compensation": "dcasgd"}, "compensation 'dcasgd' is not known"),
    ({"consistency": "bsp"}, "consistency 'bsp' is not known"),
    ({"consistency": "ssp:-1"}, "'-1' is not an integer"),
    ({"consistency": "async:2"}, "consistency 'async:2' is not known"),
    ({"gem_kappa": 1.0}, "'gem_kappa' is not read by compensation none"),
])
def test_bad_namespace_configs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pt.namespace_config(**kwargs)


# ---------------------------------------------------------------- real shards

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two ps-server shards on 127.0.0.1 for this file's tests (conftest's
    Shards: ports the kernel picks, stopped at the end whatever happened);
    each test trains in a namespace of its own."""
    s = Shards(tmp_path_factory.mktemp("shards"))
    try:
        yield s(2)
    finally:
        s.stop_all()


def _env(shards, ns, rank=0, world=2, role="worker"):
    return pt.launch_env({}, shards=shards, namespace=ns, role=role, rank=rank, world=world)


def _problem(seed):
    """A linearly separable 2-class problem: 8 features, label = side of a
    plane; a 2-layer MLP learns it past 90% in a few hundred steps."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2048, 8, generator=g)
    w = torch.tensor([1.0, -2.0, 0.5, 1.5, -1.0, 0.0, 2.0, -0.5])
    return x, (x @ w > 0).long()


def _mlp(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


def _score(x, y):
    def score(model):
        out = model(x)
        return (torch.nn.functional.cross_entropy(out, y).item(),
                (out.argmax(1) == y).float().mean().item(), len(y))
    return score


def _run_job(shards, ns, make_strategy, config, max_steps=20000):
    """Two workers (threads, each with its own client and model, rank 1
    starting first) and an evaluator with target 0.9; returns the evaluator's
    summary and the workers' (session, strategy) pairs once all ended."""
    x, y = _problem(1)
    xt, yt = _problem(2)
    errors, done = [], []
    both_joined = threading.Barrier(2)
    stop = threading.Event()  # set when the evaluator failed: the workers end too

    # Made here: torch.manual_seed is process-wide, threads would race on it.
    models = {r: _mlp(100 + r) for r in (0, 1)}  # other initial values per rank
    rank0_start = [p.detach().clone() for p in models[0].parameters()]

    def worker(rank, joined):
        try:
            model = models[rank]
            with pt.Session(model, _env(shards, ns, rank), config=config) as s:
                joined.append([p.detach().clone() for p in model.parameters()])
                both_joined.wait(timeout=60)  # no push before both have pulled
                strategy = make_strategy(s, model)
                for i in range(max_steps):
                    if s.job_done or stop.is_set():
                        break
                    b = torch.randint(0, len(x), (32,), generator=torch.Generator().manual_seed(i * 2 + rank))
                    model.zero_grad()
                    loss = torch.nn.functional.cross_entropy(model(x[b]), y[b])
                    loss.backward()
                    strategy.step(loss, samples=32)
                done.append((rank, s, strategy))
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    joined = {0: [], 1: []}
    threads = [threading.Thread(target=worker, args=(r, joined[r])) for r in (1, 0)]
    for t in threads:
        t.start()
    ev = pt.Evaluator(_mlp(7), _score(xt, yt), _env(shards, ns, role="evaluator"),
                      config=config, interval_s=0.2, target_accuracy=0.9, max_seconds=120)
    try:
        summary = ev.run()
    finally:
        if sys.exc_info()[0] is not None:
            stop.set()
        for t in threads:
            t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker thread did not end"
    if errors:
        raise errors[0]
    # Both ranks started from rank 0's own initial values (init="module").
    for r in (0, 1):
        for got, want in zip(joined[r][0], rank0_start):
            assert torch.equal(got, want)
    return summary, sorted(done, key=lambda d: d[0])


def test_two_downpour_workers_train_until_the_evaluator_ends_the_job(cluster):
    summary, workers = _run_job(
        cluster, "py-downpour",
        lambda s, model: pt.Downpour(s, n_push=1, n_fetch=1), pt.namespace_config("adam", lr=0.01))
    assert summary.target_reached and summary.best_accuracy >= 0.9, summary
    for rank, session, strategy in workers:
        assert session.job_done  # learned from a heartbeat
        assert strategy.steps > 0 and strategy.pushes == strategy.steps
        assert session.worker_id == 0  # left


def test_downpour_with_a_local_optimizer_between_fetches(cluster):
    summary, workers = _run_job(
        cluster, "py-downpour-local",
        lambda s, model: pt.Downpour(s, n_push=4, n_fetch=4,
                                     optimizer=torch.optim.SGD(model.parameters(), lr=0.05)),
        pt.namespace_config("sgd", lr=0.05))
    assert summary.target_reached, summary
    for _, _, strategy in workers:
        assert strategy.pushes == strategy.steps // 4


def test_the_local_optimizer_moves_the_weights_between_fetches_and_the_fetch_replaces_them(cluster):
    """One worker, n_push = n_fetch = 4, the shards' SGD at 0.05: after a
    step without a fetch the model moved by exactly the local optimizer's
    step (and not at all without one); at the 4th step it holds what the
    shards computed from the initial values and the sum of the 4 gradients."""
    x, y = _problem(3)
    for local in (None, 0.1):
        model = _mlp(5)
        start = [p.detach().clone() for p in model.parameters()]
        ns = f"py-local-moves-{local}"
        with pt.Session(model, _env(cluster, ns, world=1),
                        config=pt.namespace_config("sgd", lr=0.05)) as s:
            opt = None if local is None else torch.optim.SGD(model.parameters(), lr=local)
            strategy = pt.Downpour(s, n_push=4, n_fetch=4, optimizer=opt)
            grad_sum = [torch.zeros_like(p) for p in start]
            for step in range(4):
                before = [p.detach().clone() for p in model.parameters()]
                model.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(x[step * 32:(step + 1) * 32]),
                                                         y[step * 32:(step + 1) * 32])
                loss.backward()
                grads = [p.grad.detach().clone() for p in model.parameters()]
                for acc, g in zip(grad_sum, grads):
                    acc.add_(g)
                strategy.step(loss, samples=32)
                after = [p.detach() for p in model.parameters()]
                if step < 3:  # no fetch yet: only the local optimizer moved the model
                    for b, a, g in zip(before, after, grads):
                        want = b if local is None else b - local * g
                        assert torch.allclose(a, want, atol=1e-6), (local, step)
            assert strategy.pushes == 1
            for a, p0, g in zip(model.parameters(), start, grad_sum):
                assert torch.allclose(a.detach(), p0 - 0.05 * g, atol=1e-5), local


def test_two_easgd_workers_train_until_the_evaluator_ends_the_job(cluster):
    summary, workers = _run_job(
        cluster, "py-easgd",
        lambda s, model: pt.EASGD(s, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                                  tau=4),
        pt.namespace_config("sgd", lr=0.05))
    assert summary.target_reached, summary
    for _, session, strategy in workers:
        assert session.job_done and strategy.exchanges == strategy.steps // 4


def test_workers_show_in_the_shards_status_and_metrics(cluster):
    port = _free_port()
    model = _mlp(3)
    with pt.Session(model, _env(cluster, "py-status", world=1), init="torch_default",
                    metrics_port=port) as s:
        assert s.worker_id != 0
        statuses = s.client.status()
        assert [st.get("live_workers", st.get("liveWorkers")) for st in statuses] == [1, 1]
        strategy = pt.Downpour(s)
        model(torch.ones(4, 8)).sum().backward()
        strategy.step(0.5, samples=4)
        # Debian's python3-prometheus-client (scripts/install-deps).
        from prometheus_client.parser import text_string_to_metric_families
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        samples = {(m.name, m.labels.get("phase")): m.value
                   for f in text_string_to_metric_families(text) for m in f.samples
                   if m.labels.get("role") == "worker" and m.labels.get("rank") == "0"}
        assert samples[("pskit_worker_steps_total", None)] == 1
        assert samples[("pskit_worker_samples_total", None)] == 4
        assert samples[("pskit_worker_loss", None)] == 0.5
        assert samples[("pskit_worker_phase_duration_seconds_count", "pushpull")] == 1
    assert s.client.status()[0].get("live_workers", s.client.status()[0].get("liveWorkers", 0)) == 0


def test_a_second_config_is_refused_and_nothing_is_left_running(cluster):
    with pt.Session(_mlp(1), _env(cluster, "py-config", world=1), init="zeros",
                    config=pt.namespace_config("adam")):
        other = pt.Session(_mlp(1), _env(cluster, "py-config", world=1), init="zeros",
                           config=pt.namespace_config("sgd"))
        with pytest.raises(pskit.Error) as e:
            other.join()
        assert e.value.code_name == "FAILED_PRECONDITION"
        assert other._heartbeat is None and other.worker_id == 0


def test_rank1_waits_for_rank0_and_says_so(cluster):
    s = pt.Session(_mlp(1), _env(cluster, "py-nobody", rank=1), join_timeout_s=0.3)
    with pytest.raises(TimeoutError, match="start rank 0"):
        s.join()


def test_patience_ends_the_job_and_workers_learn_it_from_heartbeats(cluster):
    x, y = _problem(2)
    with pt.Session(_mlp(1), _env(cluster, "py-patience", world=1), init="zeros") as worker:
        ev = pt.Evaluator(_mlp(2), lambda m: (0.7, 0.5), _env(cluster, "py-patience", role="evaluator"),
                          init="zeros", interval_s=0.05, patience=2)
        summary = ev.run()
        assert summary.evaluations == 3 and not summary.target_reached
        assert summary.reason == "no better accuracy in 2 evaluations"
        assert worker.wait_job_done(timeout=60)
    # A later evaluator of the same namespace finds the job over.
    again = pt.Evaluator(_mlp(2), _score(x, y), _env(cluster, "py-patience", role="evaluator"),
                         init="zeros", interval_s=0.05, target_accuracy=0.99)
    assert "ended on the shards" in again.run().reason


def test_the_token_file_reaches_the_shards(shards, tmp_path):
    token = "k" * pt.MIN_TOKEN_LENGTH
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(hashlib.sha256(token.encode()).hexdigest() + " worker\n")
    addrs = shards(2, "--auth_tokens", str(tokens))
    mine = tmp_path / "token"
    mine.write_text(token)
    mine.chmod(0o600)
    with pytest.raises(pskit.Error) as e:
        pt.Session(_mlp(1), pt.launch_env({"PSKIT_SHARDS": ",".join(addrs)}),
                   init="zeros", client_options={"timeout_s": 5}).join()
    assert e.value.code_name == "UNAUTHENTICATED"
    env = pt.launch_env({"PSKIT_SHARDS": ",".join(addrs), "PSKIT_TOKEN_FILE": str(mine)})
    with pt.Session(_mlp(1), env, init="zeros") as s:
        assert s.worker_id != 0


def test_a_metrics_port_in_use_is_a_clear_error(cluster):
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        s = pt.Session(_mlp(1), _env(cluster, "py-metrics-busy", world=1), init="zeros",
                       metrics_port=busy.getsockname()[1])
        with pytest.raises(pt.LaunchError, match="cannot serve metrics on 0.0.0.0:"):
            s.join()
        assert s.client is None  # failed before touching the shards


def test_a_score_without_loss_or_accuracy_says_what_it_needs():
    assert pt._unpack_score({"loss": 0.5, "accuracy": 0.9, "samples": 10}) == (0.5, 0.9, 10)
    assert pt._unpack_score((0.5, 0.9)) == (0.5, 0.9, 0)
    with pytest.raises(TypeError, match="without accuracy"):
        pt._unpack_score({"loss": 0.5})
    with pytest.raises(TypeError, match="loss, accuracy"):
        pt._unpack_score(0.9)


def test_a_script_that_never_leaves_exits_cleanly_and_frees_its_lease(cluster):
    # The heartbeat thread is a daemon inside a GIL-releasing call most of
    # the time; without the atexit leave() the interpreter could abort on
    # exit, and the lease would stay until it lapsed.
    script = (
        "import sys, torch, pskit.torch as pt\n"
        "env = pt.launch_env({}, shards=sys.argv[1].split(','), namespace='py-atexit',\n"
        "                    role='worker', rank=0, world=1)\n"
        "s = pt.Session(torch.nn.Linear(4, 2), env, init='zeros').join()\n"
        "print('joined', s.worker_id, flush=True)\n")
    r = subprocess.run([sys.executable, "-c", script, ",".join(cluster)],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OPENBLAS_NUM_THREADS": "1",
                            "PYTHONPATH": os.path.join(BUILD, "python")})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("joined ")
    client = pskit.Client(cluster)
    assert [st.get("live_workers", 0) for st in client.status()] == [0, 0]
