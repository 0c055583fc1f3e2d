// common/auth_token.cc
//
// Token generation, hashing and token-file parsing over OpenSSL's libcrypto
// (the library gRPC itself links on Debian 12).
#include "common/auth_token.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace pskit {
namespace {

bool IsLowerHex64(absl::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// At most this many characters of a bad field are echoed into an error.
constexpr size_t kMaxEcho = 80;

std::string Echo(absl::string_view s) {
  if (s.size() <= kMaxEcho) return std::string(s);
  return absl::StrCat(s.substr(0, kMaxEcho), "... (", s.size(), " bytes)");
}

absl::Status ReadWholeFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    const std::string why = std::strerror(err);
    if (err == ENOENT) {
      return absl::NotFoundError(absl::StrCat("cannot read token file '", path,
                                              "': ", why));
    }
    if (err == EACCES) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot read token file '", path, "': ", why));
    }
    return absl::InternalError(
        absl::StrCat("cannot read token file '", path, "': ", why));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return absl::InternalError(
        absl::StrCat("error while reading token file '", path, "'"));
  }
  *out = std::move(text).str();
  return absl::OkStatus();
}

}  // namespace

absl::string_view TokenRoleName(TokenRole role) {
  switch (role) {
    case TokenRole::kReader:
      return "reader";
    case TokenRole::kWorker:
      return "worker";
    case TokenRole::kAdmin:
      return "admin";
  }
  return "unknown";
}

absl::StatusOr<TokenRole> ParseTokenRole(absl::string_view name) {
  if (name == "reader") return TokenRole::kReader;
  if (name == "worker") return TokenRole::kWorker;
  if (name == "admin") return TokenRole::kAdmin;
  return absl::InvalidArgumentError(absl::StrCat(
      "role '", Echo(name), "' is not one of reader, worker, admin"));
}

bool TokenEntry::AllowsNamespace(absl::string_view ns) const {
  if (namespaces.empty()) return true;
  for (const std::string& n : namespaces) {
    if (n == ns) return true;
  }
  return false;
}

absl::StatusOr<std::string> GenerateToken() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
    return absl::InternalError(
        "the system's random number generator (OpenSSL RAND_bytes) failed; "
        "no token was made");
  }
  std::string token;
  // absl's web-safe base64 is base64url without padding: 43 characters.
  absl::WebSafeBase64Escape(
      absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)),
      &token);
  OPENSSL_cleanse(bytes, sizeof(bytes));
  return token;
}

std::string HashToken(absl::string_view token) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  // EVP_Digest with SHA-256 cannot fail short of memory exhaustion; a zero
  // length then gives an empty string, which never matches a 64-hex entry.
  if (EVP_Digest(token.data(), token.size(), digest, &len, EVP_sha256(),
                 nullptr) != 1) {
    return std::string();
  }
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), len));
}

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

absl::StatusOr<std::vector<TokenEntry>> ParseTokenText(
    absl::string_view text, absl::string_view source) {
  std::vector<TokenEntry> entries;
  absl::flat_hash_set<std::string> seen;
  int line_no = 0;
  for (absl::string_view raw : absl::StrSplit(text, '\n')) {
    ++line_no;
    absl::string_view line = raw;
    if (size_t hash_pos = line.find('#'); hash_pos != line.npos) {
      line = line.substr(0, hash_pos);
    }
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    auto fail = [&](absl::string_view problem) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token file '", source, "' line ", line_no, ": ", problem,
          " (expected '<sha256 hex of the token> <reader|worker|admin> "
          "[ns1,ns2...]'; psctl token new writes such lines)"));
    };
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() < 2) {
      return fail("a hash and a role are needed");
    }
    if (fields.size() > 3) {
      return fail(absl::StrCat("has ", fields.size(),
                               " fields, at most 3; separate namespaces with "
                               "commas, not spaces"));
    }
    TokenEntry e;
    e.line = line_no;
    if (!IsLowerHex64(fields[0])) {
      // Not echoed: a token pasted here by mistake would reach the log.
      return fail(absl::StrCat(
          "the first field (", fields[0].size(),
          " characters) is not a SHA-256 in 64 lowercase hex characters (a "
          "token itself must never be written here, only its hash: psctl "
          "token new prints the line)"));
    }
    e.hash = std::string(fields[0]);
    absl::StatusOr<TokenRole> role = ParseTokenRole(fields[1]);
    if (!role.ok()) return fail(role.status().message());
    e.role = *role;
    if (fields.size() == 3) {
      for (absl::string_view ns : absl::StrSplit(fields[2], ',')) {
        if (ns.empty()) {
          return fail(absl::StrCat("namespace list '", Echo(fields[2]),
                                   "' has an empty name"));
        }
        e.namespaces.emplace_back(ns);
      }
    }
    if (!seen.insert(e.hash).second) {
      return fail("the same token hash appears on an earlier line");
    }
    entries.push_back(std::move(e));
  }
  return entries;
}

absl::StatusOr<std::vector<TokenEntry>> ParseTokenFile(
    const std::string& path) {
  std::string text;
  if (absl::Status s = ReadWholeFile(path, &text); !s.ok()) return s;
  return ParseTokenText(text, path);
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  std::string text;
  if (absl::Status s = ReadWholeFile(path, &text); !s.ok()) return s;
  std::string token(absl::StripAsciiWhitespace(text));
  OPENSSL_cleanse(text.data(), text.size());
  if (token.size() < kMinTokenLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "token file '", path, "' holds ", token.size(),
        " characters; a token has at least ", kMinTokenLength,
        " (make one with: psctl token new --role R --out FILE)"));
  }
  for (char c : token) {
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token file '", path,
          "' holds whitespace or control characters inside the token; it "
          "must hold one token and nothing else"));
    }
  }
  return token;
}

const TokenEntry* FindToken(const std::vector<TokenEntry>& entries,
                            absl::string_view presented) {
  const std::string hash = HashToken(presented);
  const TokenEntry* found = nullptr;
  for (const TokenEntry& e : entries) {
    // No early exit: every entry is compared whatever matched before.
    const bool match = ConstantTimeEquals(hash, e.hash);
    if (match) found = &e;
  }
  return found;
}

std::string TokenFileLine(absl::string_view token, TokenRole role,
                          const std::vector<std::string>& namespaces) {
  std::string line = absl::StrCat(HashToken(token), " ", TokenRoleName(role));
  if (!namespaces.empty()) {
    absl::StrAppend(&line, " ", absl::StrJoin(namespaces, ","));
  }
  return line;
}

}  // namespace pskit
