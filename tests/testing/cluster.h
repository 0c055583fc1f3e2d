// tests/testing/cluster.h
//
// TestCluster: N in-process shard servers on 127.0.0.1 with OS-chosen ports,
// for integration tests. A shard can be stopped and restarted on the same
// address, as an operator would restart a crashed process.
//
// Thread safety: drive a TestCluster from the test's thread only.
#ifndef PSKIT_TESTS_TESTING_CLUSTER_H_
#define PSKIT_TESTS_TESTING_CLUSTER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/client.h"
#include "server/server.h"

namespace pskit::testing {

// SGD with learning rate `lr`, the simplest config whose effect a test can
// compute exactly.
v1::NamespaceConfig SgdConfig(float lr);
// A 1-D tensor `name` of `n` zeros.
TensorDecl ZerosTensor(const std::string& name, int64_t n);

// A fresh directory under the test's temp dir, removed with everything in
// it when the object goes.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class TestCluster {
 public:
  // Starts `num_shards` shards; `base` supplies every other option
  // (listen and shard_index are set per shard; a data_dir becomes
  // <data_dir>/shard<i>).
  static absl::StatusOr<std::unique_ptr<TestCluster>> Start(
      uint32_t num_shards, ServerOptions base = {});

  // Addresses in shard order.
  std::vector<std::string> addresses() const { return addresses_; }
  Server& shard(int i) { return *servers_[i]; }

  // A client of this cluster with the cluster's chunk_elems and a short
  // timeout, so a failing test fails fast.
  absl::StatusOr<std::unique_ptr<Client>> NewClient(
      ClientOptions options = {}) const;

  // Stops every shard, then starts each again on its address (and, with a
  // data_dir, from its newest checkpoint).
  absl::Status RestartAll();

  // Stops shard `i` (in-flight calls are cancelled; with a data_dir the shard
  // writes its final checkpoint, as on SIGTERM).
  void Stop(int i);
  // Starts shard `i` again, on the address it had, with empty state.
  absl::Status Restart(int i);

 private:
  explicit TestCluster(ServerOptions base) : base_(std::move(base)) {}
  ServerOptions base_;
  std::vector<std::string> addresses_;
  std::vector<std::unique_ptr<Server>> servers_;
};

}  // namespace pskit::testing

#endif  // PSKIT_TESTS_TESTING_CLUSTER_H_
