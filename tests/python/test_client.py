"""pskit.Client (the C++ client through pybind11) against real shards: every
call's round trip, arrays written in place, errors as pskit.Error with the
gRPC code, and the GIL released while a call waits."""

import threading
import time

import numpy as np
import pytest

import pskit

SGD = pskit.namespace_config("sgd", lr=0.5)


def declare_w(client, ns="t", n=10, config=SGD, values=None):
    spec = pskit.tensor_spec("w", (2, n // 2), init="explicit" if values is not None
                             else "constant", **({} if values is not None else {"value": 1.0}))
    client.declare(ns, config, [spec], None if values is None else {"w": values})


def test_declare_pull_push_push_pull_round_trip(shards):
    c = pskit.Client(shards(2))
    init = np.arange(10, dtype=np.float32)
    declare_w(c, values=init)
    declare_w(c, values=init)  # idempotent
    w = np.zeros(10, np.float32)
    c.pull("t", {"w": w})
    np.testing.assert_array_equal(w, init)

    g = np.full(10, 2.0, np.float32)
    r = c.push("t", {"w": g})
    assert isinstance(r, pskit.PushResult)
    assert r.chunks == 1 and r.max_staleness == 0 and r.mean_staleness == 0
    c.pull("t", {"w": w})
    np.testing.assert_array_equal(w, init - 1.0)  # w -= 0.5 * 2

    r = c.push_pull("t", {"w": g}, {"w": w})
    assert r.chunks == 1
    np.testing.assert_array_equal(w, init - 2.0)


def test_shard_initializers_and_a_tensor_over_both_shards(shards):
    c = pskit.Client(shards(2, "--chunk_elems", "1000"), chunk_elems=1000)
    c.declare("t", SGD, [pskit.tensor_spec("big", (100, 50), init="glorot", seed=7)])
    a = np.zeros((100, 50), np.float32)
    c.pull("t", {"big": a})
    limit = np.sqrt(6.0 / 150)
    assert np.all(np.abs(a) <= limit) and np.std(a) > limit / 4
    b = np.zeros(5000, np.float32)  # shape does not matter, the size does
    c2 = pskit.Client(c.shards, chunk_elems=1000)
    c2.declare("t", SGD, [pskit.tensor_spec("big", (100, 50), init="glorot", seed=7)])
    c2.pull("t", {"big": b})
    np.testing.assert_array_equal(a.ravel(), b)


def test_exchange_moves_params_towards_the_centre(shards):
    c = pskit.Client(shards(1))
    declare_w(c, values=np.zeros(10, np.float32))
    x = np.full(10, 4.0, np.float32)
    c.exchange("t", 0.25, {"w": x})
    np.testing.assert_allclose(x, 3.0)  # x -= 0.25 * (4 - 0)
    centre = np.empty(10, np.float32)
    c.pull("t", {"w": centre})
    np.testing.assert_allclose(centre, 1.0)  # centre += 0.25 * (4 - 0)


def test_worker_lease_and_evaluation_end_the_job(shards):
    c = pskit.Client(shards(2))
    declare_w(c)
    assert c.worker_id == 0
    wid = c.register_worker("py-worker")
    assert wid > 0 and c.worker_id == wid
    assert c.heartbeat("t") is False
    assert c.report_evaluation("t", loss=0.5, accuracy=0.7, samples=100) is False
    assert c.report_evaluation("t", loss=0.3, accuracy=0.9, done=True,
                               reason="target reached") is True
    assert c.heartbeat("t") is True
    status = c.status()
    assert len(status) == 2 and all(isinstance(s, dict) for s in status)
    c.leave()
    assert c.worker_id == 0


def test_checkpoint_and_restore(shards):
    c = pskit.Client(shards(2, data_dir=True))
    init = np.arange(10, dtype=np.float32)
    declare_w(c, values=init)
    infos = c.checkpoint("before")
    assert len(infos) == 2 and all(isinstance(i, dict) for i in infos)
    c.push("t", {"w": np.ones(10, np.float32)})
    c.restore("before")
    w = np.zeros(10, np.float32)
    c.pull("t", {"w": w})
    np.testing.assert_array_equal(w, init)


def test_pull_writes_the_callers_own_buffer(shards):
    torch = pytest.importorskip("torch")
    c = pskit.Client(shards(1))
    init = np.arange(10, dtype=np.float32)
    declare_w(c, values=init)
    base = np.zeros(20, np.float32)
    view = base[5:15]  # a contiguous view: pull must write into base itself
    c.pull("t", {"w": view})
    np.testing.assert_array_equal(base[5:15], init)
    assert base[:5].sum() == 0 and base[15:].sum() == 0
    t = torch.zeros(10)
    c.pull("t", {"w": t.numpy()})  # shares t's memory
    assert torch.equal(t, torch.arange(10, dtype=torch.float32))


def test_bad_buffers_are_refused_with_the_tensor_named(shards):
    c = pskit.Client(shards(1))
    declare_w(c)
    cases = {
        "float64": np.zeros(10, np.float64),
        "non-contiguous": np.zeros(20, np.float32)[::2],
        "read-only": np.frombuffer(bytes(40), np.float32),
        "not a buffer": [0.0] * 10,
    }
    for what, arr in cases.items():
        with pytest.raises(pskit.Error) as e:
            c.pull("t", {"w": arr})
        assert e.value.code == 3 and e.value.code_name == "INVALID_ARGUMENT", what
        assert "tensor 'w'" in e.value.message, what
    with pytest.raises(pskit.Error) as e:
        c.pull("t", {"w": np.zeros(11, np.float32)})
    assert e.value.code_name == "INVALID_ARGUMENT"
    # A refused buffer is released: a bytearray can be resized again.
    b = bytearray(40)
    with pytest.raises(pskit.Error):
        c.pull("t", {"w": b})
    b.extend(b"more")
    # a read-only gradient is fine
    c.push("t", {"w": np.frombuffer(np.zeros(10, np.float32).tobytes(), np.float32)})


def test_errors_carry_the_grpc_code_and_message(shards):
    addrs = shards(1)
    c = pskit.Client(addrs)
    with pytest.raises(pskit.Error) as e:
        c.pull("nothing-here", {"w": np.zeros(10, np.float32)})
    assert e.value.code_name in ("NOT_FOUND", "INVALID_ARGUMENT")
    assert str(e.value).startswith(e.value.code_name + ": ")
    assert e.value.args == (e.value.code, e.value.code_name, e.value.message)
    with pytest.raises(pskit.Error) as e:
        c.declare("t", {"optimizer": {"kind": "OPTIMIZER_NOPE"}}, [])
    assert e.value.code_name == "INVALID_ARGUMENT" and "config" in e.value.message
    with pytest.raises(pskit.Error) as e:
        c.declare("t", {"optimizer": {"kind": "OPTIMIZER_SGD", "learning_rate": -1}},
                  [pskit.tensor_spec("w", (3,))])
    assert e.value.code_name == "INVALID_ARGUMENT"
    with pytest.raises(pskit.Error) as e:
        pskit.Client(addrs, encoding="f8")
    assert e.value.code_name == "INVALID_ARGUMENT" and "f32, f16 or bf16" in e.value.message
    with pytest.raises(pskit.Error) as e:
        pskit.Client([])
    assert e.value.code_name == "INVALID_ARGUMENT"
    with pytest.raises(ValueError, match="adamax"):
        pskit.namespace_config("adamax")
    with pytest.raises(ValueError, match="glorot"):
        pskit.tensor_spec("w", (3,), init="glorrot")
    unreachable = pskit.Client(["127.0.0.1:1"], timeout_s=0.3)
    with pytest.raises(pskit.Error) as e:
        unreachable.status()
    assert e.value.code_name in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
    assert "127.0.0.1:1" in e.value.message


def test_the_gil_is_released_while_a_call_waits():
    # Nothing listens on port 1: the pull retries until its 1 s deadline. A
    # Python thread counting meanwhile can only run if the call let go of the
    # GIL.
    c = pskit.Client(["127.0.0.1:1"], timeout_s=1.0)
    ticks = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.001)

    t = threading.Thread(target=count)
    t.start()
    start = time.monotonic()
    with pytest.raises(pskit.Error):
        c.pull("t", {"w": np.zeros(4, np.float32)})
    end = time.monotonic()
    stop.set()
    t.join()
    during = [x for x in ticks if start < x < end]
    assert len(during) > 10, f"{len(during)} ticks during a {end - start:.2f} s pull"


