// tests/unit/common/auth_token_test.cc
//
// GenerateToken, HashToken, the token-file parser and the constant-time
// lookup (common/auth_token.h).
#include "common/auth_token.h"

#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <fstream>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace pskit {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

TEST(GenerateToken, Is43Base64UrlCharactersAndFresh) {
  absl::flat_hash_set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    ASSERT_OK_AND_ASSIGN(std::string t, GenerateToken());
    EXPECT_EQ(t.size(), 43u);
    for (char c : t) {
      EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '-' ||
                  c == '_')
          << "character '" << c << "' is not base64url";
    }
    EXPECT_TRUE(seen.insert(t).second) << "token repeated";
  }
}

TEST(HashToken, IsSha256InLowercaseHex) {
  // Known answers (FIPS 180-2): SHA-256("") and SHA-256("abc").
  EXPECT_EQ(HashToken(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(HashToken("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(ConstantTimeEquals, ComparesBytesAndLengths) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abcd"));
  EXPECT_FALSE(ConstantTimeEquals("", "a"));
}

const std::string kHashA(64, 'a');
const std::string kHashB(64, 'b');

TEST(ParseTokenText, ReadsRolesNamespacesCommentsAndBlankLines) {
  const std::string text = "# shard tokens\n\n" + kHashA +
                           " worker jobA,jobB  # the trainers\n" + kHashB +
                           "\tadmin\n";
  ASSERT_OK_AND_ASSIGN(auto entries, ParseTokenText(text, "t.txt"));
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].hash, kHashA);
  EXPECT_EQ(entries[0].role, TokenRole::kWorker);
  EXPECT_THAT(entries[0].namespaces, ElementsAre("jobA", "jobB"));
  EXPECT_EQ(entries[0].line, 3);
  EXPECT_TRUE(entries[0].AllowsNamespace("jobB"));
  EXPECT_FALSE(entries[0].AllowsNamespace("jobC"));
  EXPECT_EQ(entries[1].role, TokenRole::kAdmin);
  EXPECT_TRUE(entries[1].namespaces.empty());
  EXPECT_TRUE(entries[1].AllowsNamespace("anything"));
}

TEST(ParseTokenText, EmptyFileIsValidAndAllowsNobody) {
  ASSERT_OK_AND_ASSIGN(auto entries, ParseTokenText("# none yet\n", "t"));
  EXPECT_TRUE(entries.empty());
  EXPECT_EQ(FindToken(entries, "whatever"), nullptr);
}

TEST(ParseTokenText, ATokenPastedInsteadOfItsHashIsNotEchoed) {
  // The mistake the message warns about must not put the token in a log.
  const std::string token = GenerateToken().value();
  auto r = ParseTokenText(token + " worker\n", "t.txt");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), Not(HasSubstr(token.substr(0, 8))));
  EXPECT_THAT(r.status().message(), HasSubstr("43 characters"));
}

TEST(ParseTokenText, ErrorsNameFileLineAndProblem) {
  struct Case {
    std::string text;
    std::string want;
  };
  const Case cases[] = {
      {"\n" + kHashA + " writer\n", "'t.txt' line 2: role 'writer' is not one of"},
      {std::string(64, 'A') + " reader\n",
       "line 1: the first field (64 characters) is not a SHA-256"},
      {"abc reader\n", "not a SHA-256 in 64 lowercase hex"},
      {kHashA + "\n", "line 1: a hash and a role are needed"},
      {kHashA + " reader a b\n", "has 4 fields"},
      {kHashA + " reader a,,b\n", "has an empty name"},
      {kHashA + " reader\n" + kHashA + " admin\n",
       "line 2: the same token hash appears on an earlier line"},
  };
  for (const Case& c : cases) {
    auto r = ParseTokenText(c.text, "t.txt");
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr(c.want)) << c.text;
  }
}

TEST(ParseTokenText, NeverEchoesAWholeLongField) {
  const std::string huge(100000, 'z');
  auto r = ParseTokenText(huge + " reader\n", "t");
  ASSERT_FALSE(r.ok());
  EXPECT_LT(r.status().message().size(), 400u);
}

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/auth_token_test_" + std::to_string(getpid()) +
         "_" + name;
}

TEST(ParseTokenFile, MissingFileIsNotFoundNamingThePath) {
  const std::string path = TempPath("missing");
  auto r = ParseTokenFile(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr(path));
}

TEST(FindToken, FindsTheEntryOfThePresentedToken) {
  ASSERT_OK_AND_ASSIGN(std::string t1, GenerateToken());
  ASSERT_OK_AND_ASSIGN(std::string t2, GenerateToken());
  const std::string path = TempPath("tokens");
  {
    std::ofstream out(path);
    out << TokenFileLine(t1, TokenRole::kReader, {}) << "\n"
        << TokenFileLine(t2, TokenRole::kWorker, {"a", "b"}) << "\n";
  }
  ASSERT_OK_AND_ASSIGN(auto entries, ParseTokenFile(path));
  std::remove(path.c_str());
  const TokenEntry* e1 = FindToken(entries, t1);
  const TokenEntry* e2 = FindToken(entries, t2);
  ASSERT_NE(e1, nullptr);
  ASSERT_NE(e2, nullptr);
  EXPECT_EQ(e1->role, TokenRole::kReader);
  EXPECT_EQ(e2->role, TokenRole::kWorker);
  EXPECT_THAT(e2->namespaces, ElementsAre("a", "b"));
  EXPECT_EQ(FindToken(entries, t1 + "x"), nullptr);
  EXPECT_EQ(FindToken(entries, ""), nullptr);
  // The hash itself is not a token.
  EXPECT_EQ(FindToken(entries, e1->hash), nullptr);
}

TEST(ReadTokenFile, TrimsNewlineAndRefusesShortOrSpacedTokens) {
  ASSERT_OK_AND_ASSIGN(std::string t, GenerateToken());
  const std::string path = TempPath("client_token");
  {
    std::ofstream out(path);
    out << t << "\n";
  }
  ASSERT_OK_AND_ASSIGN(std::string read, ReadTokenFile(path));
  EXPECT_EQ(read, t);
  {
    std::ofstream out(path);
    out << "short-secret\n";
  }
  auto r = ReadTokenFile(path);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("at least 43"));
  EXPECT_THAT(r.status().message(), Not(HasSubstr("short-secret")));
  {
    std::ofstream out(path);
    out << t << " " << t << "\n";
  }
  r = ReadTokenFile(path);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), Not(HasSubstr(t)));
  std::remove(path.c_str());
}

TEST(ParseTokenRole, NamesTheThreeRoles) {
  for (TokenRole r : {TokenRole::kReader, TokenRole::kWorker, TokenRole::kAdmin}) {
    ASSERT_OK_AND_ASSIGN(TokenRole back, ParseTokenRole(TokenRoleName(r)));
    EXPECT_EQ(back, r);
  }
  EXPECT_FALSE(ParseTokenRole("root").ok());
}

}  // namespace
}  // namespace pskit
