// common/tls_files.h
//
// Checks of TLS certificate and key files (PEM), made once at startup by
// clients (CheckChannelSecurity) and by ps-server, so a missing, unreadable,
// malformed or mismatched file is one clear error naming the flag and the
// file, instead of every TLS handshake failing later with a vague
// UNAVAILABLE. gRPC's file-watcher provider reads the same files afterwards.
//
//   PSKIT_RETURN_IF_ERROR(CheckCaFile(options.tls_ca, "tls_ca"));
//   PSKIT_RETURN_IF_ERROR(CheckCertAndKeyFiles(options.tls_cert, "tls_cert",
//                                              options.tls_key, "tls_key"));
//
// Thread safety: pure functions (they read files; OpenSSL's error queue is
// per thread).
#ifndef PSKIT_COMMON_TLS_FILES_H_
#define PSKIT_COMMON_TLS_FILES_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace pskit {

// OK when `path` is a readable file holding at least one PEM certificate.
// INVALID_ARGUMENT "--<flag> <path>: ..." saying what is wrong otherwise.
[[nodiscard]] absl::Status CheckCaFile(const std::string& path,
                                       absl::string_view flag);

// OK when `cert_path` holds a PEM certificate (chain) and `key_path` an
// unencrypted PEM private key that belongs to its first certificate.
// INVALID_ARGUMENT naming the flag and file otherwise. The key's bytes are
// wiped from memory after the check.
[[nodiscard]] absl::Status CheckCertAndKeyFiles(const std::string& cert_path,
                                                absl::string_view cert_flag,
                                                const std::string& key_path,
                                                absl::string_view key_flag);

}  // namespace pskit

#endif  // PSKIT_COMMON_TLS_FILES_H_
