// client/python/core.cc: pskit._core, the Python binding of libpskit_client
// (pybind11). It exposes Client as it is, no second protocol: the contract
// is client/python/pskit/_core.pyi.
//
// - Tensors go in and out as {name: buffer}: any object with a C-contiguous
//   float32 buffer (NumPy arrays; PyTorch CPU tensors through .numpy()),
//   read and written in place, no copy. The buffers are taken (and checked)
//   with the GIL held, then the GIL is released for the whole call.
// - Protobuf messages (NamespaceConfig, TensorSpec, Admin answers) cross as
//   dicts in protobuf's JSON form, so every field the proto has is there
//   without a hand-written mapping to keep in step.
// - A failed call raises pskit.Error(code, code_name, message): the gRPC
//   code (absl's numbering is gRPC's) and the status message.
#include <pybind11/eval.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "common/encoding.h"
#include "google/protobuf/util/json_util.h"

namespace py = pybind11;

namespace pskit::python {
namespace {

// A failed absl::Status on its way to Python (see the translator below).
struct StatusError {
  absl::Status status;
};

[[noreturn]] void Throw(absl::Status status) {
  throw StatusError{std::move(status)};
}

void Check(const absl::Status& status) {
  if (!status.ok()) Throw(status);
}

template <typename T>
T Check(absl::StatusOr<T> v) {
  if (!v.ok()) Throw(std::move(v).status());
  return *std::move(v);
}

// pskit.Error, made at import.
PyObject* g_error_type = nullptr;

constexpr const char kErrorClass[] = R"(
class Error(Exception):
    """A pskit call failed.

    code: the gRPC status code (14 = UNAVAILABLE, 3 = INVALID_ARGUMENT, ...);
    code_name: its name; message: what was wrong.
    """

    def __init__(self, code, code_name, message):
        super().__init__(code, code_name, message)
        self.code = code
        self.code_name = code_name
        self.message = message

    def __str__(self):
        return f"{self.code_name}: {self.message}"
)";

// One tensor's buffer, held (and its exporter kept alive) until destroyed;
// destroyed with the GIL held.
class HeldBuffer {
 public:
  HeldBuffer(const std::string& name, const py::handle& obj, bool writable)
      : name_(name) {
    const int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT |
                      (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj.ptr(), &view_, flags) != 0) {
      std::string why = "it has no buffer";
      if (PyErr_Occurred() != nullptr) {
        py::error_already_set e;
        why = e.what();
      }
      Throw(absl::InvalidArgumentError(absl::StrCat(
          "tensor '", name, "': need a C-contiguous float32 ",
          writable ? "writable " : "",
          "buffer (a NumPy float32 array, or a CPU tensor's .numpy()), "
          "not ", py::str(py::type::of(obj)).cast<std::string>(), ": ", why)));
    }
    const std::string format = view_.format == nullptr ? "B" : view_.format;
    const Py_ssize_t itemsize = view_.itemsize;
    if (itemsize != 4 || (format != "f" && format != "<f" && format != "=f")) {
      // The destructor does not run for a constructor that throws.
      PyBuffer_Release(&view_);
      Throw(absl::InvalidArgumentError(absl::StrCat(
          "tensor '", name, "': need float32 elements, got format '", format,
          "' of ", itemsize, " bytes (convert with .astype(numpy."
          "float32) or .float())")));
    }
    held_ = true;
  }
  ~HeldBuffer() {
    if (held_) PyBuffer_Release(&view_);
  }
  HeldBuffer(const HeldBuffer&) = delete;
  HeldBuffer& operator=(const HeldBuffer&) = delete;

  const std::string& name() const { return name_; }
  absl::Span<float> span() const {
    return {static_cast<float*>(view_.buf),
            static_cast<size_t>(view_.len) / sizeof(float)};
  }

 private:
  std::string name_;
  Py_buffer view_{};
  bool held_ = false;
};

// {name: buffer} -> held buffers, in the dict's order.
std::vector<std::unique_ptr<HeldBuffer>> HoldAll(const py::dict& tensors,
                                                 bool writable) {
  std::vector<std::unique_ptr<HeldBuffer>> out;
  out.reserve(tensors.size());
  for (const auto& [key, value] : tensors) {
    if (!py::isinstance<py::str>(key)) {
      Throw(absl::InvalidArgumentError(
          absl::StrCat("tensor names must be str, got ",
                       py::str(py::type::of(key)).cast<std::string>())));
    }
    out.push_back(std::make_unique<HeldBuffer>(key.cast<std::string>(), value,
                                               writable));
  }
  return out;
}

std::vector<TensorBuffer> Writable(
    const std::vector<std::unique_ptr<HeldBuffer>>& held) {
  std::vector<TensorBuffer> out;
  for (const auto& h : held) out.push_back({h->name(), h->span()});
  return out;
}

