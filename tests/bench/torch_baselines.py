#!/usr/bin/python3
"""PyTorch's own distributed baselines for the pskit comparison (issue 13):
the same models, data and optimizer as pskit's Python workers, trained by
  rpc    - a torch.distributed.rpc parameter server: 1 PS + 2 trainers,
  ddp    - DistributedDataParallel with gloo: 2 processes,
  single - one process (the reference),
to a target test accuracy; prints one machine-readable summary line.

  nice /usr/bin/python3 tests/bench/torch_baselines.py --mode rpc|ddp|single \\
      --model cnn|mlp [--target 0.90] [--max_seconds 300] [--threads 1]

Summary line (stdout, last line; everything else goes to stderr):
  RESULT {"mode": ..., "model": ..., "reached": true, "time_to_target_s": ...,
          "samples_per_s_total": ..., "samples_per_s_per_trainer": [...], ...}
Exit status: 0 target reached, 3 not reached within --max_seconds, 1 failed,
2 bad arguments or missing dataset.

What is measured (the same in every mode):
- Every trainer uses --threads torch threads (and OpenBLAS threads), Adam with
  --lr, --batch samples per step, its own disjoint shard of the training set
  (fashion_mnist.shard), reshuffled every epoch.
- This process is the evaluator. Every --eval_interval_s of training it stops
  the training at a step boundary, takes the weights (rpc: from the PS, like
  pskit's evaluator pulls from the shards; ddp/single: rank 0 copies them
  into shared memory), scores them on the whole test set, and lets the
  training go on. The training clock stops while it evaluates, so evaluation
  time is neither training time nor stolen from the trainers' CPUs; the
  evaluator can use --eval_threads threads because the trainers are idle.
- time_to_target_s: training time (from the moment every trainer is ready,
  pauses excluded) at which the weights that first scored >= --target were
  taken. wall_to_target_s: wall time from the same start to the end of that
  evaluation (evaluations included).
- samples/s: samples trained by each trainer (and all of them) up to the last
  evaluation, divided by the training time up to it.
- --eval concurrent measures what pskit's evaluator does instead: it never
  stops the trainers (ddp/single: rank 0 copies its weights at the next step
  boundary and goes on), evaluates with 1 thread on the same cores while they
  train, every --eval_interval_s of wall time (evaluation included), and
  time_to_target_s is the wall time at the end of the evaluation that first
  scored >= --target, as pskit's "target reached after" is; samples/s are per
  second of wall time.

rpc follows PyTorch's parameter-server tutorials: the PS (rank 0) holds the
model and the optimizer; a trainer sends its gradients and gets the updated
weights back in the same call (rpc_sync of update_and_fetch: one round trip
per step, like pskit's push_pull), applied as they arrive (asynchronous, like
pskit's downpour) under a lock. TensorPipe and gloo are bound to the loopback
interface (TP_SOCKET_IFNAME=lo, GLOO_SOCKET_IFNAME=lo) on free ports of
127.0.0.1. Every process started here is stopped before exit, also on errors,
timeouts and SIGINT/SIGTERM; children also die with this process (prctl
PR_SET_PDEATHSIG).
"""
import argparse
import ctypes
import json
import os
import signal
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "python"))

