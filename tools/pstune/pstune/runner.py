"""pstune.runner: the search loop. It asks Optuna for configurations, trains
each on the shard cluster in its own namespace(s) with W workers and one
evaluator, reads the evaluations the shards hold, feeds the pruner, tells
Optuna the merit, and frees every namespace it used.

    driver = Driver(Options(space=load_space("space.yaml"), shards=[...],
                            trials=20, parallel=2, out="results"))
    sys.exit(driver.run())

Everything runs on the calling (main) thread: the processes are started from
it (they get SIGTERM if the driver dies, PR_SET_PDEATHSIG, which follows the
thread that started them) and a loop polls them and the shards once a
second. Every process the driver starts it stops, on success, error, pruning,
SIGINT and SIGTERM. The study lives in Optuna's SQLite storage; a driver
killed outright leaves RUNNING trials behind, which the next run of the same
command marks FAIL (their namespaces dropped once the leases of their killed
workers lapse) before it goes on. One driver per study at a time: a lock file
in the output directory and one beside an SQLite storage (keyed by the
study's name) refuse a second. Processes are stopped by process group, so a
--worker_command wrapper's children stop too (pstune.processes).
"""

import dataclasses
import fcntl
import json
import math
import os
import re
import shlex
import signal
import statistics
import sys
import time
import warnings
from typing import Any, Dict, List, Optional, Sequence

import optuna
from optuna.trial import TrialState

from pstune.processes import DriverError, Proc, stop
from pstune.space import Space

SAMPLERS = ("random", "tpe", "cmaes", "nsga2", "gp")
PRUNERS = ("none", "median", "halving", "hyperband")
# An evaluator that ends a job without reaching --target_accuracy exits 3
# (ps-worker and the Python example): a normal end for a trial.
_EVALUATOR_OK = (0, 3)
# Launcher variables a worker command must not inherit (psrun removes them
# too: tools/psrun/launch/worker_command.h).
_LAUNCHER_VARIABLES = ("SLURM_PROCID", "SLURM_NTASKS", "OMPI_COMM_WORLD_RANK",
                       "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE",
                       "JOB_COMPLETION_INDEX", "PSKIT_WORLD_SIZE", "PSKIT_TOKEN")


@dataclasses.dataclass
class Options:
    space: Space
    shards: List[str]
    trials: int = 20              # the study ends with this many finished trials
    parallel: int = 1             # trials at once
    workers: int = 2              # training workers per namespace
    folds: int = 0                # k-fold cross-validation (0: off)
    holdout: int = 5              # without folds: validate on fold 0 of this many
    study: str = "pstune"
    storage: str = ""             # Optuna storage URL; "": sqlite in out/
    out: str = "pstune-out"
    sampler: str = "tpe"
    pruner: str = "none"
    seed: Optional[int] = None
    population: int = 0           # nsga2: 0 = trials / 4, within [4, 50]
    startup_trials: int = 10      # tpe, gp: random trials first
    worker_command: str = ""      # "": ps-worker
    ps_worker: str = ""           # the ps-worker binary
    retrain: bool = True
    retrain_seconds: float = 0.0  # the final retraining's time; 0: the budget's
    max_failures: int = 5
    drop_wait_s: float = 90.0     # how long a refused drop is retried
    token_file: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    poll_s: float = 1.0
    status_line: Optional[bool] = None   # None: when stderr is a terminal


def _merit_of(evals: Sequence[dict], metric: str, direction: str) -> Optional[float]:
    """The best of the evaluations' metric; None without any. A diverged
    model's NaN or infinite loss counts as the worst value (+inf), a NaN
    accuracy as 0 (protobuf's JSON writes them as strings: "NaN")."""
    values = []
    for e in evals:
        v = float(e.get(metric, 0.0))
        if not math.isfinite(v):
            v = math.inf if direction == "minimize" else 0.0
        values.append(v)
    if not values:
        return None
    return max(values) if direction == "maximize" else min(values)


@dataclasses.dataclass
class _Run:
    """One trial (or the final retraining) in flight."""
    trial: Any                        # optuna Trial; None for the final run
    label: str                        # "trial 7" / "final"
    namespaces: List[str]
    procs: Dict[str, List[Proc]]
    started: float
    history: Dict[str, Dict[str, dict]] = dataclasses.field(default_factory=dict)
    reported_step: int = 0
    evaluators_done_at: Optional[float] = None
    failure: str = ""

    def all_procs(self) -> List[Proc]:
        return [p for ps in self.procs.values() for p in ps]

    def evals(self, ns: str) -> List[dict]:
        h = self.history.get(ns, {})
        return [h[k] for k in sorted(h, key=int)]


