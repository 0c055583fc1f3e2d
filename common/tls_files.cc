// common/tls_files.cc: the PEM checks of tls_files.h, with OpenSSL's
// libcrypto (the library Debian's gRPC itself uses for TLS).
#include "common/tls_files.h"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace pskit {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

// Never prompts for a pass phrase (OpenSSL's default would read the
// terminal): an encrypted key simply fails to load.
int NoPassphrase(char*, int, int, void*) { return 0; }

absl::Status ReadFile(const std::string& path, absl::string_view flag,
                      std::string* out) {
  if (path.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " is empty; give the path of a PEM file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, " ", path, ": cannot be read (", std::strerror(errno),
        ")"));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  if (out->empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " ", path, ": the file is empty"));
  }
  return absl::OkStatus();
}

std::unique_ptr<BIO, BioFree> MemoryBio(const std::string& data) {
  return std::unique_ptr<BIO, BioFree>(
      BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

}  // namespace

absl::Status CheckCaFile(const std::string& path, absl::string_view flag) {
  std::string pem;
  if (absl::Status s = ReadFile(path, flag, &pem); !s.ok()) return s;
  auto bio = MemoryBio(pem);
  std::unique_ptr<X509, X509Free> cert(
      PEM_read_bio_X509(bio.get(), nullptr, NoPassphrase, nullptr));
  ERR_clear_error();
  if (cert == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, " ", path,
        ": holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)"));
  }
  return absl::OkStatus();
}

absl::Status CheckCertAndKeyFiles(const std::string& cert_path,
                                  absl::string_view cert_flag,
                                  const std::string& key_path,
                                  absl::string_view key_flag) {
  std::string cert_pem;
  if (absl::Status s = ReadFile(cert_path, cert_flag, &cert_pem); !s.ok()) {
    return s;
  }
  auto cert_bio = MemoryBio(cert_pem);
  std::unique_ptr<X509, X509Free> cert(
      PEM_read_bio_X509(cert_bio.get(), nullptr, NoPassphrase, nullptr));
  ERR_clear_error();
  if (cert == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", cert_flag, " ", cert_path,
        ": holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)"));
  }
  std::string key_pem;
  if (absl::Status s = ReadFile(key_path, key_flag, &key_pem); !s.ok()) {
    return s;
  }
  std::unique_ptr<EVP_PKEY, PkeyFree> key;
  {
    auto key_bio = MemoryBio(key_pem);
    key.reset(
        PEM_read_bio_PrivateKey(key_bio.get(), nullptr, NoPassphrase, nullptr));
  }
  OPENSSL_cleanse(key_pem.data(), key_pem.size());
  ERR_clear_error();
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", key_flag, " ", key_path,
        ": holds no unencrypted PEM private key (expected -----BEGIN PRIVATE "
        "KEY----- or -----BEGIN EC/RSA PRIVATE KEY-----)"));
  }
  const int match = X509_check_private_key(cert.get(), key.get());
  ERR_clear_error();
  if (match != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", key_flag, " ", key_path, " is not the key of the certificate in --",
        cert_flag, " ", cert_path, "; give the matching pair"));
  }
  return absl::OkStatus();
}

}  // namespace pskit
