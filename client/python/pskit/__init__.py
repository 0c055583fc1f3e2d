"""pskit: train any model on a pskit parameter-server cluster from Python.

The client is libpskit_client itself (the C++ extension pskit._core), so
Python workers speak exactly what ps-worker speaks:

    import numpy as np, pskit
    c = pskit.Client(["127.0.0.1:7000", "127.0.0.1:7001"])
    c.declare("job", pskit.namespace_config("adam", lr=1e-3),
              [pskit.tensor_spec("w", (256, 784), init="glorot")])
    w = np.empty((256, 784), np.float32)
    c.pull("job", {"w": w})                  # fills w in place
    r = c.push_pull("job", {"w": grad}, {"w": w})

Arrays are read and written in place (NumPy float32, or a CPU tensor's
.numpy()); every call releases the GIL; a failed call raises pskit.Error
with the gRPC code. pskit.torch maps a torch.nn.Module onto this.
"""

from pskit._config import namespace_config
from pskit._core import Client, Error, PushResult

__all__ = ["Client", "Error", "PushResult", "namespace_config", "tensor_spec"]

_INITS = {
    "zeros": "INIT_ZEROS", "constant": "INIT_CONSTANT", "uniform": "INIT_UNIFORM",
    "normal": "INIT_NORMAL", "glorot": "INIT_GLOROT_UNIFORM",
    "glorot_uniform": "INIT_GLOROT_UNIFORM", "he": "INIT_HE_NORMAL",
    "he_normal": "INIT_HE_NORMAL", "explicit": "INIT_EXPLICIT",
}


def tensor_spec(name, shape, init="glorot", **init_settings):
    """A TensorSpec dict for Client.declare.

    init: zeros, constant (value), uniform (low, high), normal (mean,
    stddev), glorot, he, or explicit (values given to declare);
    init_settings may also hold seed. glorot and he take the fans from a
    Keras-ordered shape [..., fan_in, fan_out]; for PyTorch's [out, in, ...]
    weights pskit.torch computes the scale itself.
    """
    if init not in _INITS:
        raise ValueError(f"init must be one of {', '.join(sorted(_INITS))}, got {init!r}")
    return {"name": name, "shape": [int(d) for d in shape],
            "init": {"kind": _INITS[init], **init_settings}}
