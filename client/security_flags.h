// client/security_flags.h
//
// The client-side security flags every pskit client binary takes (ps-worker,
// psctl, psrun, ps-bench), defined once here, and their reading into a
// ChannelSecurity (common/channel.h):
//
//   --tls_ca FILE     the CA that signed the shards' certificates: TLS on,
//                     the shard verified
//   --tls_cert FILE   this client's certificate and key (mTLS), both or
//   --tls_key FILE    neither
//   --token_file FILE the bearer token (one line). Without it the
//                     environment: PSKIT_TOKEN_FILE (a path), else
//                     PSKIT_TOKEN (the token itself).
//
// The token itself is never a flag: flags show in `ps` and in shell history.
//
//   int main(int argc, char** argv) {
//     pskit::ParseFlags(argc, argv, "...");
//     absl::StatusOr<pskit::ChannelSecurity> security =
//         pskit::ChannelSecurityFromFlags();
//     if (!security.ok()) { print security.status(); return 2; }
//     options.security = *security;
//
// Thread safety: ChannelSecurityFromFlags reads flags and the environment:
// call it from main after the flags are parsed. ReadTokenFile is pure.
#ifndef PSKIT_CLIENT_SECURITY_FLAGS_H_
#define PSKIT_CLIENT_SECURITY_FLAGS_H_

#include <functional>
#include <string>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/auth_token.h"
#include "common/channel.h"

ABSL_DECLARE_FLAG(std::string, tls_ca);
ABSL_DECLARE_FLAG(std::string, tls_cert);
ABSL_DECLARE_FLAG(std::string, tls_key);
ABSL_DECLARE_FLAG(std::string, token_file);

namespace pskit {

// The names of the flags above, for parsers that accept a fixed set (psctl)
// and for launchers that pass them on (psrun).
inline constexpr absl::string_view kChannelSecurityFlags[] = {
    "tls_ca", "tls_cert", "tls_key", "token_file"};

// Looks up an environment variable; nullptr when unset.
using EnvLookup = std::function<const char*(const char*)>;

// "" when the token file at `path` is readable by its owner only (or
// cannot be looked at: reading it reports that); otherwise a warning that
// group or others can read it and how to fix it (chmod 600). Like ssh with
// a private key, but a warning rather than a refusal: Kubernetes mounts
// Secrets 0644 by default, and refusing would break every such deployment.
std::string TokenFileWarning(const std::string& path);

// The ChannelSecurity the flags and the environment (looked up through
// `env`) give, checked with CheckChannelSecurity; the token file is read by
// ReadTokenFile (common/auth_token.h). Logs TokenFileWarning's warning. INVALID_ARGUMENT naming the flag or variable that is
// wrong; the token never appears in a message or a log line.
[[nodiscard]] absl::StatusOr<ChannelSecurity> ChannelSecurityFromFlags(
    const EnvLookup& env = [](const char* name) { return std::getenv(name); });

}  // namespace pskit

#endif  // PSKIT_CLIENT_SECURITY_FLAGS_H_