std::vector<ConstTensorBuffer> Readable(
    const std::vector<std::unique_ptr<HeldBuffer>>& held) {
  std::vector<ConstTensorBuffer> out;
  for (const auto& h : held) out.push_back({h->name(), h->span()});
  return out;
}

// A dict (protobuf's JSON form) -> message; INVALID_ARGUMENT naming `what`.
template <typename Message>
Message FromDict(const py::handle& dict, const char* what) {
  if (!py::isinstance<py::dict>(dict)) {
    Throw(absl::InvalidArgumentError(absl::StrCat(
        what, " must be a dict (protobuf's JSON form), not ",
        py::str(py::type::of(dict)).cast<std::string>())));
  }
  std::string json;
  try {
    json = py::module_::import("json").attr("dumps")(dict).cast<std::string>();
  } catch (py::error_already_set& e) {
    Throw(absl::InvalidArgumentError(
        absl::StrCat(what, " is not JSON-serialisable: ", e.what())));
  }
  Message m;
  // protobuf 3.21's own Status type, not absl's.
  const auto s = google::protobuf::util::JsonStringToMessage(json, &m);
  if (!s.ok()) {
    Throw(absl::InvalidArgumentError(absl::StrCat(
        what, " ", json, " does not fit ", m.GetTypeName(), ": ",
        s.ToString())));
  }
  return m;
}

template <typename Message>
py::object ToDict(const Message& m) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string json;
  const auto s = google::protobuf::util::MessageToJsonString(m, &json, options);
  if (!s.ok()) Throw(absl::InternalError(s.ToString()));
  return py::module_::import("json").attr("loads")(json);
}

template <typename Message>
py::list ToDicts(const std::vector<Message>& ms) {
  py::list out;
  for (const Message& m : ms) out.append(ToDict(m));
  return out;
}

std::unique_ptr<Client> MakeClient(
    std::vector<std::string> shards, uint32_t chunk_elems,
    size_t max_request_bytes, int max_in_flight_per_shard, double timeout_s,
    double initial_backoff_s, double max_backoff_s, const std::string& encoding,
    int channels_per_shard, int max_message_bytes, std::string tls_ca,
    std::string tls_cert, std::string tls_key, std::string token) {
  ClientOptions o;
  o.chunk_elems = chunk_elems;
  o.max_request_bytes = max_request_bytes;
  o.max_in_flight_per_shard = max_in_flight_per_shard;
  if (!(timeout_s > 0) || !(initial_backoff_s > 0) || !(max_backoff_s > 0)) {
    Throw(absl::InvalidArgumentError(absl::StrCat(
        "timeout_s (", timeout_s, "), initial_backoff_s (", initial_backoff_s,
        ") and max_backoff_s (", max_backoff_s, ") must be > 0")));
  }
  o.timeout = absl::Seconds(timeout_s);
  o.initial_backoff = absl::Seconds(initial_backoff_s);
  o.max_backoff = absl::Seconds(max_backoff_s);
  o.encoding = Check(ParseEncoding(encoding, "encoding"));
  o.channels_per_shard = channels_per_shard;
  o.max_message_bytes = max_message_bytes;
  o.security.tls_ca = std::move(tls_ca);
  o.security.tls_cert = std::move(tls_cert);
  o.security.tls_key = std::move(tls_key);
  o.security.token = std::move(token);
  return Check(Client::Connect(std::move(shards), o));
}

void Declare(Client& client, const std::string& ns, const py::handle& config,
             const py::list& tensors, const py::object& values) {
  const auto cfg = FromDict<v1::NamespaceConfig>(config, "config");
  std::vector<v1::TensorSpec> specs;
  for (const py::handle& t : tensors) {
    specs.push_back(FromDict<v1::TensorSpec>(t, "tensor spec"));
  }
  std::vector<std::unique_ptr<HeldBuffer>> held;
  if (!values.is_none()) {
    if (!py::isinstance<py::dict>(values)) {
      Throw(absl::InvalidArgumentError(
          "values must be a dict {tensor name: float32 buffer}"));
    }
    held = HoldAll(values.cast<py::dict>(), /*writable=*/false);
  }
  std::vector<TensorDecl> decls;
  for (const v1::TensorSpec& spec : specs) {
    TensorDecl d{spec, {}};
    for (const auto& h : held) {
      if (h->name() == spec.name()) d.values = h->span();
    }
    decls.push_back(d);
  }
  for (const auto& h : held) {
    bool known = false;
    for (const v1::TensorSpec& spec : specs) known |= spec.name() == h->name();
    if (!known) {
      Throw(absl::InvalidArgumentError(absl::StrCat(
          "values has tensor '", h->name(), "', which tensors does not name")));
    }
  }
  absl::Status s;
  {
    py::gil_scoped_release release;
    s = client.Declare(ns, cfg, decls);
  }
  Check(s);
}