EXIT_REACHED, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_REACHED = 0, 1, 2, 3


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["rpc", "ddp", "single"], required=True)
    p.add_argument("--model", choices=["cnn", "mlp"], default="cnn")
    p.add_argument("--target", type=float, default=0.90, help="test accuracy that ends the run")
    p.add_argument("--max_seconds", type=float, default=300,
                   help="training time (evaluations excluded) after which the run ends "
                        "without reaching the target")
    p.add_argument("--threads", type=int, default=1, help="torch threads per trainer")
    p.add_argument("--trainers", type=int, default=2, help="trainers in rpc and ddp modes")
    p.add_argument("--batch", type=int, default=64, help="samples per step per trainer")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
    p.add_argument("--eval_interval_s", type=float, default=0.5,
                   help="training seconds between evaluations")
    p.add_argument("--eval_threads", type=int, default=None,
                   help="the evaluator's torch threads (default: 2 with --eval paused, "
                        "while the trainers wait; 1 with --eval concurrent)")
    p.add_argument("--eval", choices=["paused", "concurrent"], default="paused",
                   help="paused: the trainers stop while the evaluator runs and only "
                        "training time counts; concurrent: the evaluator runs beside "
                        "them and wall time counts, as pskit's evaluator does")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    if a.mode == "single":
        a.trainers = 1
    if a.eval_threads is None:
        a.eval_threads = 2 if a.eval == "paused" else 1
    for name in ("threads", "trainers", "batch", "eval_threads"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be >= 1")
    if not (a.lr > 0 and a.eval_interval_s > 0 and a.max_seconds > 0 and 0 < a.target <= 1):
        p.error("--lr, --eval_interval_s and --max_seconds must be > 0, --target in (0, 1]")
    return a


def set_threads(n):
    """Limits this process to N compute threads; call before importing torch."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent():
    """Asks Linux to SIGKILL this process when its parent exits; leaves
    Ctrl-C to the parent, which stops every child itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def child_main(target, shared, *args):
    """Runs TARGET(*args, shared) in a child process. Once the evaluator has
    ended the run (shared.stop), an error from a peer that is going away is
    expected: the child then exits quietly instead of printing a traceback."""
    try:
        target(*args, shared)
    except BaseException:
        if shared.stop.is_set():
            sys.exit(0)
        raise


# ---- State shared between the evaluator (this process) and the trainers ----
class Shared:
    """The handles the evaluator and the trainers coordinate with.

    pause_req: set by the evaluator; a trainer that sees it at a step boundary
      (ddp: rank 0 only; rank 1 then waits in its next all-reduce) stops,
      releases `paused` once and waits for `resume`.
    stop: set by the evaluator before `resume` when the run is over.
    samples[r]: samples trained by rank r (written by r only).
    weights: flat float32 buffer rank 0 fills before pausing (ddp, single).
    ready: each trainer releases it once, when its data and model are ready.
    """

    def __init__(self, ctx, trainers, n_params):
        self.pause_req = ctx.Event()
        self.resume = ctx.Event()
        self.stop = ctx.Event()
        self.go = ctx.Event()
        self.paused = ctx.Semaphore(0)
        self.ready = ctx.Semaphore(0)
        self.samples = ctx.RawArray("q", trainers)
        self.weights = ctx.RawArray("f", n_params)


def weights_view(shared):
    import numpy as np
    import torch
    return torch.from_numpy(np.frombuffer(shared.weights, dtype=np.float32))


def load_train(args, rank, world):
    import fashion_mnist as fm
    x, y = fm.load("train", args.data, normalize=fm.NORMALIZE[args.model])
    return fm.shard(x, y, rank, world)


def maybe_pause(shared, model=None, wait=True):
    """At a step boundary: pauses while the evaluator evaluates if it asked.
    Copies MODEL's parameters into shared.weights first when given. With
    WAIT false (--eval concurrent) it only copies them and goes on. Returns
    False when the run is over."""
    if shared.pause_req.is_set():
        if model is not None:
            import torch
            with torch.no_grad():
                weights_view(shared).copy_(
                    torch.nn.utils.parameters_to_vector(model.parameters()))
        if not wait:
            shared.pause_req.clear()  # before release: one copy per request
        shared.paused.release()
        if wait:
            shared.resume.wait()
    return not shared.stop.is_set()


def batches(x, y, batch, seed):
    """Yields (x, y) minibatches of BATCH forever, reshuffled every epoch."""
    import torch
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(len(x), generator=g)
        for b in range(0, len(x) - batch + 1, batch):
            idx = perm[b:b + batch]
            yield x[idx], y[idx]


# ---- rpc: parameter server and trainers --------------------------------------
_PS = None  # the parameter server's state, in the PS process only


class ParameterServer:
    def __init__(self, args):
        import torch
        import fashion_mnist as fm
        torch.manual_seed(args.seed)
        self.model = fm.MODELS[args.model]()
        self.params = list(self.model.parameters())
        self.opt = torch.optim.Adam(self.params, lr=args.lr, foreach=True)
        self.lock = threading.Lock()

    def weights(self):
        with self.lock:
            return [p.detach().clone() for p in self.params]

    def update_and_fetch(self, grads):
        with self.lock:
            for p, g in zip(self.params, grads):
                p.grad = g
            self.opt.step()
            return [p.detach().clone() for p in self.params]


def ps_weights():
    return _PS.weights()


def ps_update_and_fetch(grads):
    return _PS.update_and_fetch(grads)


def rpc_options(port, threads):
    from torch.distributed import rpc
    return rpc.TensorPipeRpcBackendOptions(
        init_method=f"tcp://127.0.0.1:{port}", num_worker_threads=threads,
        rpc_timeout=120)


def rpc_ps_main(args, port, world, shared):
    global _PS
    die_with_parent()
    set_threads(args.threads)
    import torch
    from torch.distributed import rpc
    torch.set_num_threads(args.threads)
    _PS = ParameterServer(args)
    rpc.init_rpc("ps", rank=0, world_size=world, rpc_backend_options=rpc_options(port, 4))
    rpc.shutdown()  # serves until every peer has called shutdown


def rpc_trainer_main(args, port, world, rank, shared):
    die_with_parent()
    set_threads(args.threads)
    import torch
    from torch.distributed import rpc
    import fashion_mnist as fm
    torch.set_num_threads(args.threads)
    x, y = load_train(args, rank, args.trainers)
    model = fm.MODELS[args.model]()
    params = list(model.parameters())
    rpc.init_rpc(f"trainer{rank}", rank=rank + 1, world_size=world,
                 rpc_backend_options=rpc_options(port, 2))
    try:
        weights = rpc.rpc_sync("ps", ps_weights)
        shared.ready.release()
        shared.go.wait()
        for xb, yb in batches(x, y, args.batch, args.seed + rank):
            if not maybe_pause(shared):
                break
            with torch.no_grad():
                for p, w in zip(params, weights):
                    p.copy_(w)
            model.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            weights = rpc.rpc_sync("ps", ps_update_and_fetch, args=([p.grad for p in params],))
            shared.samples[rank] += len(xb)
    finally:
        rpc.shutdown()


# ---- ddp and single ------------------------------------------------------------
def ddp_trainer_main(args, port, rank, shared):
    die_with_parent()
    set_threads(args.threads)
    import torch
    import torch.distributed as dist
    import fashion_mnist as fm
    torch.set_num_threads(args.threads)
    x, y = load_train(args, rank, args.trainers)
    torch.manual_seed(args.seed)
    model = fm.MODELS[args.model]()
    if args.mode == "ddp":
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                rank=rank, world_size=args.trainers)
        net = torch.nn.parallel.DistributedDataParallel(model)
    else:
        net = model
    opt = torch.optim.Adam(net.parameters(), lr=args.lr, foreach=True)
    shared.ready.release()
    shared.go.wait()
    try:
        for xb, yb in batches(x, y, args.batch, args.seed + rank):
            # Only rank 0 pauses: the other ranks then wait in their next
            # all-reduce, so every rank stops after the same step.
            if rank == 0 and not maybe_pause(shared, model, wait=args.eval == "paused"):
                break
            if shared.stop.is_set():
                break
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(xb), yb).backward()
            opt.step()
            shared.samples[rank] += len(xb)
    finally:
        if args.mode == "ddp" and rank == 0:
            dist.destroy_process_group()


