"""Tests of pstune's search-space file (tools/pstune/pstune/space.py): a good
file is read as written, and every kind of bad file is refused with a
SpaceError naming the file, the entry and what is wrong (never a traceback
from deep inside). Also the command line's refusals and the driver's set-up
before any shard is reached (its samplers, errors without tracebacks). No
shards needed; the error tests create a pskit.Client (build/python)."""

import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tools" / "pstune"))

import optuna  # noqa: E402

from pstune.space import SpaceError, load_space  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]

GOOD = """\
metric: accuracy
parameters:
  lr: {kind: float, low: 1.0e-4, high: 0.1, log: true, flag: --lr}
  h1: {kind: int, low: 16, high: 256, log: true}
  h2: {kind: int, low: 16, high: 128, step: 16}
  opt: {kind: categorical, choices: [adam, sgd], flag: --optimizer}
  nest: {kind: categorical, choices: [true, false], flag: --nesterov}
flags:
  --layers: "784,{h1},{h2},10"
  --epochs: 100
  --data_path: /data
budget: {max_seconds: 30, patience: 3, eval_interval_s: 1.5}
"""


def write(tmp_path, text, name="space.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_good_file_is_read_as_written(tmp_path):
    s = load_space(write(tmp_path, GOOD))
    assert s.metric == "accuracy" and s.direction == "maximize"
    assert [p.name for p in s.parameters] == ["lr", "h1", "h2", "opt", "nest"]
    lr = s.parameters[0]
    assert (lr.kind, lr.low, lr.high, lr.log, lr.flag) == ("float", 1e-4, 0.1, True, "--lr")
    assert s.parameters[2].step == 16
    assert s.budget.max_seconds == 30 and s.budget.patience == 3
    assert s.budget.eval_interval_s == 1.5
    flags = s.worker_flags({"lr": 0.001, "h1": 64, "h2": 32, "opt": "sgd", "nest": True})
    assert flags == ["--layers=784,64,32,10", "--epochs=100", "--data_path=/data",
                     "--lr=0.001", "--optimizer=sgd", "--nesterov"]
    # false booleans are left out
    assert "--nesterov" not in s.worker_flags(
        {"lr": 0.001, "h1": 64, "h2": 32, "opt": "sgd", "nest": False})


def test_loss_metric_minimises(tmp_path):
    s = load_space(write(tmp_path, GOOD.replace("metric: accuracy", "metric: loss")))
    assert s.direction == "minimize"


def test_json_file_and_braces(tmp_path):
    doc = {"metric": "loss",
           "parameters": {"x": {"kind": "float", "low": 0, "high": 1, "flag": "--x"}},
           "flags": {"--note": "{{literal}}-{x}"},
           "budget": {"max_seconds": 5}}
    s = load_space(write(tmp_path, json.dumps(doc), "space.json"))
    assert s.worker_flags({"x": 0.5}) == ["--note={literal}-0.5", "--x=0.5"]
    assert s.budget.patience == 0 and s.budget.eval_interval_s == 2.0


def test_suggest_draws_within_bounds(tmp_path):
    s = load_space(write(tmp_path, GOOD))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(20):
        t = study.ask()
        p = s.suggest(t)
        assert 1e-4 <= p["lr"] <= 0.1
        assert 16 <= p["h1"] <= 256 and isinstance(p["h1"], int)
        assert p["h2"] in range(16, 129, 16)
        assert p["opt"] in ("adam", "sgd")
        study.tell(t, 0.0)


def test_example_file_is_valid():
    s = load_space(str(REPO / "tools" / "pstune" / "examples" / "mlp_space.yaml"))
    assert {p.name for p in s.parameters} == {"lr", "hidden1", "hidden2", "batch_size",
                                              "optimizer"}


BASE_PARAM = "  x: {kind: float, low: 0.1, high: 1, flag: --x}\n"


def doc(params=BASE_PARAM, metric="metric: accuracy\n", flags="",
        budget="budget: {max_seconds: 10}\n", extra=""):
    return metric + "parameters:\n" + params + flags + budget + extra


REFUSALS = [
    ("unknown kind",
     doc("  x: {kind: real, low: 0, high: 1, flag: --x}\n"),
     "parameters.x: unknown kind 'real'"),
    ("kind missing", doc("  x: {low: 0, high: 1, flag: --x}\n"),
     "parameters.x: kind is missing"),
    ("low >= high", doc("  x: {kind: float, low: 2, high: 1, flag: --x}\n"),
     "parameters.x: low (2) must be below high (1)"),
    ("low == high int", doc("  n: {kind: int, low: 4, high: 4, flag: --n}\n"),
     "parameters.n: low (4) must be below high (4)"),
    ("log with low <= 0",
     doc("  x: {kind: float, low: 0, high: 1, log: true, flag: --x}\n"),
     "parameters.x: log: true needs low > 0"),
    ("log not boolean",
     doc("  x: {kind: float, low: 1, high: 2, log: yes please, flag: --x}\n"),
     "parameters.x: log must be true or false"),
    ("high missing", doc("  x: {kind: float, low: 1, flag: --x}\n"),
     "parameters.x: high is missing"),
    ("low not a number", doc("  x: {kind: float, low: abc, high: 2, flag: --x}\n"),
     "parameters.x: low must be a number"),
    ("int bound not whole", doc("  n: {kind: int, low: 1.5, high: 8, flag: --n}\n"),
     "parameters.n: low must be a whole number"),
    ("step with log",
     doc("  n: {kind: int, low: 1, high: 64, log: true, step: 2, flag: --n}\n"),
     "parameters.n: step and log: true cannot go together"),
    ("step not positive", doc("  n: {kind: int, low: 1, high: 64, step: 0, flag: --n}\n"),
     "parameters.n: step must be > 0"),
    ("step too large", doc("  n: {kind: int, low: 1, high: 4, step: 8, flag: --n}\n"),
     "parameters.n: step (8) is larger than high - low"),
    ("empty choices", doc("  o: {kind: categorical, choices: [], flag: --o}\n"),
     "parameters.o: choices is empty"),
    ("choices not a list", doc("  o: {kind: categorical, choices: adam, flag: --o}\n"),
     "parameters.o: choices must be a list"),
    ("choices repeated", doc("  o: {kind: categorical, choices: [a, a], flag: --o}\n"),
     "parameters.o: choices ['a', 'a'] name a value twice"),
    ("choice is a mapping",
     doc("  o: {kind: categorical, choices: [{a: 1}], flag: --o}\n"),
     "parameters.o: choice {'a': 1} must be a string, number or boolean"),
    ("unknown parameter key",
     doc("  x: {kind: float, low: 0.1, high: 1, flag: --x, lgo: true}\n"),
     "parameters.x: unknown key lgo; allowed:"),
    ("choices on a float",
     doc("  x: {kind: float, low: 0.1, high: 1, choices: [1], flag: --x}\n"),
     "parameters.x: unknown key choices"),
    ("bad parameter name", doc("  2x: {kind: float, low: 0.1, high: 1, flag: --x}\n"),
     "parameter name '2x' must be letters"),
    ("parameter not a mapping", doc("  x: 3\n"),
     "parameters.x: must be a mapping with a kind"),
    ("bad flag name", doc("  x: {kind: float, low: 0.1, high: 1, flag: lr}\n"),
     "parameters.x: flag 'lr' is not a flag name like --lr"),
    ("reserved flag", doc("  x: {kind: float, low: 0.1, high: 1, flag: --namespace}\n"),
     "parameters.x: pstune sets --namespace itself"),
    ("parameter reaches no worker", doc("  x: {kind: float, low: 0.1, high: 1}\n"),
     "parameters.x reaches no worker: give it flag: --x"),
    ("template names an undefined parameter",
     doc(flags='flags:\n  --layers: "784,{h1},10"\n'),
     "flags.--layers: '784,{h1},10' names {h1}, which is no parameter (parameters: x)"),
    ("template with a lone brace", doc(flags='flags:\n  --layers: "784,{x"\n'),
     "flags.--layers: '784,{x' has a lone '{'"),
    ("flag set twice", doc(flags='flags:\n  --x: 3\n'),
     "flags.--x: parameter x sets --x already"),
    ("reserved fixed flag", doc(flags='flags:\n  --max_seconds: 3\n'),
     "flags.--max_seconds: pstune sets --max_seconds itself"),
    ("flag value a list", doc(flags='flags:\n  --layers: [1, 2]\n'),
     "flags.--layers: the value must be a string, number or boolean"),
    ("flags not a mapping", doc(flags='flags: [--a]\n'),
     "flags must be a mapping of --flag: value"),
    ("metric missing", doc(metric=""), "metric is missing"),
    ("unknown metric", doc(metric="metric: f1\n"), "metric 'f1' is unknown"),
    ("unknown top-level key", doc(extra="sampler: tpe\n"), "unknown key sampler"),
    ("no parameters", "metric: loss\nparameters: {}\nbudget: {max_seconds: 1}\n",
     "parameters must be a non-empty mapping"),
    ("budget missing", doc(budget=""), "budget is missing or not a mapping"),
    ("max_seconds missing", doc(budget="budget: {patience: 2}\n"),
     "budget: max_seconds is missing"),
    ("max_seconds not positive", doc(budget="budget: {max_seconds: 0}\n"),
     "budget: max_seconds must be > 0"),
    ("negative patience", doc(budget="budget: {max_seconds: 5, patience: -1}\n"),
     "budget: patience must be >= 0"),
    ("eval interval not positive",
     doc(budget="budget: {max_seconds: 5, eval_interval_s: 0}\n"),
     "budget: eval_interval_s must be > 0"),
    ("unknown budget key", doc(budget="budget: {max_seconds: 5, epochs: 3}\n"),
     "budget: unknown key epochs"),
    ("duplicate key", doc(params=BASE_PARAM + BASE_PARAM), "key 'x' appears twice"),
    ("float step with log",
     doc("  x: {kind: float, low: 0.1, high: 8, log: true, step: 1, flag: --x}\n"),
     "parameters.x: step and log: true cannot go together"),
    ("huge integer bound",
     doc("  n: {kind: int, low: 1, high: 1" + "0" * 400 + ", flag: --n}\n"),
     "parameters.n: high 1" + "0" * 400 + " is too large"),
    ("huge integer bound of a float",
     doc("  x: {kind: float, low: 1, high: 1" + "0" * 400 + ", flag: --x}\n"),
     "parameters.x: high 1" + "0" * 400 + " is too large"),
    ("choices Optuna takes as equal",
     doc("  o: {kind: categorical, choices: [1, 1.0, true], flag: --o}\n"),
     "Optuna takes 1, 1.0 and true for the same value"),
    ("a list as a key", doc("  ? [a, b]\n  : {kind: float, low: 0.1, high: 1}\n"),
     "is used as a key: keys must be plain words"),
    ("a number written 1e-4",
     doc("  x: {kind: float, low: 1e-4, high: 1, flag: --x}\n"),
     "low must be a number, got '1e-4' (YAML reads 1e-4 as a string: write 1.0e-4)"),
    ("not YAML", "metric: [accuracy\n", "not valid YAML at line"),
    ("not a mapping", "- a\n- b\n", "the file must hold a mapping"),
]


@pytest.mark.parametrize("text,message", [(t, m) for _, t, m in REFUSALS],
                         ids=[i for i, _, _ in REFUSALS])
def test_refusals_name_file_entry_and_fault(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(SpaceError) as e:
        load_space(path)
    assert str(e.value).startswith(path + ":")
    assert message in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(SpaceError, match="cannot read the space file"):
        load_space(str(tmp_path / "nope.yaml"))


def test_bad_json(tmp_path):
    with pytest.raises(SpaceError, match=r"not valid JSON: .* at line 1"):
        load_space(write(tmp_path, '{"metric": }', "s.json"))
    with pytest.raises(SpaceError, match="key 'metric' appears twice"):
        load_space(write(tmp_path, '{"metric": "loss", "metric": "loss"}', "t.json"))


def test_cli_reports_space_error_without_traceback(tmp_path, capsys):
    from pstune import cli
    path = write(tmp_path, doc("  x: {kind: real, low: 0, high: 1, flag: --x}\n"))
    assert cli.main(["--space", path, "--shards", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pstune: " + path + ": parameters.x: unknown kind")
    assert "Traceback" not in err


@pytest.mark.parametrize("flags,message", [
    (["--folds", "1"], "--folds 1: give K >= 2"),
    (["--folds", "-2"], "--folds -2: give K >= 2"),
    (["--holdout", "1"], "--holdout 1: give K >= 2"),
    (["--startup_trials", "0"], "--startup_trials must be >= 1"),
    (["--population", "1"], "--population 1: give N >= 2"),
    (["--max_failures", "0"], "--max_failures must be >= 1"),
    (["--max_seconds", "-3"], "--max_seconds -3: give seconds > 0"),
    (["--retrain_seconds", "nan"], "--retrain_seconds nan: give seconds > 0"),
    (["--retrain_seconds", "inf"], "--retrain_seconds inf: give seconds > 0"),
])
def test_cli_refuses_bad_options(tmp_path, capsys, flags, message):
    from pstune import cli
    path = write(tmp_path, doc())
    assert cli.main(["--space", path, "--shards", "127.0.0.1:1", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pstune: " + message), err
    assert "Traceback" not in err


@pytest.mark.parametrize("flags,message", [
    (["--out", "FILE"], "cannot create --out"),
    (["--tls_ca", "MISSING"], "--tls_ca"),
])
def test_driver_errors_exit_1_without_traceback(tmp_path, capsys, flags, message):
    """Errors from the file system or the pskit binding (here before any
    shard is reached) end as one 'pstune: ...' line and exit status 1."""
    from pstune import cli
    path = write(tmp_path, doc())
    (tmp_path / "FILE").write_text("")
    flags = [str(tmp_path / f) if f in ("FILE", "MISSING") else f for f in flags]
    code = cli.main(["--space", path, "--shards", "127.0.0.1:1", "--worker_command",
                     "true", "--out", str(tmp_path / "out"), *flags])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.startswith("pstune: ") and message in err, err
    assert "Traceback" not in err


def test_sampler_seed_depends_on_the_study_size_and_tpe_lies_when_parallel():
    """A resumed study (trials already there) gets another seed than its first
    run, the same one for the same size; TPE with --parallel > 1 uses
    constant_liar, without an ExperimentalWarning reaching the user."""
    import warnings
    from pstune.runner import Driver, Options
    space = load_space(str(REPO / "tools" / "pstune" / "examples" / "mlp_space.yaml"))

    def draw(sampler, finished):
        d = Driver(Options(space=space, shards=["h:1"], sampler=sampler, seed=1,
                           parallel=2))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            s = d._sampler(finished)
        return s
    assert draw("random", 0)._rng.rand() == draw("random", 0)._rng.rand()
    assert draw("random", 0)._rng.rand() != draw("random", 3)._rng.rand()
    assert draw("random", 3)._rng.rand() == draw("random", 3)._rng.rand()
    assert draw("tpe", 0)._constant_liar


def test_trials_and_the_final_run_get_their_own_training_time():
    """The trials train for the budget's max_seconds; the final retraining
    for --retrain_seconds when given (its evaluator scoring once, at the end,
    without patience), else for the same max_seconds."""
    from pstune.runner import Driver, Options
    space = load_space(str(REPO / "tools" / "pstune" / "examples" / "mlp_space.yaml"))
    params = {"lr": 0.001, "hidden1": 256, "hidden2": 128, "batch_size": 64,
              "optimizer": "adam"}

    def argv(retrain_seconds, role, final):
        d = Driver(Options(space=space, shards=["h:1"], retrain_seconds=retrain_seconds))
        d.command = ["ps-worker"]
        return d._argv("ns", role, 0, 1, params, [], final)
    trial = argv(90, "evaluator", False)
    assert "--max_seconds=60" in trial and "--eval_interval_s=3" in trial
    assert "--patience=6" in trial
    final = argv(90, "evaluator", True)
    assert "--max_seconds=90" in final and "--eval_interval_s=90" in final
    assert not any(a.startswith("--patience") for a in final)
    assert "--max_seconds=90" in argv(90, "worker", True)
    assert "--max_seconds=60" in argv(90, "worker", False)
    default = argv(0, "evaluator", True)
    assert "--max_seconds=60" in default and "--eval_interval_s=60" in default
