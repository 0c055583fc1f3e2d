"""pskit: train any model on a pskit parameter-server cluster from Python.

The client is libpskit_client itself (the C++ extension pskit._core), so
Python workers speak exactly what ps-worker speaks:

    import numpy as np, pskit
    c = pskit.Client(["127.0.0.1:7000", "127.0.0.1:7001"])
    c.declare("job", pskit.namespace_config("adam", learning_rate=1e-3),
              [pskit.tensor_spec("w", (256, 784), init="glorot")])
    w = np.empty((256, 784), np.float32)
    c.pull("job", {"w": w})                  # fills w in place
    r = c.push_pull("job", {"w": grad}, {"w": w})

Arrays are read and written in place (NumPy float32, or a CPU tensor's
.numpy()); every call releases the GIL; a failed call raises pskit.Error
with the gRPC code. pskit.torch maps a torch.nn.Module onto this.
"""

from pskit._core import Client, Error, PushResult

__all__ = ["Client", "Error", "PushResult", "namespace_config", "tensor_spec"]

# Short names -> the proto's enum names (proto/pskit/v1/ps.proto).
_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
_INITS = {
    "zeros": "INIT_ZEROS", "constant": "INIT_CONSTANT", "uniform": "INIT_UNIFORM",
    "normal": "INIT_NORMAL", "glorot": "INIT_GLOROT_UNIFORM",
    "glorot_uniform": "INIT_GLOROT_UNIFORM", "he": "INIT_HE_NORMAL",
    "he_normal": "INIT_HE_NORMAL", "explicit": "INIT_EXPLICIT",
}
_COMPENSATIONS = ("none", "inverse", "dcasgd-c", "dcasgd-a", "gem")
_CONSISTENCIES = ("async", "ssp", "sync")


def _bad(what, value, choices):
    return Error(3, "INVALID_ARGUMENT",
                 f"{what} must be one of {', '.join(choices)}, got {value!r}")


def namespace_config(optimizer="adam", *, compensation="none", consistency="async",
                     staleness=None, **optimizer_settings):
    """A NamespaceConfig dict for Client.declare.

    optimizer: sgd, momentum, nesterov, adagrad, rmsprop, adam or adamw;
    optimizer_settings: learning_rate, momentum, beta1, beta2, epsilon,
    weight_decay, rho, initial_accumulator (unset ones take the shards'
    defaults); compensation: none, inverse, dcasgd-c, dcasgd-a or gem;
    consistency: async, ssp or sync; staleness: a StalenessSettings dict
    (README "Staleness rules").
    """
    if optimizer not in _OPTIMIZERS:
        raise _bad("optimizer", optimizer, _OPTIMIZERS)
    if compensation not in _COMPENSATIONS:
        raise _bad("compensation", compensation, _COMPENSATIONS)
    if consistency not in _CONSISTENCIES:
        raise _bad("consistency", consistency, _CONSISTENCIES)
    config = {
        "optimizer": {"kind": "OPTIMIZER_" + optimizer.upper(), **optimizer_settings},
        "compensation": "COMPENSATION_" + compensation.upper().replace("-", "_"),
        "consistency": "CONSISTENCY_" + consistency.upper(),
    }
    if staleness:
        config["staleness"] = dict(staleness)
    return config


def tensor_spec(name, shape, init="glorot", **init_settings):
    """A TensorSpec dict for Client.declare.

    init: zeros, constant (value), uniform (low, high), normal (mean,
    stddev), glorot, he, or explicit (values given to declare);
    init_settings may also hold seed.
    """
    if init not in _INITS:
        raise _bad("init", init, sorted(_INITS))
    return {"name": name, "shape": [int(d) for d in shape],
            "init": {"kind": _INITS[init], **init_settings}}
