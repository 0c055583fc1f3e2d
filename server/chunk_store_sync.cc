// server/chunk_store_sync.cc
//
// ChunkStore's small read-only helpers for the consistency models
// (server/consistency.h): a namespace's config, and a push checked without
// being applied (sync collects gradients before applying their mean).
//
// Thread safety: see server/chunk_store.h.
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "common/validation.h"
#include "server/chunk_store.h"
#include "server/chunk_store_internal.h"

namespace pskit {

absl::StatusOr<v1::NamespaceConfig> ChunkStore::ConfigOf(
    const std::string& ns) const {
  absl::ReaderMutexLock index_lock(&index_mu_);
  auto it = namespaces_.find(NamespaceOf(ns));
  if (it == namespaces_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "namespace ", Quoted(NamespaceOf(ns)), " is not declared on shard ",
        shard_index_, "; call Declare first"));
  }
  return it->second->config;
}

absl::Status ChunkStore::CheckGradients(const v1::PushRequest& req,
                                        std::vector<uint64_t>* lengths,
                                        std::vector<uint64_t>* versions) const {
  PSKIT_RETURN_IF_ERROR(
      CheckLayout(req.layout(), req.has_layout(), layout_, shard_index_));
  absl::ReaderMutexLock index_lock(&index_mu_);
  PSKIT_ASSIGN_OR_RETURN(Resolved r,
                         Resolve(req.namespace_(), req.grads(), "Push"));
  std::vector<float> scratch;
  lengths->clear();
  versions->clear();
  for (int i = 0; i < req.grads_size(); ++i) {
    PSKIT_RETURN_IF_ERROR(DecodeChunk(req.grads(i), r.targets[i].length,
                                      allow_nonfinite_, &scratch)
                              .status());
    Chunk& c = *r.targets[i].chunk;
    absl::ReaderMutexLock lock(&c.mu);
    lengths->push_back(r.targets[i].length);
    versions->push_back(c.version);
  }
  return absl::OkStatus();
}

}  // namespace pskit
