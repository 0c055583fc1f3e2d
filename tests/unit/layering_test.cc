// The dependency direction of DESIGN.md, enforced:
//
//   tools -> client -> common -> proto,  worker -> client,  server -> common.
//
// Every source file under common/, server/, client/, worker/ and tools/ may
// include headers of its own layer and of the layers below it, nothing else
// (the server never includes client, worker or tools code; nothing includes
// tools or tests). Tests may include anything and are not scanned. A
// violation is reported as "file: includes header (layer X may include only
// ...)", so the failing test names what to fix. Also: every gRPC channel is
// made by MakeChannel (common/channel.h), tests' channels included.
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"

namespace pskit {
namespace {

namespace fs = std::filesystem;

// The layer of an include path or a source path: its first component, with
// the generated proto headers ("pskit/v1/ps.pb.h") counted as "proto".
// Empty for headers that are not the project's (absl/, grpcpp/, ...).
std::string LayerOf(const std::string& path) {
  static const std::set<std::string> kLayers = {
      "proto", "common", "client", "server", "worker", "tools", "tests"};
  const std::string first = path.substr(0, path.find('/'));
  if (first == "pskit") return "proto";
  return kLayers.count(first) ? first : "";
}

// Which layers each scanned layer may include (its own included).
const std::map<std::string, std::set<std::string>>& AllowedIncludes() {
  static const auto* kAllowed =
      new std::map<std::string, std::set<std::string>>{
          {"common", {"common", "proto"}},
          {"client", {"client", "common", "proto"}},
          {"server", {"server", "common", "proto"}},
          {"worker", {"worker", "client", "common", "proto"}},
          {"tools", {"tools", "client", "common", "proto"}},
      };
  return *kAllowed;
}

// Scans every C++ and CUDA source under `root`'s layer directories and
// returns one line per include that breaks the dependency direction.
std::vector<std::string> LayerViolations(const fs::path& root) {
  static const std::regex kInclude(R"re(^\s*#\s*include\s*["<]([^">]+)[">])re");
  static const std::set<std::string> kExtensions = {".h", ".cc", ".cu", ".cuh"};
  std::vector<std::string> violations;
  for (const auto& [layer, allowed] : AllowedIncludes()) {
    const fs::path dir = root / layer;
    if (!fs::is_directory(dir)) continue;
    for (const auto& entry : fs::recursive_directory_iterator(dir)) {
      if (!entry.is_regular_file() ||
          !kExtensions.count(entry.path().extension().string())) {
        continue;
      }
      std::ifstream in(entry.path());
      std::string line;
      std::smatch m;
      while (std::getline(in, line)) {
        if (!std::regex_search(line, m, kInclude)) continue;
        const std::string header = m[1];
        // Full paths only (STYLE.md): a relative one ("../client/x.h")
        // would slip past the layer check below.
        if (absl::StrContains(header, "..") || header.rfind("./", 0) == 0) {
          violations.push_back(absl::StrCat(
              fs::relative(entry.path(), root).string(), ": includes \"",
              header, "\" (write the full path from the source root)"));
          continue;
        }
        const std::string target = LayerOf(header);
        if (target.empty() || allowed.count(target)) continue;
        violations.push_back(absl::StrCat(
            fs::relative(entry.path(), root).string(), ": includes \"", header,
            "\" (layer ", layer, " may include only ",
            absl::StrJoin(allowed, ", "), ")"));
      }
    }
  }
  std::sort(violations.begin(), violations.end());
  return violations;
}

// Every file outside common/channel.cc that creates a gRPC channel itself
// instead of through MakeChannel (common/channel.h), tests included.
std::vector<std::string> ChannelsMadeElsewhere(const fs::path& root) {
  static const std::regex kCreate(
      R"re(\b(Create\w*Channel\w*|InProcessChannel\w*)\s*\()re");
  std::vector<std::string> found;
  for (const char* dir :
       {"common", "client", "server", "worker", "tools", "tests"}) {
    if (!fs::is_directory(root / dir)) continue;
    for (const auto& entry : fs::recursive_directory_iterator(root / dir)) {
      const std::string ext = entry.path().extension().string();
      if (!entry.is_regular_file() || (ext != ".h" && ext != ".cc")) continue;
      const std::string rel = fs::relative(entry.path(), root).string();
      if (rel == "common/channel.cc" || rel == "tests/unit/layering_test.cc") {
        continue;
      }
      std::ifstream in(entry.path());
      std::string line;
      for (int n = 1; std::getline(in, line); ++n) {
        if (std::regex_search(line, kCreate)) {
          found.push_back(absl::StrCat(rel, ":", n, ": ", line));
        }
      }
    }
  }
  return found;
}

TEST(LayeringTest, EveryChannelIsMadeByMakeChannel) {
  const std::vector<std::string> found =
      ChannelsMadeElsewhere(PSKIT_SOURCE_DIR);
  EXPECT_TRUE(found.empty())
      << "create channels with MakeChannel (common/channel.h):\n"
      << absl::StrJoin(found, "\n");
}

TEST(LayeringTest, SourceTreeKeepsTheDependencyDirection) {
  const std::vector<std::string> violations = LayerViolations(PSKIT_SOURCE_DIR);
  EXPECT_TRUE(violations.empty())
      << "includes against DESIGN.md's dependency direction:\n"
      << absl::StrJoin(violations, "\n");
}

// The check above must be able to fail: a small tree with one allowed and
// three forbidden includes.
TEST(LayeringTest, NamesFileAndHeaderOfEachViolation) {
  const fs::path root =
      fs::path(::testing::TempDir()) /
      absl::StrCat(
          "layering_test_",
          ::testing::UnitTest::GetInstance()->current_test_info()->name());
  fs::remove_all(root);
  fs::create_directories(root / "server");
  fs::create_directories(root / "client");
  fs::create_directories(root / "common");
  std::ofstream(root / "server" / "bad.cc")
      << "#include \"server/ok.h\"\n#include \"common/layout.h\"\n"
         "#include \"pskit/v1/ps.pb.h\"\n#include \"absl/status/status.h\"\n"
         "#include \"client/client.h\"\n";
  std::ofstream(root / "client" / "bad.h")
      << "  #  include <tools/psctl/x.h>\n";
  std::ofstream(root / "common" / "bad.cc")
      << "#include \"tests/testing/cluster.h\"\n"
         "#include \"../client/client.h\"\n";

  const std::vector<std::string> violations = LayerViolations(root);
  ASSERT_EQ(violations.size(), 4u) << absl::StrJoin(violations, "\n");
  EXPECT_EQ(violations[0],
            "client/bad.h: includes \"tools/psctl/x.h\" (layer client may "
            "include only client, common, proto)");
  EXPECT_EQ(violations[1],
            "common/bad.cc: includes \"../client/client.h\" (write the full "
            "path from the source root)");
  EXPECT_EQ(violations[2],
            "common/bad.cc: includes \"tests/testing/cluster.h\" (layer "
            "common may include only common, proto)");
  EXPECT_EQ(violations[3],
            "server/bad.cc: includes \"client/client.h\" (layer server may "
            "include only common, proto, server)");
  fs::remove_all(root);
}

TEST(LayeringTest, FindsAChannelMadeOutsideTheFactory) {
  const fs::path root =
      fs::path(::testing::TempDir()) / "layering_test_channel";
  fs::remove_all(root);
  fs::create_directories(root / "tools");
  fs::create_directories(root / "common");
  std::ofstream(root / "common" / "channel.cc")
      << "return grpc::CreateCustomChannel(a, c, args);\n";
  std::ofstream(root / "tools" / "x.cc")
      << "// one\nauto ch = grpc::CreateChannel(address, creds);\n"
         "auto in = server->InProcessChannel(args);\n";
  const std::vector<std::string> found = ChannelsMadeElsewhere(root);
  ASSERT_EQ(found.size(), 2u) << absl::StrJoin(found, "\n");
  EXPECT_EQ(found[0],
            "tools/x.cc:2: auto ch = grpc::CreateChannel(address, creds);");
  EXPECT_EQ(found[1], "tools/x.cc:3: auto in = server->InProcessChannel(args);");
  fs::remove_all(root);
}

}  // namespace
}  // namespace pskit