def test_drop_namespace_refused_while_its_worker_is_live_then_frees_every_shard(shards):
    addrs = shards(2, "--chunk_elems", "4")
    c = pskit.Client(addrs, chunk_elems=4)
    declare_w(c, ns="trial", values=np.arange(10, dtype=np.float32))
    declare_w(c, ns="keep")
    worker = pskit.Client(addrs, chunk_elems=4)
    worker.register_worker("w0", "trial")
    worker.push("trial", {"w": np.ones(10, np.float32)})
    with pytest.raises(pskit.Error) as e:
        c.drop_namespace("trial")
    assert e.value.code_name == "FAILED_PRECONDITION"
    assert "w0" in e.value.message and "then drop" in e.value.message
    assert all(any(n["name"] == "trial" for n in s["namespaces"]) for s in c.status())

    worker.leave()
    freed = c.drop_namespace("trial")
    assert len(freed) == 2 and all(isinstance(f, dict) for f in freed)
    assert sum(f["chunks_freed"] for f in freed) == 3      # 10 elements in chunks of 4
    assert sum(int(f["elements_freed"]) for f in freed) == 10
    assert all([n["name"] for n in s["namespaces"]] == ["keep"] for s in c.status())

    with pytest.raises(pskit.Error) as e:
        c.drop_namespace("trial")
    assert e.value.code_name == "NOT_FOUND"
    with pytest.raises(pskit.Error) as e:
        c.drop_namespace("")
    assert e.value.code_name == "INVALID_ARGUMENT"
    # Declared again: its initial values, not the pushed ones.
    declare_w(c, ns="trial", values=np.zeros(10, np.float32))
    w = np.full(10, 7.0, np.float32)
    c.pull("trial", {"w": w})
    np.testing.assert_array_equal(w, 0.0)


def test_status_with_evaluations_gives_the_history_oldest_first(shards):
    c = pskit.Client(shards(2))
    declare_w(c)
    for i in range(3):
        c.report_evaluation("t", loss=1.0 / (i + 1), accuracy=0.2 * (i + 1),
                            samples=50, done=(i == 2), reason="target" if i == 2 else "")
    plain = c.status()
    assert all(n.get("evaluations", []) == [] for s in plain for n in s["namespaces"])
    for s in c.status(evaluations=True):
        (ns,) = s["namespaces"]
        history = ns["evaluations"]
        assert [e["accuracy"] for e in history] == pytest.approx([0.2, 0.4, 0.6])
        assert [e.get("done", False) for e in history] == [False, False, True]
        assert history[-1]["reason"] == "target"
        times = [int(e["time_unix_ms"]) for e in history]
        assert times == sorted(times) and times[0] > 0
        assert int(history[0]["samples"]) == 50
