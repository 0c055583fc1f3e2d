// AdvertisedAddress (the HOST rule of ps-server --address_file, tested here
// because tests may bind only 127.0.0.1, never 0.0.0.0) and the atomic
// WriteAddressFile on a temp dir.
#include "server/address_file.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "tests/testing/cluster.h"
#include "tests/testing/status_matchers.h"

namespace pskit {
namespace {

using testing::TempDir;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(AdvertisedAddress, AdvertiseHostWinsThenListenHostThenHostname) {
  EXPECT_EQ(AdvertisedAddress("0.0.0.0", 7000, "shard-0.ps", "node17"),
            "shard-0.ps:7000");
  EXPECT_EQ(AdvertisedAddress("127.0.0.1", 7000, "shard-0.ps", "node17"),
            "shard-0.ps:7000");
  EXPECT_EQ(AdvertisedAddress("10.1.2.3", 41234, "", "node17"),
            "10.1.2.3:41234");
  EXPECT_EQ(AdvertisedAddress("node17.cluster", 7000, "", "node17"),
            "node17.cluster:7000");
  for (const char* wildcard : {"0.0.0.0", "[::]", "::", ""}) {
    EXPECT_EQ(AdvertisedAddress(wildcard, 7000, "", "node17"), "node17:7000")
        << wildcard;
  }
}

TEST(AdvertisedAddress, Ipv6LiteralsGetBrackets) {
  EXPECT_EQ(AdvertisedAddress("[::1]", 7000, "", "h"), "[::1]:7000");
  EXPECT_EQ(AdvertisedAddress("0.0.0.0", 7000, "fd00::5", "h"),
            "[fd00::5]:7000");
  EXPECT_EQ(AdvertisedAddress("0.0.0.0", 7000, "[fd00::5]", "h"),
            "[fd00::5]:7000");
}

TEST(IsWildcardHost, OnlyTheAnyAddresses) {
  EXPECT_TRUE(IsWildcardHost("0.0.0.0"));
  EXPECT_TRUE(IsWildcardHost("[::]"));
  EXPECT_FALSE(IsWildcardHost("127.0.0.1"));
  EXPECT_FALSE(IsWildcardHost("localhost"));
}

TEST(WriteAddressFile, WritesTheLineAtomicallyAndReplacesAnOldOne) {
  TempDir dir;
  const std::string path = dir.path() + "/shard0";
  ASSERT_OK(WriteAddressFile(path, "node17:7000"));
  EXPECT_EQ(ReadAll(path), "node17:7000\n");
  ASSERT_OK(WriteAddressFile(path, "node18:7001"));
  EXPECT_EQ(ReadAll(path), "node18:7001\n");
  // Only the file itself is left: no temporary.
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    EXPECT_EQ(e.path().filename(), "shard0");
    ++entries;
  }
  EXPECT_EQ(entries, 1);
}

TEST(WriteAddressFile, MissingDirectoryIsFailedPreconditionNamingIt) {
  TempDir dir;
  const std::string path = dir.path() + "/no/such/dir/shard0";
  for (const absl::Status& s :
       {CheckAddressFileDir(path), WriteAddressFile(path, "h:1")}) {
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_NE(s.message().find(dir.path() + "/no/such/dir"),
              absl::string_view::npos)
        << s;
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  ASSERT_OK(CheckAddressFileDir(dir.path() + "/shard0"));
}

}  // namespace
}  // namespace pskit
