#include "tests/testing/cluster.h"

#include <stdlib.h>

#include <filesystem>

#include "common/status_macros.h"
#include "gtest/gtest.h"

namespace pskit::testing {

absl::StatusOr<std::unique_ptr<TestCluster>> TestCluster::Start(
    uint32_t num_shards, ServerOptions base) {
  base.num_shards = num_shards;
  auto cluster = std::unique_ptr<TestCluster>(new TestCluster(base));
  for (uint32_t i = 0; i < num_shards; ++i) {
    ServerOptions o = base;
    o.listen = "127.0.0.1:0";
    o.shard_index = i;
    if (!base.data_dir.empty()) {
      o.data_dir = base.data_dir + "/shard" + std::to_string(i);
    }
    PSKIT_ASSIGN_OR_RETURN(std::unique_ptr<Server> s, Server::Start(o));
    cluster->addresses_.push_back(s->address());
    cluster->servers_.push_back(std::move(s));
  }
  return cluster;
}

absl::StatusOr<std::unique_ptr<Client>> TestCluster::NewClient(
    ClientOptions options) const {
  options.chunk_elems = base_.chunk_elems;
  if (options.timeout == ClientOptions{}.timeout) {
    options.timeout = absl::Seconds(20);
  }
  return Client::Connect(addresses_, options);
}

absl::Status TestCluster::RestartAll() {
  for (size_t i = 0; i < servers_.size(); ++i) Stop(static_cast<int>(i));
  for (size_t i = 0; i < servers_.size(); ++i) {
    PSKIT_RETURN_IF_ERROR(Restart(static_cast<int>(i)));
  }
  return absl::OkStatus();
}

v1::NamespaceConfig SgdConfig(float lr) {
  v1::NamespaceConfig cfg;
  cfg.mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
  cfg.mutable_optimizer()->set_learning_rate(lr);
  return cfg;
}

TensorDecl ZerosTensor(const std::string& name, int64_t n) {
  TensorDecl d;
  d.spec.set_name(name);
  d.spec.add_shape(n);
  d.spec.mutable_init()->set_kind(v1::INIT_ZEROS);
  return d;
}

std::string MakeTempDir() {
  std::string tmpl = ::testing::TempDir() + "pskit-XXXXXX";
  const char* made = mkdtemp(tmpl.data());
  return made == nullptr ? "" : std::string(made);
}

TempDir::TempDir() : path_(MakeTempDir()) {}

TempDir::~TempDir() {
  std::error_code ignored;
  if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
}

void TestCluster::Stop(int i) {
  if (servers_[i] != nullptr) servers_[i]->Shutdown(absl::ZeroDuration());
  servers_[i].reset();
}

absl::Status TestCluster::Restart(int i) {
  Stop(i);
  ServerOptions o = base_;
  o.listen = addresses_[i];
  o.shard_index = i;
  if (!base_.data_dir.empty()) {
    o.data_dir = base_.data_dir + "/shard" + std::to_string(i);
  }
  PSKIT_ASSIGN_OR_RETURN(servers_[i], Server::Start(o));
  return absl::OkStatus();
}

}  // namespace pskit::testing
