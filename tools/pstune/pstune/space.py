"""pstune.space: the search-space file (YAML or JSON), read and checked.

The file says what to tune, what to score and how each trial runs:

    metric: accuracy            # accuracy (maximised) or loss (minimised)
    parameters:
      lr:        {kind: float, low: 1.0e-4, high: 0.1, log: true, flag: --lr}
      hidden1:   {kind: int, low: 64, high: 1024, log: true}
      batch:     {kind: int, low: 16, high: 256, step: 16, flag: --batch_size}
      optimizer: {kind: categorical, choices: [adam, rmsprop], flag: --optimizer}
    flags:                      # fixed worker flags; {name} is a parameter's value
      --layers: "784,{hidden1},10"
      --data_path: /usr/share/datasets/fashion-mnist
    budget:
      max_seconds: 60           # each trial's training time (required)
      patience: 5               # evaluations without a new best end a trial (0: never)
      eval_interval_s: 2        # seconds between the evaluator's scores

Every parameter reaches the workers through its `flag` (--flag=value), through
a `flags` template that names it, or both; a parameter that reaches none is an
error. Booleans: true gives the bare flag, false leaves it out. pstune sets the
flags that place a process (--shards, --namespace, --role, --rank, --world,
--folds, --fold) and the budget's (--max_seconds, --patience,
--eval_interval_s) itself: the file may not.

load_space(path) -> Space, or SpaceError naming the file, the entry and what is
wrong with it. Space.suggest(trial) draws a configuration from an Optuna trial;
Space.worker_flags(params) turns one into worker flags.
"""

import dataclasses
import json
import math
import os
import re
from typing import Any, Dict, List, Mapping, Sequence

import yaml


class SpaceError(ValueError):
    """The space file is wrong; the message names the file, the entry and how
    to fix it."""


KINDS = ("float", "int", "categorical")
METRICS = {"accuracy": "maximize", "loss": "minimize"}
PARAMETER_KEYS = {
    "float": {"kind", "low", "high", "log", "step", "flag"},
    "int": {"kind", "low", "high", "log", "step", "flag"},
    "categorical": {"kind", "choices", "flag"},
}
TOP_KEYS = {"metric", "parameters", "flags", "budget"}
BUDGET_KEYS = {"max_seconds", "patience", "eval_interval_s"}
# Flags pstune gives every process itself (placement, folds, the budget).
RESERVED_FLAGS = ("--shards", "--namespace", "--role", "--rank", "--world",
                  "--folds", "--fold", "--max_seconds", "--patience",
                  "--eval_interval_s")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_FLAG = re.compile(r"--[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_FIELD = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


@dataclasses.dataclass(frozen=True)
class Parameter:
    name: str
    kind: str                      # float, int or categorical
    low: Any = None
    high: Any = None
    log: bool = False
    step: Any = None
    choices: tuple = ()
    flag: str = ""                 # "": reaches the workers through templates only


@dataclasses.dataclass(frozen=True)
class Budget:
    max_seconds: float
    patience: int = 0
    eval_interval_s: float = 2.0


@dataclasses.dataclass(frozen=True)
class Space:
    path: str
    metric: str                    # accuracy or loss
    parameters: tuple              # of Parameter, in file order
    flags: tuple                   # of (flag, template or value)
    budget: Budget

    @property
    def direction(self) -> str:
        """Optuna's direction for the metric: maximize or minimize."""
        return METRICS[self.metric]

    def suggest(self, trial) -> Dict[str, Any]:
        """Draws every parameter from an Optuna trial (suggest_*)."""
        out = {}
        for p in self.parameters:
            if p.kind == "float":
                out[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log,
                                                  step=p.step)
            elif p.kind == "int":
                out[p.name] = trial.suggest_int(p.name, p.low, p.high, log=p.log,
                                                step=p.step or 1)
            else:
                out[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        return out

    def worker_flags(self, params: Mapping[str, Any]) -> List[str]:
        """The worker flags of one configuration: the fixed flags (templates
        filled in) in file order, then each parameter's own flag."""
        out = []
        for flag, value in self.flags:
            if isinstance(value, str):
                value = _fill(value, params)
            out += _flag_words(flag, value)
        for p in self.parameters:
            if p.flag:
                out += _flag_words(p.flag, params[p.name])
        return out


def _fill(template: str, params: Mapping[str, Any]) -> str:
    def one(m):
        if m.group(0) == "{{":
            return "{"
        if m.group(0) == "}}":
            return "}"
        return _text(params[m.group(1)])
    return _FIELD.sub(one, template)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)          # round-trips; e.g. 0.001, 1e-05
    return str(value)


def _flag_words(flag: str, value: Any) -> List[str]:
    if value is True:
        return [flag]
    if value is False or value is None:
        return []
    return [f"{flag}={_text(value)}"]


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain
    YAML keeps the last silently)."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, (str, int, float, bool, type(None))):
            raise yaml.constructor.ConstructorError(
                None, None, f"a {type(key).__name__} is used as a key: keys must be "
                "plain words", key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                 _construct_mapping)