PYBIND11_MODULE(_core, m) {
  m.doc() =
      "pskit._core: the C++ client of a pskit cluster (libpskit_client). "
      "Use it as `pskit`; see pskit/_core.pyi for the API.";

  py::dict scope;
  py::exec(kErrorClass, py::globals(), scope);
  py::object error = scope["Error"];
  error.attr("__module__") = "pskit";
  m.attr("Error") = error;
  g_error_type = error.ptr();
  Py_INCREF(g_error_type);  // lives as long as the process
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const StatusError& e) {
      const int code = static_cast<int>(e.status.code());
      py::tuple args = py::make_tuple(
          code, absl::StatusCodeToString(e.status.code()),
          std::string(e.status.message()));
      PyErr_SetObject(g_error_type, args.ptr());
    }
  });

  py::class_<PushResult>(m, "PushResult",
                         "What a push did: chunks updated and their staleness.")
      .def_readonly("chunks", &PushResult::chunks)
      .def_readonly("max_staleness", &PushResult::max_staleness)
      .def_readonly("mean_staleness", &PushResult::mean_staleness)
      .def("__repr__", [](const PushResult& r) {
        return absl::StrCat("PushResult(chunks=", r.chunks,
                            ", max_staleness=", r.max_staleness,
                            ", mean_staleness=", r.mean_staleness, ")");
      });

  const ClientOptions defaults;
  py::class_<Client>(m, "Client", R"(A connection to a pskit cluster's shards.

shards: "host:port" of every shard, in shard-index order. The keyword
options are ClientOptions' (client/client.h); TLS files are paths, token is
the bearer token itself. Every method may be called from several threads;
each releases the GIL while it talks to the shards.)")
      .def(py::init(&MakeClient), py::arg("shards"), py::kw_only(),
           py::arg("chunk_elems") = defaults.chunk_elems,
           py::arg("max_request_bytes") = defaults.max_request_bytes,
           py::arg("max_in_flight_per_shard") = defaults.max_in_flight_per_shard,
           py::arg("timeout_s") = absl::ToDoubleSeconds(defaults.timeout),
           py::arg("initial_backoff_s") =
               absl::ToDoubleSeconds(defaults.initial_backoff),
           py::arg("max_backoff_s") = absl::ToDoubleSeconds(defaults.max_backoff),
           py::arg("encoding") = EncodingName(defaults.encoding),
           py::arg("channels_per_shard") = defaults.channels_per_shard,
           py::arg("max_message_bytes") = defaults.max_message_bytes,
           py::arg("tls_ca") = "", py::arg("tls_cert") = "",
           py::arg("tls_key") = "", py::arg("token") = "")
      .def_property_readonly("shards", &Client::shards)
      .def_property_readonly("worker_id",
                             [](Client& c) { return c.worker_id(); })
      .def("declare", &Declare, py::arg("ns"), py::arg("config"),
           py::arg("tensors"), py::arg("values") = py::none(),
           "Declares tensors (TensorSpec dicts) in namespace ns with config "
           "(a NamespaceConfig dict) on every shard; idempotent. values: "
           "{name: float32 buffer} for INIT_EXPLICIT tensors.")
      .def(
          "pull",
          [](Client& c, const std::string& ns, const py::dict& weights) {
            auto held = HoldAll(weights, /*writable=*/true);
            const auto bufs = Writable(held);
            absl::Status s;
            {
              py::gil_scoped_release release;
              s = c.Pull(ns, bufs);
            }
            Check(s);
          },
          py::arg("ns"), py::arg("weights"),
          "Fills each buffer of {name: buffer} with the tensor's values.")
      .def(
          "push",
          [](Client& c, const std::string& ns, const py::dict& grads) {
            auto held = HoldAll(grads, /*writable=*/false);
            const auto bufs = Readable(held);
            absl::StatusOr<PushResult> r;
            {
              py::gil_scoped_release release;
              r = c.Push(ns, bufs);
            }
            return Check(std::move(r));
          },
          py::arg("ns"), py::arg("grads"),
          "Pushes one gradient per tensor of {name: buffer}.")
      .def(
          "push_pull",
          [](Client& c, const std::string& ns, const py::dict& grads,
             const py::dict& weights) {
            auto held_g = HoldAll(grads, /*writable=*/false);
            auto held_w = HoldAll(weights, /*writable=*/true);
            const auto g = Readable(held_g);
            const auto w = Writable(held_w);
            absl::StatusOr<PushResult> r;
            {
              py::gil_scoped_release release;
              r = c.PushPull(ns, g, w);
            }
            return Check(std::move(r));
          },
          py::arg("ns"), py::arg("grads"), py::arg("weights"),
          "Pushes grads and fills weights (same names, same order) with the "
          "values right after the update, in one round trip.")
      .def(
          "exchange",
          [](Client& c, const std::string& ns, float alpha,
             const py::dict& params) {
            auto held = HoldAll(params, /*writable=*/true);
            const auto bufs = Writable(held);
            absl::Status s;
            {
              py::gil_scoped_release release;
              s = c.Exchange(ns, alpha, bufs);
            }
            Check(s);
          },
          py::arg("ns"), py::arg("alpha"), py::arg("params"),
          "EASGD: each buffer moves by -alpha * (x - centre); the centre "
          "moves towards it.")
      .def(
          "register_worker",
          [](Client& c, std::string name, const std::string& ns) {
            absl::StatusOr<uint64_t> r;
            {
              py::gil_scoped_release release;
              r = c.RegisterWorker(std::move(name), ns);
            }
            return Check(std::move(r));
          },
          py::arg("name"), py::arg("ns") = "",
          "Registers this client as a worker of namespace ns (\"\" = "
          "\"default\") on every shard; returns its id. The shards refuse "
          "to drop ns while the lease is live.")
      .def(
          "heartbeat",
          [](Client& c, const std::string& ns) {
            absl::StatusOr<bool> r;
            {
              py::gil_scoped_release release;
              r = c.Heartbeat(ns);
            }
            return Check(std::move(r));
          },
          py::arg("ns") = "",
          "Renews the lease; True once namespace ns's job is over.")
      .def(
          "leave",
          [](Client& c) {
            absl::Status s;
            {
              py::gil_scoped_release release;
              s = c.Leave();
            }
            Check(s);
          },
          "Ends the lease on every shard.")
      .def(
          "report_evaluation",
          [](Client& c, const std::string& ns, double loss, double accuracy,
             uint64_t samples, bool done, const std::string& reason) {
            v1::Evaluation e;
            e.set_time_unix_ms(absl::ToUnixMillis(absl::Now()));
            e.set_loss(loss);
            e.set_accuracy(accuracy);
            e.set_samples(samples);
            e.set_done(done);
            e.set_reason(reason);
            absl::StatusOr<bool> r;
            {
              py::gil_scoped_release release;
              r = c.ReportEvaluation(ns, e);
            }
            return Check(std::move(r));
          },
          py::arg("ns"), py::kw_only(), py::arg("loss"), py::arg("accuracy"),
          py::arg("samples") = 0, py::arg("done") = false,
          py::arg("reason") = "",
          "Reports an evaluation to every shard; True when the job is over.")
      .def(
          "status",
          [](Client& c, bool evaluations) {
            absl::StatusOr<std::vector<v1::StatusResponse>> r;
            {
              py::gil_scoped_release release;
              r = c.Status(evaluations);
            }
            return ToDicts(Check(std::move(r)));
          },
          py::kw_only(), py::arg("evaluations") = false,
          "Every shard's Admin Status, in shard order (dicts). With "
          "evaluations=True each namespace dict also has \"evaluations\": "
          "every evaluation the shard holds for it, oldest first (the last "
          "10,000).")
      .def(
          "drop_namespace",
          [](Client& c, const std::string& ns) {
            absl::StatusOr<std::vector<v1::DropNamespaceResponse>> r;
            {
              py::gil_scoped_release release;
              r = c.DropNamespace(ns);
            }
            return ToDicts(Check(std::move(r)));
          },
          py::arg("namespace"),
          "Deletes namespace `namespace` on every shard (shard 0 first; a "
          "refusal there changes nothing anywhere). Returns one dict per "
          "shard: {\"chunks_freed\": int, \"elements_freed\": str}. "
          "Raises pskit.Error: FAILED_PRECONDITION while workers of the "
          "namespace hold leases, NOT_FOUND when shard 0 has no such "
          "namespace, INVALID_ARGUMENT for an empty or malformed name.")
      .def(
          "checkpoint",
          [](Client& c, std::string id) {
            absl::StatusOr<std::vector<v1::CheckpointInfo>> r;
            {
              py::gil_scoped_release release;
              r = c.Checkpoint(std::move(id));
            }
            return ToDicts(Check(std::move(r)));
          },
          py::arg("id") = "",
          "Takes checkpoint id on every shard (\"\": one id chosen for "
          "all); returns each shard's record.")
      .def(
          "restore",
          [](Client& c, const std::string& id) {
            absl::StatusOr<std::vector<v1::CheckpointInfo>> r;
            {
              py::gil_scoped_release release;
              r = c.Restore(id);
            }
            return ToDicts(Check(std::move(r)));
          },
          py::arg("id"), "Restores checkpoint id on every shard.");
}

}  // namespace
}  // namespace pskit::python
