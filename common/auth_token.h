// common/auth_token.h
//
// Bearer tokens for pskit shards: making one, hashing one, and reading the
// shard's token file (--auth_tokens). A shard never stores a token, only its
// SHA-256, so a leaked token file lets nobody call the shard.
//
// Token file format (UTF-8 text, one token per line):
//   # comment; blank lines are ignored
//   <sha256 of the token, 64 lowercase hex> <role> [<namespace>[,<namespace>...]]
// `role` is `worker`, `reader` or `admin`; no namespace list means every
// namespace.
//
// Example:
//   std::string token = GenerateToken();                  // give to the client
//   std::string line = HashToken(token) + " worker jobA";  // add to the file
//   ASSIGN_OR_RETURN(std::vector<TokenEntry> entries, ParseTokenFile(path));
//   const TokenEntry* e = FindToken(entries, presented);   // nullptr: unknown
//
// Thread safety: every function is thread-safe (no shared state).
#ifndef PSKIT_COMMON_AUTH_TOKEN_H_
#define PSKIT_COMMON_AUTH_TOKEN_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pskit {

// What a token may do on a shard. The order is by power: each role may do
// everything the ones before it may.
enum class TokenRole { kReader, kWorker, kAdmin };

// "reader", "worker", "admin".
absl::string_view TokenRoleName(TokenRole role);

// Parses "reader", "worker" or "admin". INVALID_ARGUMENT otherwise, naming the
// three.
[[nodiscard]] absl::StatusOr<TokenRole> ParseTokenRole(absl::string_view name);

// One line of a token file.
struct TokenEntry {
  std::string hash;                     // 64 lowercase hex: SHA-256 of the token
  TokenRole role = TokenRole::kReader;
  std::vector<std::string> namespaces;  // empty: every namespace
  int line = 0;                         // 1-based line in the file it came from

  // True when the token may touch namespace `ns` (no list, or `ns` in it).
  bool AllowsNamespace(absl::string_view ns) const;
};

// Shortest token a client may present; GenerateToken's are exactly this long.
inline constexpr size_t kMinTokenLength = 43;

// A fresh token: 32 bytes from OpenSSL's CSPRNG (RAND_bytes), base64url
// without padding (43 characters of [A-Za-z0-9_-]). INTERNAL if the CSPRNG
// fails (it then has no entropy; nothing sensible can be made without).
[[nodiscard]] absl::StatusOr<std::string> GenerateToken();

// SHA-256 of `token`'s bytes as 64 lowercase hex characters: what a token
// file holds.
std::string HashToken(absl::string_view token);

// Compares two byte strings in time that depends only on their lengths, never
// on where they differ (CRYPTO_memcmp). Different lengths: false.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

// Parses the text of a token file (`source` names it in errors, e.g. its
// path). INVALID_ARGUMENT naming source, line and problem ("tokens.txt line
// 3: role 'writer' is not one of reader, worker, admin") for: a hash that is
// not 64 lowercase hex, an unknown role, an empty namespace in the list, more
// than three fields, or the same hash twice. A file with no entries is valid
// (it refuses every caller).
[[nodiscard]] absl::StatusOr<std::vector<TokenEntry>> ParseTokenText(
    absl::string_view text, absl::string_view source);

// Reads and parses the token file at `path`. NOT_FOUND / PERMISSION_DENIED /
// INTERNAL naming the path when it cannot be read; otherwise as
// ParseTokenText with the path as source.
[[nodiscard]] absl::StatusOr<std::vector<TokenEntry>> ParseTokenFile(
    const std::string& path);

// Reads a token the client keeps in a file (--token_file, --metrics_token_file):
// the file's text with surrounding whitespace removed. INVALID_ARGUMENT if the
// result is shorter than kMinTokenLength or holds whitespace or control
// characters; the message never shows the token.
[[nodiscard]] absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// The entry whose hash is the presented token's, or nullptr. Hashes
// `presented` once and compares it with every entry in constant time (no early
// exit), so the time taken says nothing about which entry, if any, matched.
// `entries` must outlive the returned pointer.
const TokenEntry* FindToken(const std::vector<TokenEntry>& entries,
                            absl::string_view presented);

// The line a shard's token file needs for `token`: "<hash> <role>" plus
// " ns1,ns2" when `namespaces` is not empty.
std::string TokenFileLine(absl::string_view token, TokenRole role,
                          const std::vector<std::string>& namespaces);

}  // namespace pskit

#endif  // PSKIT_COMMON_AUTH_TOKEN_H_
