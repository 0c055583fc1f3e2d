// client/security_flags.cc: the client security flags and their reading
// (see security_flags.h).
#include "client/security_flags.h"

#include <sys/stat.h>

#include <cstdlib>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, tls_ca, "",
          "PEM file of the CA that signed the shards' certificates: talk TLS "
          "and verify the shard. Empty: plaintext");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM file of this client's certificate, for shards that require "
          "client certificates (mTLS); with --tls_key");
ABSL_FLAG(std::string, tls_key, "",
          "PEM file of this client's private key (unencrypted), with "
          "--tls_cert");
ABSL_FLAG(std::string, token_file, "",
          "file holding the bearer token sent on every call (one line; keep "
          "it mode 0600). Empty: the file named by $PSKIT_TOKEN_FILE, else "
          "the token in $PSKIT_TOKEN, else none. The token itself is never a "
          "flag (flags show in ps)");

namespace pskit {

std::string TokenFileWarning(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || (st.st_mode & (S_IRWXG | S_IRWXO)) == 0) {
    return "";
  }
  return absl::StrFormat(
      "token file %s is readable by group or others (mode %04o); "
      "`chmod 600 %s` keeps the token to its owner",
      path, st.st_mode & 07777, path);
}

absl::StatusOr<ChannelSecurity> ChannelSecurityFromFlags(const EnvLookup& env) {
  ChannelSecurity s;
  s.tls_ca = absl::GetFlag(FLAGS_tls_ca);
  s.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  s.tls_key = absl::GetFlag(FLAGS_tls_key);
  std::string token_file = absl::GetFlag(FLAGS_token_file);
  std::string source = "--token_file";
  if (token_file.empty()) {
    if (const char* v = env("PSKIT_TOKEN_FILE"); v != nullptr && *v != '\0') {
      token_file = v;
      source = "PSKIT_TOKEN_FILE";
    }
  }
  if (!token_file.empty()) {
    absl::StatusOr<std::string> token = ReadTokenFile(token_file);
    if (!token.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": ", token.status().message()));
    }
    if (const std::string w = TokenFileWarning(token_file); !w.empty()) {
      spdlog::warn("{}", w);
    }
    s.token = *std::move(token);
  } else if (const char* v = env("PSKIT_TOKEN"); v != nullptr && *v != '\0') {
    s.token = std::string(absl::StripAsciiWhitespace(v));
    if (s.token.size() < kMinTokenLength) {
      return absl::InvalidArgumentError(absl::StrCat(
          "PSKIT_TOKEN holds ", s.token.size(),
          " characters; a token has at least ", kMinTokenLength));
    }
  }
  if (absl::Status st = CheckChannelSecurity(s); !st.ok()) return st;
  return s;
}

}  // namespace pskit
