// tools/psctl/cmd_dump.cc
//
// The dump command: one tensor pulled through Client into an .npy file.
//
// Thread safety: run by psctl's one thread.
#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "tools/psctl/commands.h"
#include "tools/psctl/context.h"
#include "tools/psctl/flags.h"
#include "tools/psctl/npy.h"
#include "tools/psctl/output.h"

namespace pskit::psctl {

// ---------------------------------------------------------------------------
// dump NAMESPACE TENSOR --out FILE.npy

Outcome CmdDump(Context* ctx, const std::vector<std::string>& args) {
  if (args.size() != 2) return Usage("dump takes a NAMESPACE and a TENSOR");
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) return Usage("dump needs --out FILE.npy");
  if (Outcome o = QueryStatus(ctx); o.code != kExitOk) return o;
  const std::string& ns = args[0];
  const std::string& name = args[1];
  const v1::TensorStatus* found = nullptr;
  uint64_t max_version = 0;
  for (const auto& s : ctx->status) {
    for (const v1::NamespaceStatus& n : s->namespaces()) {
      if (n.name() != ns) continue;
      for (const v1::TensorStatus& t : n.tensors()) {
        if (t.name() != name) continue;
        found = &t;
        max_version = std::max(max_version, t.max_version());
      }
    }
  }
  if (found == nullptr) {
    return Failed(absl::StrCat("NOT_FOUND: tensor '", name, "' of namespace '",
                               ns,
                               "' is not declared on any shard; `psctl "
                               "tensors` lists them"));
  }
  uint64_t elements = 1;
  for (int64_t d : found->shape()) elements *= static_cast<uint64_t>(d);

  ClientOptions options;
  options.chunk_elems = ctx->status[0]->chunk_elems();
  options.timeout = ctx->timeout;
  options.security = ctx->security;
  std::vector<std::string> addresses;
  for (const Shard& s : ctx->shards) addresses.push_back(s.address);
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Connect(addresses, options);
  if (!client.ok()) return Failed(client.status().ToString());
  std::vector<float> values(elements);
  if (absl::Status s = (*client)->Pull(ns, {{name, absl::MakeSpan(values)}});
      !s.ok()) {
    return Failed(s.ToString());
  }
  const std::string header = NpyHeader(found->shape());
  if (absl::Status s = WriteAtomically(out, header, values); !s.ok()) {
    return Failed(s.ToString());
  }
  const uint64_t bytes = header.size() + elements * sizeof(float);
  ctx->out.Set("namespace", ns)
      .Set("tensor", name)
      .Set("shape", JsonArray(found->shape()))
      .Set("elements", elements)
      .Set("max_version", max_version)
      .Set("out", out)
      .Set("bytes", bytes);
  ctx->text =
      absl::StrCat("wrote ", ns, "/", name, " ", ShapeText(found->shape()),
                   " (", elements, " float32, max version ", max_version,
                   ") to ", out, ", ", HumanBytes(bytes), "\n");
  return Ok();
}

}  // namespace pskit::psctl