# ---- the evaluator (this process) and the run ----------------------------------
class Failed(Exception):
    pass


def wait_or_fail(acquire, procs, what, timeout):
    """Calls ACQUIRE(timeout=0.2) until it succeeds; raises Failed when a child
    exited or TIMEOUT seconds passed."""
    deadline = time.monotonic() + timeout
    while not acquire(timeout=0.2):
        for p in procs:
            if p.exitcode is not None:
                raise Failed(f"{p.name} exited with status {p.exitcode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout:.0f} s waiting for {what}")


def run(args):
    import torch
    import torch.multiprocessing as mp
    import fashion_mnist as fm

    torch.set_num_threads(args.eval_threads)
    torch.manual_seed(args.seed)
    xt, yt = fm.load("test", args.data, normalize=fm.NORMALIZE[args.model])
    eval_model = fm.MODELS[args.model]()
    n_params = sum(p.numel() for p in eval_model.parameters())

    ctx = mp.get_context("spawn")
    shared = Shared(ctx, args.trainers, n_params)
    port = free_port()
    procs = []
    if args.mode == "rpc":
        world = args.trainers + 2  # PS, trainers, evaluator
        procs.append(ctx.Process(target=child_main, args=(rpc_ps_main, shared, args, port, world),
                                 name="ps"))
        for r in range(args.trainers):
            procs.append(ctx.Process(target=child_main,
                                     args=(rpc_trainer_main, shared, args, port, world, r),
                                     name=f"trainer{r}"))
    else:
        for r in range(args.trainers):
            procs.append(ctx.Process(target=child_main,
                                     args=(ddp_trainer_main, shared, args, port, r),
                                     name=f"trainer{r}"))
    trainers_to_pause = args.trainers if args.mode == "rpc" else 1
    concurrent = args.eval == "concurrent"
    if concurrent and args.mode == "rpc":
        trainers_to_pause = 0  # the evaluator takes the weights from the PS
    rpc_up = False
    finished = False
    try:
        for p in procs:
            p.daemon = True
            p.start()
        if args.mode == "rpc":
            from torch.distributed import rpc
            rpc.init_rpc("evaluator", rank=world - 1, world_size=world,
                         rpc_backend_options=rpc_options(port, 2))
            rpc_up = True
        for _ in range(args.trainers):
            wait_or_fail(shared.ready.acquire, procs, "the trainers to start", 120)

        def snapshot():
            if args.mode == "rpc":
                with torch.no_grad():
                    for p, w in zip(eval_model.parameters(), rpc.rpc_sync("ps", ps_weights)):
                        p.copy_(w)
            else:
                torch.nn.utils.vector_to_parameters(weights_view(shared).clone(),
                                                    eval_model.parameters())

        evals = []
        train_s = 0.0  # training time before the current interval
        reached = None
        shared.go.set()
        start = time.monotonic()
        next_eval = start + args.eval_interval_s
        while True:
            interval_start = time.monotonic()  # paused: the training restarted here
            time.sleep(max(next_eval - interval_start, 0))
            round_start = time.monotonic()
            shared.resume.clear()
            if trainers_to_pause:
                shared.pause_req.set()
            for _ in range(trainers_to_pause):
                wait_or_fail(shared.paused.acquire, procs, "the trainers to pause", 60)
            if not concurrent:
                shared.pause_req.clear()
                train_s += time.monotonic() - interval_start
            samples = list(shared.samples)
            snapshot()
            loss, acc = fm.evaluate(eval_model, xt, yt)
            wall_s = time.monotonic() - start
            if concurrent:  # as pskit's Evaluator: every interval, evaluation included
                train_s = wall_s
                next_eval = round_start + args.eval_interval_s
            else:  # the trainers go on after this; they get a whole interval
                next_eval = time.monotonic() + args.eval_interval_s
            evals.append((train_s, acc))
            print(f"eval: train {train_s:.2f} s wall {wall_s:.1f} s samples {sum(samples)} "
                  f"accuracy {acc:.4f} loss {loss:.4f}", file=sys.stderr, flush=True)
            if acc >= args.target and reached is None:
                reached = (train_s, wall_s)
            if reached is not None or train_s >= args.max_seconds:
                shared.stop.set()
                shared.resume.set()
                break
            shared.resume.set()

        result = {
            "mode": args.mode, "model": args.model, "target": args.target,
            "reached": reached is not None,
            "time_to_target_s": round(reached[0], 2) if reached else None,
            "wall_to_target_s": round(reached[1], 2) if reached else None,
            "samples_per_s_total": round(sum(samples) / train_s),
            "samples_per_s_per_trainer": [round(s / train_s) for s in samples],
            "trainers": args.trainers, "threads": args.threads, "batch": args.batch,
            "lr": args.lr, "evaluations": len(evals), "best_accuracy": max(a for _, a in evals),
            "train_s": round(train_s, 2), "load1": round(os.getloadavg()[0], 2),
        }
        print("RESULT " + json.dumps(result), flush=True)
        finished = True
        return EXIT_REACHED if reached else EXIT_NOT_REACHED
    finally:
        shared.stop.set()
        shared.resume.set()
        shared.go.set()
        if rpc_up:
            try:
                # Graceful waits for every peer; after a failure one may be gone.
                rpc.shutdown(graceful=finished)
            except Exception as e:  # a peer already gone; the processes are stopped below
                print(f"rpc shutdown: {e}", file=sys.stderr)
        deadline = time.monotonic() + 10
        for p in procs:
            p.join(max(0.1, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(2)
            if p.is_alive():
                p.kill()
                p.join()


def main(argv=None):
    args = parse_args(argv)
    # Children inherit these: bind gloo and TensorPipe to the loopback interface.
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ.setdefault("TP_SOCKET_IFNAME", "lo")
    set_threads(args.eval_threads)

    def on_signal(signum, _):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    import fashion_mnist as fm
    try:
        fm.load("test", args.data)  # a missing dataset is a usage error, not a failed run
    except fm.DatasetError as e:
        print(f"torch_baselines: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return run(args)
    except Failed as e:
        print(f"torch_baselines: {args.mode} run failed: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as e:
        print(f"torch_baselines: interrupted ({e}); every process stopped", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