def _read(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise SpaceError(f"{path}: cannot read the space file: {e.strerror}") from None
    except UnicodeDecodeError:
        raise SpaceError(f"{path}: not UTF-8 text; a space file is YAML or JSON") from None
    if path.endswith(".json"):
        def unique(pairs):
            d = {}
            for k, v in pairs:
                if k in d:
                    raise SpaceError(f"{path}: key {k!r} appears twice")
                d[k] = v
            return d
        try:
            return json.loads(text, object_pairs_hook=unique)
        except json.JSONDecodeError as e:
            raise SpaceError(f"{path}: not valid JSON: {e.msg} at line {e.lineno} "
                             f"column {e.colno}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        what = getattr(e, "problem", None) or str(e)
        raise SpaceError(f"{path}: not valid YAML{where}: {what}") from None


_INT_LIMIT = 2**53   # beyond it Optuna's float arithmetic loses whole numbers


def _number(where: str, key: str, value: Any, integer: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        hint = ""
        if isinstance(value, str):
            try:
                float(value)
                mantissa, _, exponent = value.lower().partition("e")
                hint = (f" (YAML reads {value} as a string: write "
                        f"{mantissa if '.' in mantissa else mantissa + '.0'}"
                        f"e{exponent or '0'})")
            except ValueError:
                pass
        raise SpaceError(f"{where}: {key} must be a number, got {value!r}{hint}")
    if isinstance(value, int) and abs(value) > _INT_LIMIT:
        raise SpaceError(f"{where}: {key} {value} is too large; keep it within "
                         f"+-{_INT_LIMIT}")
    if not math.isfinite(value):
        raise SpaceError(f"{where}: {key} must be finite, got {value!r}")
    if integer and not (isinstance(value, int) or float(value).is_integer()):
        raise SpaceError(f"{where}: {key} must be a whole number, got {value!r}")
    if integer and abs(value) > _INT_LIMIT:
        raise SpaceError(f"{where}: {key} {value!r} is too large; keep it within "
                         f"+-{_INT_LIMIT}")
    return int(value) if integer else float(value)


def _unknown_keys(where: str, got: Mapping, allowed: set, hint: str = "") -> None:
    unknown = sorted(str(k) for k in got if k not in allowed)
    if unknown:
        raise SpaceError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
                         f"{hint}")


def _check_flag(where: str, flag: Any) -> str:
    if not isinstance(flag, str) or not _FLAG.match(flag):
        raise SpaceError(f"{where}: flag {flag!r} is not a flag name like --lr "
                         "(two dashes, then letters, digits, _ . -)")
    if flag in RESERVED_FLAGS:
        raise SpaceError(f"{where}: pstune sets {flag} itself "
                         f"(it sets {', '.join(RESERVED_FLAGS)}); the trial budget "
                         "goes under budget:")
    return flag


def _parameter(path: str, name: Any, spec: Any) -> Parameter:
    where = f"{path}: parameters.{name}"
    if not isinstance(name, str) or not _NAME.match(name):
        raise SpaceError(f"{path}: parameter name {name!r} must be letters, digits "
                         "and _ (not starting with a digit)")
    if not isinstance(spec, dict):
        raise SpaceError(f"{where}: must be a mapping with a kind (float, int or "
                         f"categorical), got {spec!r}")
    kind = spec.get("kind")
    if kind is None:
        raise SpaceError(f"{where}: kind is missing; give kind: float, int or categorical")
    if kind not in KINDS:
        raise SpaceError(f"{where}: unknown kind {kind!r}; use float, int or categorical")
    _unknown_keys(where, spec, PARAMETER_KEYS[kind])
    flag = _check_flag(where, spec["flag"]) if "flag" in spec else ""
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list):
            raise SpaceError(f"{where}: choices must be a list, e.g. [adam, sgd], "
                             f"got {choices!r}")
        if not choices:
            raise SpaceError(f"{where}: choices is empty; give at least one")
        for c in choices:
            if c is not None and not isinstance(c, (bool, int, float, str)):
                raise SpaceError(f"{where}: choice {c!r} must be a string, number or "
                                 "boolean")
        if len(set(choices)) != len(choices):
            raise SpaceError(f"{where}: choices {choices!r} name a value twice (Optuna "
                             "takes 1, 1.0 and true for the same value: write them "
                             "apart, e.g. as strings)")
        return Parameter(name, kind, choices=tuple(choices), flag=flag)
    integer = kind == "int"
    for key in ("low", "high"):
        if key not in spec:
            raise SpaceError(f"{where}: {key} is missing (a {kind} needs low and high)")
    low = _number(where, "low", spec["low"], integer)
    high = _number(where, "high", spec["high"], integer)
    if not low < high:
        raise SpaceError(f"{where}: low ({spec['low']}) must be below high ({spec['high']})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise SpaceError(f"{where}: log must be true or false, got {log!r}")
    if log and low <= 0:
        raise SpaceError(f"{where}: log: true needs low > 0, got low {spec['low']}")
    step = None
    if "step" in spec:
        step = _number(where, "step", spec["step"], integer)
        if step <= 0:
            raise SpaceError(f"{where}: step must be > 0, got {spec['step']}")
        if log and (step != 1 or not integer):
            raise SpaceError(f"{where}: step and log: true cannot go together "
                             "(Optuna draws a log scale without steps)")
        if step > high - low:
            raise SpaceError(f"{where}: step ({spec['step']}) is larger than "
                             f"high - low ({high - low})")
        if integer and step == 1:
            step = None
    return Parameter(name, kind, low=low, high=high, log=log, step=step, flag=flag)


def _template_names(where: str, template: str, names: Sequence[str]) -> List[str]:
    used = []
    for m in _FIELD.finditer(template):
        if m.group(0) in ("{{", "}}"):
            continue
        if m.group(0) in ("{", "}"):
            raise SpaceError(f"{where}: {template!r} has a lone {m.group(0)!r}; write "
                             "{name} for a parameter, {{ or }} for a brace")
        name = m.group(1)
        if name not in names:
            known = ", ".join(names) if names else "none"
            raise SpaceError(f"{where}: {template!r} names {{{name}}}, which is no "
                             f"parameter (parameters: {known})")
        used.append(name)
    return used


def _check_keys(where: str, node: Any) -> None:
    """Every mapping key in the file is a string, number or boolean (YAML
    allows lists and mappings as keys)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k is not None and not isinstance(k, (str, int, float, bool)):
                raise SpaceError(f"{where}: the key {k!r} is not a name: keys must "
                                 "be plain words")
            _check_keys(f"{where}: {k}", v)
    elif isinstance(node, list):
        for v in node:
            _check_keys(where, v)


def load_space(path: str) -> Space:
    """Reads and checks the space file at `path`; SpaceError when it is wrong."""
    path = os.fspath(path)
    doc = _read(path)
    if not isinstance(doc, dict):
        raise SpaceError(f"{path}: the file must hold a mapping with metric, "
                         "parameters, flags and budget")
    _check_keys(path, doc)
    _unknown_keys(path, doc, TOP_KEYS)

    metric = doc.get("metric")
    if metric is None:
        raise SpaceError(f"{path}: metric is missing; give metric: accuracy "
                         "(maximised) or metric: loss (minimised)")
    if metric not in METRICS:
        raise SpaceError(f"{path}: metric {metric!r} is unknown; use accuracy "
                         "(maximised) or loss (minimised)")

    raw = doc.get("parameters")
    if not isinstance(raw, dict) or not raw:
        raise SpaceError(f"{path}: parameters must be a non-empty mapping of "
                         "name: {kind: ..., ...}")
    parameters = tuple(_parameter(path, name, spec) for name, spec in raw.items())
    names = [p.name for p in parameters]

    raw_flags = doc.get("flags", {}) or {}
    if not isinstance(raw_flags, dict):
        raise SpaceError(f"{path}: flags must be a mapping of --flag: value")
    flags, templated = [], set()
    own_flags = {p.flag: p.name for p in parameters if p.flag}
    for flag, value in raw_flags.items():
        where = f"{path}: flags.{flag}"
        _check_flag(where, flag)
        if flag in own_flags:
            raise SpaceError(f"{where}: parameter {own_flags[flag]} sets {flag} "
                             "already; give it one way only")
        if isinstance(value, (dict, list)) or value is None:
            raise SpaceError(f"{where}: the value must be a string, number or "
                             f"boolean, got {value!r}")
        if isinstance(value, str):
            templated.update(_template_names(where, value, names))
        flags.append((flag, value))
    for p in parameters:
        if not p.flag and p.name not in templated:
            raise SpaceError(f"{path}: parameters.{p.name} reaches no worker: give it "
                             f"flag: --{p.name}, or use {{{p.name}}} in a flags value")

    raw_budget = doc.get("budget")
    where = f"{path}: budget"
    if not isinstance(raw_budget, dict):
        raise SpaceError(f"{where} is missing or not a mapping; give at least "
                         "budget: {max_seconds: 60}")
    _unknown_keys(where, raw_budget, BUDGET_KEYS)
    if "max_seconds" not in raw_budget:
        raise SpaceError(f"{where}: max_seconds is missing (each trial's training "
                         "time in seconds)")
    max_seconds = _number(where, "max_seconds", raw_budget["max_seconds"])
    if max_seconds <= 0:
        raise SpaceError(f"{where}: max_seconds must be > 0, got {max_seconds}")
    patience = _number(where, "patience", raw_budget.get("patience", 0), integer=True)
    if patience < 0:
        raise SpaceError(f"{where}: patience must be >= 0 (0: never), got {patience}")
    interval = _number(where, "eval_interval_s", raw_budget.get("eval_interval_s", 2.0))
    if interval <= 0:
        raise SpaceError(f"{where}: eval_interval_s must be > 0, got {interval}")
    return Space(path=path, metric=metric, parameters=parameters, flags=tuple(flags),
                 budget=Budget(max_seconds, patience, interval))
