// tools/psrun/launch/throwaway_ca.h
//
// A throw-away certificate authority for a local cluster (psrun --tls) and
// for tests: an ECDSA P-256 CA made in memory with OpenSSL's libcrypto, the
// certificates it issues (a shard's, naming the hosts clients dial; a
// client's, for mTLS), and the files psrun writes into its run directory.
// Nothing is kept beyond the files: a new run makes a new CA, so a stolen
// key of an old run opens nothing.
//
//   PSKIT_ASSIGN_OR_RETURN(ThrowawayCa ca, ThrowawayCa::Create("psrun CA"));
//   PSKIT_ASSIGN_OR_RETURN(IssuedCertificate shard,
//       ca.Issue("shard", CertificateUse::kServer, {"localhost", "127.0.0.1"}));
//   // shard.cert_pem, shard.key_pem; ca.cert_pem() for the clients' --tls_ca
//
//   PSKIT_ASSIGN_OR_RETURN(ThrowawayTlsFiles files,
//       WriteThrowawayTls(run_dir + "/tls", {"127.0.0.1"}));
//
// Thread safety: a ThrowawayCa is immutable after Create; Issue may be
// called from several threads. WriteThrowawayTls writes files.
#ifndef PSKIT_TOOLS_PSRUN_LAUNCH_THROWAWAY_CA_H_
#define PSKIT_TOOLS_PSRUN_LAUNCH_THROWAWAY_CA_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace pskit::launch {

enum class CertificateUse { kServer, kClient };

// A certificate and its private key, both PEM (the key unencrypted PKCS#8).
struct IssuedCertificate {
  std::string cert_pem;
  std::string key_pem;
};

class ThrowawayCa {
 public:
  // A new self-signed CA (a fresh P-256 key) named `common_name`, valid
  // from an hour ago (clock skew) for `validity`. INTERNAL when OpenSSL
  // fails (its error text included).
  [[nodiscard]] static absl::StatusOr<ThrowawayCa> Create(
      const std::string& common_name,
      absl::Duration validity = absl::Hours(24 * 30));

  ThrowawayCa(ThrowawayCa&&) noexcept;
  ThrowawayCa& operator=(ThrowawayCa&&) noexcept;
  ~ThrowawayCa();

  // The CA's certificate (what clients give as --tls_ca and mTLS shards as
  // theirs).
  const std::string& cert_pem() const { return cert_pem_; }

  // A certificate for `use` signed by this CA, with a fresh P-256 key.
  // `names` go into subjectAltName: each an IP address (v4 or v6) or else a
  // DNS name; a server certificate must name every host clients dial.
  // INVALID_ARGUMENT for an empty name; INTERNAL when OpenSSL fails.
  [[nodiscard]] absl::StatusOr<IssuedCertificate> Issue(
      const std::string& common_name, CertificateUse use,
      const std::vector<std::string>& names,
      absl::Duration validity = absl::Hours(24 * 30)) const;

 private:
  struct Impl;
  explicit ThrowawayCa(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::string cert_pem_;
};

// The files of a throw-away local cluster, under one directory.
struct ThrowawayTlsFiles {
  std::string ca;           // ca.pem: the CA's certificate
  std::string shard_cert;   // shard.pem / shard.key: every shard's
  std::string shard_key;
  std::string client_cert;  // client.pem / client.key: workers', psctl's
  std::string client_key;
};

// Makes a CA, one shard certificate naming 127.0.0.1, ::1, localhost and
// `hosts`, and one client certificate, and writes them to `dir` (created
// with mode 0700 if missing): keys mode 0600, certificates 0644, each file
// written to a temporary name and renamed (never half-written). The CA's
// key is not written: nothing can be issued after this. INTERNAL naming the
// file on a write error.
[[nodiscard]] absl::StatusOr<ThrowawayTlsFiles> WriteThrowawayTls(
    const std::string& dir, const std::vector<std::string>& hosts);

// Writes `content` to `path` with permission bits `mode` (set before any
// byte is written), through a temporary file renamed over `path`. INTERNAL
// naming the file on error. Used for keys and tokens (0600).
[[nodiscard]] absl::Status WritePrivateFile(const std::string& path,
                                            const std::string& content,
                                            int mode);

}  // namespace pskit::launch

#endif  // PSKIT_TOOLS_PSRUN_LAUNCH_THROWAWAY_CA_H_
