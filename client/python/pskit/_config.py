"""pskit.namespace_config: a NamespaceConfig dict (proto/pskit/v1/ps.proto)
for Client.declare, in ps-worker's flag vocabulary and with its defaults, so
Python and C++ workers can share a namespace."""

import math
from typing import Any, Dict, Optional

# --------------------------------------------------------------------------
# The namespace config.

_OPTIMIZERS = {
    "sgd": "OPTIMIZER_SGD", "momentum": "OPTIMIZER_MOMENTUM",
    "nesterov": "OPTIMIZER_NESTEROV", "adagrad": "OPTIMIZER_ADAGRAD",
    "rmsprop": "OPTIMIZER_RMSPROP", "adam": "OPTIMIZER_ADAM",
    "adamw": "OPTIMIZER_ADAMW",
}
# The settings each optimizer reads (common/optimizer_config.cc FieldsUsedBy):
# the shards refuse a config that sets another.
_OPTIMIZER_FIELDS = {
    "sgd": ("learning_rate", "weight_decay"),
    "momentum": ("learning_rate", "momentum", "weight_decay"),
    "nesterov": ("learning_rate", "momentum", "weight_decay"),
    "adagrad": ("learning_rate", "epsilon", "initial_accumulator", "weight_decay"),
    "rmsprop": ("learning_rate", "rho", "epsilon", "weight_decay"),
    "adam": ("learning_rate", "beta1", "beta2", "epsilon", "weight_decay"),
    "adamw": ("learning_rate", "beta1", "beta2", "epsilon", "weight_decay"),
}
_COMPENSATIONS = {
    "none": "COMPENSATION_NONE", "inverse": "COMPENSATION_INVERSE",
    "dcasgd-c": "COMPENSATION_DCASGD_C", "dcasgd-a": "COMPENSATION_DCASGD_A",
    "gem": "COMPENSATION_GEM",
}
# Staleness settings each compensation / consistency reads.
_STALENESS_FIELDS = {
    "dcasgd-c": ("dc_lambda",), "dcasgd-a": ("dc_lambda", "dc_momentum", "dc_epsilon"),
    "gem": ("gem_momentum", "gem_kappa", "gem_epsilon"),
    "ssp": ("ssp_bound",), "sync": ("backup_workers",),
}
_MAX_SSP_BOUND = 1000000  # common/staleness_config.h kMaxSspBound


def namespace_config(optimizer: str = "adam", lr: float = 0.001, *,
                     momentum: Optional[float] = None,
                     beta1: Optional[float] = None, beta2: Optional[float] = None,
                     epsilon: Optional[float] = None,
                     weight_decay: Optional[float] = None,
                     rho: Optional[float] = None,
                     initial_accumulator: Optional[float] = None,
                     compensation: str = "none", consistency: str = "async",
                     dc_lambda: Optional[float] = None,
                     dc_momentum: Optional[float] = None,
                     dc_epsilon: Optional[float] = None,
                     gem_momentum: Optional[float] = None,
                     gem_kappa: Optional[float] = None,
                     gem_epsilon: Optional[float] = None) -> Dict[str, Any]:
    """The NamespaceConfig (proto/pskit/v1/ps.proto) these settings make, as the
    dict Client.declare takes, in ps-worker's flag vocabulary: optimizer sgd,
    momentum, nesterov, adagrad, rmsprop, adam or adamw; compensation none,
    inverse, dcasgd-c, dcasgd-a or gem; consistency async, ssp:S, sync or
    sync:B. A setting left None takes the shards' default. The defaults are
    ps-worker's (adam, lr 0.001, async), so Python and C++ workers may share
    a namespace. ValueError for a name that is not known or a setting the
    chosen optimizer, compensation or consistency does not read."""
    opt = optimizer.lower()
    if opt not in _OPTIMIZERS:
        raise ValueError(f"optimizer '{optimizer}' is not known; use "
                         f"{', '.join(_OPTIMIZERS)}")
    settings = {"learning_rate": lr, "momentum": momentum, "beta1": beta1,
                "beta2": beta2, "epsilon": epsilon, "weight_decay": weight_decay,
                "rho": rho, "initial_accumulator": initial_accumulator}
    optimizer_dict: Dict[str, Any] = {"kind": _OPTIMIZERS[opt]}
    for field, value in settings.items():
        if value is None:
            continue
        if field not in _OPTIMIZER_FIELDS[opt]:
            raise ValueError(f"optimizer {opt} does not read '{field}'; it takes "
                             f"{', '.join(_OPTIMIZER_FIELDS[opt])}")
        if not math.isfinite(value) or value < 0 or (field == "learning_rate"
                                                      and value == 0):
            raise ValueError(f"{field} {value} must be a finite number "
                             f"{'> 0' if field == 'learning_rate' else '>= 0'}")
        optimizer_dict[field] = float(value)

    comp = compensation.lower()
    if comp not in _COMPENSATIONS:
        raise ValueError(f"compensation '{compensation}' is not known; use "
                         f"{', '.join(_COMPENSATIONS)}")
    name, sep, arg = consistency.lower().partition(":")
    staleness: Dict[str, Any] = {}
    if sep:
        if not arg.isdigit() or int(arg) > _MAX_SSP_BOUND:
            raise ValueError(f"consistency '{consistency}': '{arg}' is not an "
                             f"integer in [0, {_MAX_SSP_BOUND}]; write ssp:S (S "
                             "the bound) or sync:B (B backup workers)")
    if name == "async" and not sep:
        kind = "CONSISTENCY_ASYNC"
    elif name == "ssp":
        kind = "CONSISTENCY_SSP"
        if sep:
            staleness["ssp_bound"] = int(arg)
    elif name == "sync":
        kind = "CONSISTENCY_SYNC"
        if sep:
            staleness["backup_workers"] = int(arg)
    else:
        raise ValueError(f"consistency '{consistency}' is not known; use async, "
                         "ssp:S (S >= 0 the staleness bound), sync or sync:B (B "
                         "backup workers)")
    readable = _STALENESS_FIELDS.get(comp, ()) + _STALENESS_FIELDS.get(name, ())
    for field, value in (("dc_lambda", dc_lambda), ("dc_momentum", dc_momentum),
                         ("dc_epsilon", dc_epsilon),
                         ("gem_momentum", gem_momentum),
                         ("gem_kappa", gem_kappa), ("gem_epsilon", gem_epsilon)):
        if value is None:
            continue
        if field not in readable:
            raise ValueError(f"'{field}' is not read by compensation {comp} with "
                             f"consistency {name}; leave it unset")
        if not math.isfinite(value):
            raise ValueError(f"{field} {value} must be a finite number")
        staleness[field] = float(value)

    config: Dict[str, Any] = {"optimizer": optimizer_dict,
                              "compensation": _COMPENSATIONS[comp],
                              "consistency": kind}
    if staleness:
        config["staleness"] = staleness
    return config