class Driver:
    """Runs one search (see the module doc). run() returns the exit status."""

    def __init__(self, opts: Options, err=None):
        self.o = opts
        self.err = err or sys.stderr
        self.space = opts.space
        self.direction = self.space.direction
        self.metric = self.space.metric
        self.running: List[_Run] = []
        self.pending_drops: Dict[str, float] = {}   # namespace -> give-up time
        self.failures_this_run = 0
        self.stop_signal = 0
        self.signals = 0              # signals received (a second one hurries)
        Proc.hurry = False
        self._reported = False
        self.started = time.monotonic()
        self.client = None
        self.study = None
        self._status_warned = False
        self._last_line = ""
        self._last_line_at = 0.0
        self._live = (opts.status_line if opts.status_line is not None
                      else self.err.isatty())
        self._lock_files = []

    # ------------------------------------------------------------ setup
    def _say(self, text: str) -> None:
        if self._live and self._last_line:
            self.err.write("\r\033[K")
        self.err.write(text + "\n")
        self.err.flush()
        if self._live and self._last_line:
            self.err.write(self._last_line)
            self.err.flush()

    def _check_options(self) -> None:
        o = self.o
        if not o.shards:
            raise DriverError("--shards is empty: give the cluster's shards as "
                              "HOST:PORT,HOST:PORT (psrun --workers 0 prints them)")
        if o.trials < 1 or o.parallel < 1 or o.workers < 1:
            raise DriverError("--trials, --parallel and --workers must be >= 1")
        if o.folds == 1 or o.folds < 0:
            raise DriverError(f"--folds {o.folds}: give K >= 2 (K-fold "
                              "cross-validation) or 0 (off)")
        if o.holdout == 1 or o.holdout < 0:
            raise DriverError(f"--holdout {o.holdout}: give K >= 2 (validate on "
                              "one K-th of the training data) or 0 (no holdout)")
        if o.sampler not in SAMPLERS:
            raise DriverError(f"--sampler {o.sampler}: use one of {', '.join(SAMPLERS)}")
        if o.pruner not in PRUNERS:
            raise DriverError(f"--pruner {o.pruner}: use one of {', '.join(PRUNERS)}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", o.study):
            raise DriverError(f"--study {o.study!r}: use letters, digits, _ . - "
                              "(it names the trials' namespaces)")
        if o.worker_command:
            try:
                self.command = shlex.split(o.worker_command)
            except ValueError as e:
                raise DriverError(f"--worker_command: {e}") from None
            if not self.command:
                raise DriverError("--worker_command is empty")
        else:
            self.command = [o.ps_worker or "ps-worker"]
            if not (os.path.isfile(self.command[0]) and
                    os.access(self.command[0], os.X_OK)):
                raise DriverError(f"ps-worker not found at {self.command[0]!r}: build "
                                  "it (cmake --build build --target ps-worker) or "
                                  "give --ps_worker PATH")

    def _connect(self) -> None:
        import pskit
        token = ""
        if self.o.token_file:
            from pskit.launch import LaunchError, read_token_file
            try:
                token = read_token_file(self.o.token_file, "--token_file")
            except LaunchError as e:
                raise DriverError(str(e)) from None
        self.client = pskit.Client(list(self.o.shards), tls_ca=self.o.tls_ca,
                                   tls_cert=self.o.tls_cert, tls_key=self.o.tls_key,
                                   token=token, timeout_s=20.0)
        try:
            self.client.status()
        except pskit.Error as e:
            raise DriverError(f"the shards {','.join(self.o.shards)} do not answer: "
                              f"{e} (start them, e.g. psrun --workers 0)") from None
        if not hasattr(self.client, "drop_namespace"):
            raise DriverError("this pskit binding has no Client.drop_namespace: "
                              "rebuild pskit (cmake --build build)")

    def _storage_url(self) -> str:
        return self.o.storage or "sqlite:///" + os.path.abspath(
            os.path.join(self.o.out, "study.db"))

    def _lock_paths(self) -> List[str]:
        """The lock files: one in --out (its results and logs), one beside
        an SQLite storage keyed by the study's name (the study itself, even
        when another run uses another --out)."""
        paths = [os.path.join(self.o.out, "pstune.lock")]
        url = self._storage_url()
        if url.startswith("sqlite:///"):
            db = url[len("sqlite:///"):]
            paths.append(f"{os.path.abspath(db)}.{self.o.study}.pstune.lock")
        return paths

    def _lock(self) -> None:
        try:
            os.makedirs(self.o.out, exist_ok=True)
        except OSError as e:
            raise DriverError(f"cannot create --out {self.o.out}: {e.strerror}; give "
                              "a writable directory") from None
        self._lock_files = []
        for path in self._lock_paths():
            try:
                f = open(path, "a+")
            except OSError as e:
                raise DriverError(f"cannot create the lock file {path}: "
                                  f"{e.strerror}") from None
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.seek(0)
                holder = f.read().strip()
                f.close()
                raise DriverError(f"another pstune ({holder or 'unknown pid'}) is "
                                  f"running study {self.o.study!r} or --out "
                                  f"{self.o.out} (lock {path}): one driver per "
                                  "study; wait for it or stop it") from None
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()}\n")
            f.flush()
            self._lock_files.append(f)

    def _sampler(self, finished_before: int = 0):
        """The sampler, seeded from (--seed, the number of trials the study
        already holds): a resumed study draws new configurations instead of
        repeating the first run's."""
        o, seed = self.o, self.o.seed
        if seed is not None and finished_before:
            seed = (seed * 1_000_003 + finished_before) % 2**32
        if o.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if o.sampler == "tpe":
            # constant_liar: parallel trials do not all draw near the same
            # point (experimental in Optuna 3.1; its warning is silenced).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.samplers.TPESampler(
                    seed=seed, n_startup_trials=o.startup_trials,
                    constant_liar=o.parallel > 1)
        if o.sampler == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=min(
                o.startup_trials, max(1, o.trials // 4)))
        if o.sampler == "nsga2":
            pop = o.population or min(50, max(4, o.trials // 4))
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=pop)
        from pstune import gp_sampler
        return gp_sampler.GPSampler(seed=seed, n_startup_trials=o.startup_trials)

    def _expected_steps(self) -> int:
        b = self.space.budget
        return max(1, int(math.ceil(b.max_seconds / b.eval_interval_s)) + 1)

    def _pruner(self):
        p = self.o.pruner
        if p == "none":
            return optuna.pruners.NopPruner()
        if p == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
        if p == "halving":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=2,
                                                          reduction_factor=3)
        return optuna.pruners.HyperbandPruner(min_resource=2,
                                              max_resource=self._expected_steps(),
                                              reduction_factor=3)

    def _settings(self) -> Dict[str, Any]:
        """What makes two runs' merits comparable: resuming with other values
        is refused."""
        return {
            "metric": self.metric,
            "parameters": [dataclasses.asdict(p) for p in self.space.parameters],
            "flags": [list(f) for f in self.space.flags],
            "budget": dataclasses.asdict(self.space.budget),
            "workers": self.o.workers, "folds": self.o.folds,
            "holdout": 0 if self.o.folds else self.o.holdout,
            "worker_command": self.o.worker_command,
        }

    def _open_study(self) -> None:
        storage = self._storage_url()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        try:
            self.study = optuna.create_study(
                study_name=self.o.study, storage=storage,
                sampler=optuna.samplers.RandomSampler(), pruner=self._pruner(),
                direction=self.direction, load_if_exists=True)
            already = len(self.study.get_trials(deepcopy=False))
        except Exception as e:  # storage errors come in many types
            raise DriverError(f"cannot open the study {self.o.study!r} in {storage}: "
                              f"{e}") from None
        # Study.sampler is a plain attribute (Optuna 3.1): the real sampler is
        # made once the study's size is known (see _sampler).
        self.study.sampler = self._sampler(already)
        if self.study.direction.name.lower() != self.direction:
            raise DriverError(
                f"the study {self.o.study!r} in {storage} maximises/minimises the other "
                f"way ({self.study.direction.name.lower()}); this space file's metric "
                f"{self.metric!r} wants {self.direction}: use another --study")
        settings = json.loads(json.dumps(self._settings()))
        stored = self.study.user_attrs.get("settings")
        if stored is None:
            self.study.set_user_attr("settings", settings)
        elif stored != settings:
            changed = sorted(k for k in set(stored) | set(settings)
                             if stored.get(k) != settings.get(k))
            raise DriverError(
                f"the study {self.o.study!r} in {storage} was run with other settings "
                f"({', '.join(changed)} differ): resume it with the same space file "
                "and flags, or start a new study with --study NAME")

    # ------------------------------------------------------------ namespaces
    def _namespaces(self, number: int) -> List[str]:
        base = f"{self.o.study}-t{number}"
        if self.o.folds:
            return [f"{base}-f{i}" for i in range(self.o.folds)]
        return [base]

    def _fold_flags(self, index: int, final: bool) -> List[str]:
        if final:
            return []
        if self.o.folds:
            return [f"--folds={self.o.folds}", f"--fold={index}"]
        if self.o.holdout:
            return [f"--folds={self.o.holdout}", "--fold=0"]
        return []

    def _drop_now(self, ns: str) -> Optional[str]:
        """Tries to drop ns: None when it is gone, else why not (yet)."""
        import pskit
        try:
            self.client.drop_namespace(ns)
            return None
        except pskit.Error as e:
            if e.code_name == "NOT_FOUND":
                return None
            return str(e)

    def _drop_later(self, namespaces: Sequence[str]) -> None:
        for ns in namespaces:
            self.pending_drops.setdefault(ns, time.monotonic() + self.o.drop_wait_s)

    def _service_drops(self, final: bool = False) -> None:
        for ns, give_up in list(self.pending_drops.items()):
            why = self._drop_now(ns)
            if why is None:
                del self.pending_drops[ns]
            elif time.monotonic() > give_up:
                del self.pending_drops[ns]
                self._say(f"pstune: namespace {ns} could not be dropped in "
                          f"{self.o.drop_wait_s:.0f} s ({why}); drop it later with: "
                          f"psctl drop {ns} --shards {','.join(self.o.shards)}")

    def _finish_drops(self) -> None:
        """Drops the pending namespaces, waiting for leases to lapse; a
        signal that arrives meanwhile stops the wait."""
        signals = self.signals
        while self.pending_drops:
            self._service_drops()
            if self.pending_drops and self.signals != signals:
                self._say("pstune: namespaces left on the shards (drop them with "
                          f"psctl drop NAME --shards {','.join(self.o.shards)}): "
                          f"{', '.join(sorted(self.pending_drops))}")
                self.pending_drops.clear()
                return
            if self.pending_drops:
                time.sleep(1.0)

    def _recover(self) -> None:
        """After a killed driver: its RUNNING trials become FAIL; every
        namespace of this study left on the shards is dropped."""
        stale = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for t in stale:
            names = t.user_attrs.get("namespaces") or self._namespaces(t.number)
            self.study._storage.set_trial_user_attr(
                t._trial_id, "fail_reason", "the driver stopped while it ran")
            self.study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            self._drop_later(names)
        if stale:
            self._say(f"pstune: resuming study {self.o.study}: trial"
                      f"{'s' if len(stale) > 1 else ''} "
                      f"{', '.join(str(t.number) for t in stale)} of the stopped "
                      "driver marked failed; freeing their namespaces (the leases of "
                      "their workers may take a while to lapse)")
        pattern = re.compile(re.escape(self.o.study) + r"-(t\d+(-f\d+)?|final)\Z")
        for ns in self._shard_namespaces():
            if pattern.match(ns):
                self._drop_later([ns])
        self._finish_drops()

    # ------------------------------------------------------------ shards
    def _shard_namespaces(self) -> List[str]:
        names = set()
        for shard in self.client.status():
            for n in shard.get("namespaces", []):
                names.add(n.get("name", ""))
        return sorted(names)

    def _read_evaluations(self) -> Optional[Dict[str, List[dict]]]:
        """namespace -> its evaluations (oldest first), from the first shard
        that answers; None when none does."""
        import pskit
        try:
            try:
                shards = self.client.status(evaluations=True)
            except TypeError:       # a binding without the history: the last one
                shards = self.client.status()
        except pskit.Error as e:
            if not self._status_warned:
                self._say(f"pstune: reading the shards' status failed ({e}); retrying")
                self._status_warned = True
            return None
        self._status_warned = False
        out = {}
        for shard in shards:
            for n in shard.get("namespaces", []):
                evals = n.get("evaluations")
                if evals is None:
                    last = n.get("last_evaluation", n.get("lastEvaluation"))
                    evals = [last] if last else []
                out.setdefault(n.get("name", ""), evals)
        return out

    # ------------------------------------------------------------ processes
    def _env(self, ns: str, role: str, rank: int, world: int) -> Dict[str, str]:
        env = dict(os.environ)
        if not self.o.worker_command:
            return env
        for v in _LAUNCHER_VARIABLES:
            env.pop(v, None)
        env.update({
            "PSKIT_SHARDS": ",".join(self.o.shards), "PSKIT_ROLE": role,
            "PSKIT_NAMESPACE": ns, "RANK": str(rank), "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world),
            "PSKIT_METRICS_PORT": "0", "PSKIT_METRICS_HOST": "127.0.0.1",
        })
        env.setdefault("PYTHONUNBUFFERED", "1")
        if self.o.token_file:
            env["PSKIT_TOKEN_FILE"] = os.path.abspath(self.o.token_file)
        for name, value in (("PSKIT_TLS_CA", self.o.tls_ca),
                            ("PSKIT_TLS_CERT", self.o.tls_cert),
                            ("PSKIT_TLS_KEY", self.o.tls_key)):
            if value:
                env[name] = os.path.abspath(value)
            else:
                env.pop(name, None)
        return env

    def _seconds(self, final: bool) -> float:
        """A run's training time: the budget's, or --retrain_seconds for the
        final retraining."""
        if final and self.o.retrain_seconds > 0:
            return self.o.retrain_seconds
        return self.space.budget.max_seconds

    def _argv(self, ns: str, role: str, rank: int, world: int, params: Dict[str, Any],
              fold_flags: List[str], final: bool) -> List[str]:
        b = self.space.budget
        seconds = self._seconds(final)
        argv = list(self.command)
        if not self.o.worker_command:
            argv += [f"--shards={','.join(self.o.shards)}", f"--namespace={ns}",
                     f"--role={role}", f"--rank={rank}", f"--world={world}"]
            for flag, value in (("--token_file", self.o.token_file),
                                ("--tls_ca", self.o.tls_ca),
                                ("--tls_cert", self.o.tls_cert),
                                ("--tls_key", self.o.tls_key)):
                if value:
                    argv.append(f"{flag}={os.path.abspath(value)}")
        argv += self.space.worker_flags(params)
        argv.append(f"--max_seconds={seconds:g}")
        if role == "evaluator":
            # The final run scores the test set: once, at its end (ps-worker
            # also scores the untrained model at the start).
            interval = seconds if final else b.eval_interval_s
            argv.append(f"--eval_interval_s={interval:g}")
            if b.patience and not final:
                argv.append(f"--patience={b.patience}")
        return argv + fold_flags

    def _start(self, trial, label: str, namespaces: List[str], params: Dict[str, Any],
               final: bool) -> _Run:
        run = _Run(trial=trial, label=label, namespaces=namespaces, procs={},
                   started=time.monotonic())
        self.running.append(run)   # so that a failed start is stopped too
        w = self.o.workers
        for i, ns in enumerate(namespaces):
            folds = self._fold_flags(i, final)
            logs = os.path.join(self.o.out, "logs", ns)
            procs = run.procs.setdefault(ns, [])
            procs.append(Proc(f"{ns} evaluator",
                              self._argv(ns, "evaluator", 0, 1, params, folds, final),
                              self._env(ns, "evaluator", 0, 1),
                              os.path.join(logs, "evaluator.log"), True))
            for r in range(w):
                procs.append(Proc(f"{ns} worker {r}",
                                  self._argv(ns, "worker", r, w, params, folds, final),
                                  self._env(ns, "worker", r, w),
                                  os.path.join(logs, f"worker{r}.log"), False))
        return run

    # ------------------------------------------------------------ trials
    def _start_trial(self) -> None:
        trial = self.study.ask()
        try:
            params = self.space.suggest(trial)
        except BaseException:
            self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise
        namespaces = self._namespaces(trial.number)
        trial.set_user_attr("namespaces", namespaces)
        # A namespace of this name may be left from an older study of the same
        # name: start clean.
        for ns in namespaces:
            why = self._drop_now(ns)
            if why is not None:
                trial.set_user_attr("fail_reason", f"namespace {ns} in use: {why}")
                self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                raise DriverError(f"namespace {ns} is in use on the shards and cannot "
                                  f"be dropped ({why}); is another pstune running "
                                  f"study {self.o.study}?")
        try:
            self._start(trial, f"trial {trial.number}", namespaces, params, final=False)
        except BaseException:
            if not any(r.trial is trial for r in self.running):
                self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise

    def _update(self, run: _Run, evals: Optional[Dict[str, List[dict]]]) -> None:
        if evals is None:
            return
        for ns in run.namespaces:
            h = run.history.setdefault(ns, {})
            for e in evals.get(ns, []):
                h[str(e.get("time_unix_ms", e.get("timeUnixMs", "0")))] = e

    def _intermediate(self, run: _Run, step: int) -> float:
        values = [_merit_of(run.evals(ns)[:step], self.metric, self.direction)
                  for ns in run.namespaces]
        return statistics.fmean(values)

    def _check_processes(self, run: _Run) -> bool:
        """Notes failures; True when every process has exited."""
        now = time.monotonic()
        all_done = True
        for p in run.all_procs():
            rc = p.poll()
            if rc is None:
                all_done = False
                continue
            ok = _EVALUATOR_OK if p.evaluator else (0,)
            if rc not in ok and not p.stopped_by_us and not run.failure:
                last = p.last_line()
                run.failure = (f"{p.label} exited with status {rc}"
                               f"{': ' + last if last else ''} (log: {p.log})")
        evaluators = [p for p in run.all_procs() if p.evaluator]
        if run.evaluators_done_at is None and all(p.poll() is not None
                                                  for p in evaluators):
            run.evaluators_done_at = now
        budget = self._seconds(run.trial is None)
        if not all_done and not run.failure:
            if run.evaluators_done_at is not None and now - run.evaluators_done_at > 30:
                stop(run.all_procs())     # workers that miss the job's end
                all_done = True
            elif now - run.started > budget * 2 + 120:
                run.failure = (f"ran {now - run.started:.0f} s, past its budget of "
                               f"{budget:g} s (logs in "
                               f"{os.path.join(self.o.out, 'logs')})")
        if run.failure:
            stop(run.all_procs())
            return True
        return all_done

    def _end_trial(self, run: _Run, state: TrialState, value=None, reason: str = ""):
        stop(run.all_procs())
        self._drop_later(run.namespaces)
        t = run.trial
        t.set_user_attr("seconds", round(time.monotonic() - run.started, 1))
        if reason:
            t.set_user_attr("fail_reason" if state == TrialState.FAIL else "reason",
                            reason)
        # skip_if_finished: another party (a second driver's _recover, a
        # user) may have finished the trial meanwhile.
        if state == TrialState.COMPLETE:
            self.study.tell(t, value, skip_if_finished=True)
        else:
            self.study.tell(t, state=state, skip_if_finished=True)
        self.running.remove(run)

    def _advance(self, run: _Run) -> None:
        """One look at a running trial: reports, pruning, its end."""
        done = self._check_processes(run)
        steps = min(len(run.evals(ns)) for ns in run.namespaces)
        if not run.failure and steps > run.reported_step:
            for s in range(run.reported_step + 1, steps + 1):
                run.trial.report(self._intermediate(run, s), s)
            run.reported_step = steps
            if not done and run.trial.should_prune():
                self._end_trial(run, TrialState.PRUNED,
                                reason=f"pruned after {steps} evaluations")
                self._say(f"pstune: trial {run.trial.number} pruned after {steps} "
                          f"evaluations ({self.metric} "
                          f"{self._intermediate(run, steps):.4f})")
                return
        if not done:
            return
        if run.failure:
            self.failures_this_run += 1
            self._end_trial(run, TrialState.FAIL, reason=run.failure)
            self._say(f"pstune: trial {run.trial.number} failed: {run.failure}")
            return
        # The evaluators' last reports may have come after this round's read.
        self._update(run, self._read_evaluations())
        steps = min(len(run.evals(ns)) for ns in run.namespaces)
        merits = [_merit_of(run.evals(ns), self.metric, self.direction)
                  for ns in run.namespaces]
        if any(m is None for m in merits):
            missing = [ns for ns, m in zip(run.namespaces, merits) if m is None]
            self.failures_this_run += 1
            why = (f"no evaluation reached the shards for {', '.join(missing)} (logs "
                   f"in {os.path.join(self.o.out, 'logs', missing[0])})")
            self._end_trial(run, TrialState.FAIL, reason=why)
            self._say(f"pstune: trial {run.trial.number} failed: {why}")
            return
        merit = statistics.fmean(merits)
        run.trial.set_user_attr("evaluations", steps)
        if len(merits) > 1:
            run.trial.set_user_attr("fold_merits", merits)
            run.trial.set_user_attr("merit_std", statistics.pstdev(merits))
        self._end_trial(run, TrialState.COMPLETE, value=merit)

    # ------------------------------------------------------------ progress
    def _counts(self) -> Dict[str, int]:
        c = {"done": 0, "pruned": 0, "failed": 0}
        for t in self.study.get_trials(deepcopy=False):
            if t.state == TrialState.COMPLETE:
                c["done"] += 1
            elif t.state == TrialState.PRUNED:
                c["pruned"] += 1
            elif t.state == TrialState.FAIL:
                c["failed"] += 1
        return c

    def _best(self):
        try:
            return self.study.best_trial
        except ValueError:
            return None

    def _progress(self, force: bool = False) -> None:
        c = self._counts()
        best = self._best()
        elapsed = int(time.monotonic() - self.started)
        line = (f"pstune {self.o.study}: {len(self.running)} running, {c['done']} done, "
                f"{c['pruned']} pruned, {c['failed']} failed of {self.o.trials}; best "
                + (f"{self.metric} {best.value:.4f} (trial {best.number})" if best
                   else "-") + f"; {elapsed // 60}m{elapsed % 60:02d}s")
        if self._live:
            self.err.write("\r\033[K" + line)
            self.err.flush()
            self._last_line = line
        elif force or (line.split(";")[:2] != self._last_line.split(";")[:2]
                       and time.monotonic() - self._last_line_at > 5):
            self.err.write(line + "\n")
            self.err.flush()
            self._last_line, self._last_line_at = line, time.monotonic()

    # ------------------------------------------------------------ the loop
    def _on_signal(self, signum, frame):
        """The first signal stops the search (runs are stopped, their trials
        failed, the results written); a later one also cuts the shutdown
        short: SIGKILL without grace, no more waiting for drops."""
        self.signals += 1
        if self.stop_signal:
            Proc.hurry = True
        else:
            self.stop_signal = signum

    def _finished(self) -> int:
        c = self._counts()
        return c["done"] + c["pruned"]

    def _search(self) -> None:
        while not self.stop_signal:
            finished = self._finished()
            if finished >= self.o.trials and not self.running:
                return
            if self.failures_this_run >= self.o.max_failures:
                raise DriverError(
                    f"{self.failures_this_run} trials failed in this run (the last: "
                    f"see above); fix the cause and rerun the same command to resume")
            while (len(self.running) < self.o.parallel and
                   finished + len(self.running) < self.o.trials and
                   self.failures_this_run < self.o.max_failures):
                self._start_trial()
            time.sleep(self.o.poll_s)
            evals = self._read_evaluations()
            for run in list(self.running):
                self._update(run, evals)
                self._advance(run)
            self._service_drops()
            self._progress()

    def _retrain(self) -> Optional[Dict[str, Any]]:
        best = self._best()
        if best is None:
            self._say("pstune: no trial completed: nothing to retrain")
            return None
        stored = self.study.user_attrs.get("final")
        if (stored and stored.get("trial") == best.number
                and stored.get("budget_s", self.space.budget.max_seconds)
                == self._seconds(True)):
            return stored
        ns = f"{self.o.study}-final"
        self._drop_later([ns])
        self._finish_drops()
        self._say(f"pstune: retraining trial {best.number}'s configuration on all "
                  f"training data, scored on the test set ({ns})")
        run = self._start(None, "final", [ns], best.params, final=True)
        while True:
            if self.stop_signal:
                return None
            time.sleep(self.o.poll_s)
            self._update(run, self._read_evaluations())
            if self._check_processes(run):
                break
            self._progress()
        self.running.remove(run)
        self._update(run, self._read_evaluations())
        self._drop_later([ns])
        evals = run.evals(ns)
        if run.failure or not evals:
            raise DriverError(f"the final retraining failed: "
                              f"{run.failure or 'no evaluation reached the shards'}")
        last = evals[-1]
        result = {"trial": best.number, "params": best.params,
                  "validation_merit": best.value,
                  "test_accuracy": float(last.get("accuracy", 0.0)),
                  "test_loss": float(last.get("loss", 0.0)),
                  "seconds": round(time.monotonic() - run.started, 1),
                  "budget_s": self._seconds(True)}
        self.study.set_user_attr("final", result)
        return result

    def _write_results(self, final: Optional[Dict[str, Any]]) -> List[str]:
        self._reported = True
        written = []
        try:
            from pstune import report
        except ImportError:
            report = None
            self._say("pstune: pstune.report is missing: no table or plots written")
        if report is not None:
            name = ("validation " if self.o.folds or self.o.holdout else "") + self.metric
            try:
                written += report.write_report(self.study, self.o.out, name)
            except Exception as e:  # the results must not hide the summary
                self._say(f"pstune: writing the report to {self.o.out} failed: {e}")
        if final is not None:
            path = os.path.join(self.o.out, "best.json")
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(final, f, indent=2, sort_keys=True)
                f.write("\n")
            os.replace(tmp, path)
            written.append(path)
        return written

    def _summary(self, final, written) -> None:
        c = self._counts()
        best = self._best()
        elapsed = time.monotonic() - self.started
        lines = [f"pstune: study {self.o.study}: {c['done']} complete, {c['pruned']} "
                 f"pruned, {c['failed']} failed ({self.o.sampler} sampler, "
                 f"{self.o.pruner} pruner) in {elapsed:.0f} s"]
        if best is not None:
            spread = best.user_attrs.get("merit_std")
            lines.append(f"  best: trial {best.number}, {self.metric} {best.value:.4f}"
                         + (f" +- {spread:.4f} over {self.o.folds} folds"
                            if spread is not None else ""))
            for k, v in best.params.items():
                lines.append(f"    {k} = {v:.6g}" if isinstance(v, float)
                             else f"    {k} = {v}")
        if final is not None:
            lines.append(f"  retrained on all training data: test accuracy "
                         f"{final['test_accuracy']:.4f}, test loss {final['test_loss']:.4f}")
        for w in written:
            lines.append(f"  wrote {w}")
        self._say("\n".join(lines))

    def run(self) -> int:
        """Runs the search; 0 on success, 1 on an error, 128 + the signal when
        stopped by SIGINT, SIGTERM or SIGHUP."""
        old = {s: signal.signal(s, self._on_signal)
               for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        errors = (DriverError, OSError, ValueError, ImportError)
        try:
            import pskit
            errors += (pskit.Error,)
        except ImportError:
            pass                        # _connect says so
        try:
            try:
                self._check_options()
                self._lock()
                self._connect()
                self._open_study()
                self._recover()
                self._progress(force=True)
                self._search()
                # The table first, so that a failed retraining or a signal
                # still leaves the trials' results.
                self._write_results(None)
                final = None
                if not self.stop_signal and self.o.retrain:
                    final = self._retrain()
                if self.stop_signal:
                    self._say(f"pstune: stopped by "
                              f"{signal.Signals(self.stop_signal).name}; rerun the "
                              "same command to resume")
                    return 128 + self.stop_signal
                self._finish_drops()
                written = self._write_results(final)
                self._summary(final, written)
                return 0
            except errors as e:
                self._say(f"pstune: {str(e) or type(e).__name__}")
                return 1
            except KeyboardInterrupt:
                self._say("pstune: interrupted; rerun the same command to resume")
                return 130
            finally:
                self._shutdown()
        except KeyboardInterrupt:       # a SIGINT from outside our handler
            return 130
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _shutdown(self) -> None:
        """Stops every process still running (SIGTERM to all runs at once,
        then one wait), fails their trials, drops their namespaces, and
        writes the table of the trials if the search did not."""
        if self._live and self._last_line:
            self.err.write("\n")
            self._last_line = ""
        runs, self.running = self.running, []
        if runs:
            self._say(f"pstune: stopping {len(runs)} run{'s' if len(runs) > 1 else ''}"
                      " (a second signal kills them at once)")
        stop([p for run in runs for p in run.all_procs()], grace_s=10.0)
        for run in runs:
            self._drop_later(run.namespaces)
            if run.trial is not None and self.study is not None:
                try:
                    run.trial.set_user_attr("fail_reason", "the driver was stopped")
                    self.study.tell(run.trial, state=TrialState.FAIL,
                                    skip_if_finished=True)
                except Exception as e:  # the storage may be what failed
                    self._say(f"pstune: could not mark trial {run.trial.number} "
                              f"failed ({e}); the next run will")
        if self.client is not None and self.pending_drops:
            try:
                self._finish_drops()
            except Exception as e:  # the shards may be what failed
                self._say(f"pstune: namespaces left on the shards ({e}): "
                          f"{', '.join(sorted(self.pending_drops))}")
        if self.study is not None and not self._reported:
            try:
                self._write_results(None)
            except Exception as e:
                self._say(f"pstune: writing the results failed: {e}")
        for f in self._lock_files:
            f.close()
        self._lock_files = []
