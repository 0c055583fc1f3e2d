// tools/psrun/launch/throwaway_ca.cc: ThrowawayCa and the throw-away TLS
// files, with OpenSSL 3's libcrypto (see throwaway_ca.h).
#include "tools/psrun/launch/throwaway_ca.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace pskit::launch {
namespace {

struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct BnFree {
  void operator()(BIGNUM* b) const { BN_free(b); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;
using Cert = std::unique_ptr<X509, X509Free>;

// INTERNAL with OpenSSL's queued error text; clears the queue.
absl::Status OpenSslError(absl::string_view what) {
  std::string detail;
  for (unsigned long e = ERR_get_error(); e != 0; e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!detail.empty()) detail += "; ";
    detail += buf;
  }
  return absl::InternalError(absl::StrCat(
      what, " failed in OpenSSL", detail.empty() ? "" : ": ", detail));
}

absl::StatusOr<Pkey> NewP256Key() {
  Pkey key(EVP_EC_gen("P-256"));
  if (key == nullptr) return OpenSslError("making a P-256 key");
  return key;
}

std::string BioText(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  return std::string(data, n > 0 ? static_cast<size_t>(n) : 0);
}

absl::StatusOr<std::string> CertPem(X509* cert) {
  std::unique_ptr<BIO, BioFree> bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr || PEM_write_bio_X509(bio.get(), cert) != 1) {
    return OpenSslError("writing a certificate");
  }
  return BioText(bio.get());
}

absl::StatusOr<std::string> KeyPem(EVP_PKEY* key) {
  std::unique_ptr<BIO, BioFree> bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr || PEM_write_bio_PrivateKey(bio.get(), key, nullptr,
                                                 nullptr, 0, nullptr,
                                                 nullptr) != 1) {
    return OpenSslError("writing a private key");
  }
  return BioText(bio.get());
}

// Adds extension `nid` with OpenSSL's config syntax `value`.
absl::Status AddExtension(X509V3_CTX* ctx, X509* cert, int nid,
                          const std::string& value) {
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, ctx, nid, value.c_str());
  if (ext == nullptr) {
    return OpenSslError(absl::StrCat("making extension ", OBJ_nid2sn(nid),
                                     " = ", value));
  }
  const int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  if (ok != 1) return OpenSslError("adding an extension");
  return absl::OkStatus();
}

// A certificate for `key` named `common_name`, issued by `issuer` (itself
// when null), not yet extended or signed.
absl::StatusOr<Cert> NewCertificate(const std::string& common_name,
                                    EVP_PKEY* key, X509* issuer,
                                    absl::Duration validity) {
  Cert cert(X509_new());
  if (cert == nullptr) return OpenSslError("X509_new");
  // A random 127-bit serial: unique without keeping state.
  std::unique_ptr<BIGNUM, BnFree> serial(BN_new());
  if (serial == nullptr ||
      BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) ==
          nullptr ||
      X509_set_version(cert.get(), X509_VERSION_3) != 1 ||
      X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(cert.get()),
                      absl::ToInt64Seconds(validity)) == nullptr ||
      X509_set_pubkey(cert.get(), key) != 1) {
    return OpenSslError("filling a certificate");
  }
  X509_NAME* name = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(
          name, "CN", MBSTRING_UTF8,
          reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
          0) != 1 ||
      X509_set_issuer_name(cert.get(), issuer != nullptr
                                           ? X509_get_subject_name(issuer)
                                           : name) != 1) {
    return OpenSslError("naming a certificate");
  }
  return cert;
}

bool IsIpAddress(const std::string& name) {
  unsigned char buf[16];
  return inet_pton(AF_INET, name.c_str(), buf) == 1 ||
         inet_pton(AF_INET6, name.c_str(), buf) == 1;
}

}  // namespace

struct ThrowawayCa::Impl {
  Pkey key;
  Cert cert;
};

ThrowawayCa::ThrowawayCa(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ThrowawayCa::ThrowawayCa(ThrowawayCa&&) noexcept = default;
ThrowawayCa& ThrowawayCa::operator=(ThrowawayCa&&) noexcept = default;
ThrowawayCa::~ThrowawayCa() = default;

absl::StatusOr<ThrowawayCa> ThrowawayCa::Create(const std::string& common_name,
                                                absl::Duration validity) {
  auto impl = std::make_unique<Impl>();
  absl::StatusOr<Pkey> key = NewP256Key();
  if (!key.ok()) return key.status();
  impl->key = *std::move(key);
  absl::StatusOr<Cert> cert =
      NewCertificate(common_name, impl->key.get(), nullptr, validity);
  if (!cert.ok()) return cert.status();
  impl->cert = *std::move(cert);
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, impl->cert.get(), impl->cert.get(), nullptr, nullptr, 0);
  for (const auto& [nid, value] :
       std::vector<std::pair<int, std::string>>{
           {NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
           {NID_key_usage, "critical,keyCertSign,cRLSign"},
           {NID_subject_key_identifier, "hash"}}) {
    if (absl::Status s = AddExtension(&ctx, impl->cert.get(), nid, value);
        !s.ok()) {
      return s;
    }
  }
  if (X509_sign(impl->cert.get(), impl->key.get(), EVP_sha256()) == 0) {
    return OpenSslError("signing the CA certificate");
  }
  absl::StatusOr<std::string> pem = CertPem(impl->cert.get());
  if (!pem.ok()) return pem.status();
  ThrowawayCa ca(std::move(impl));
  ca.cert_pem_ = *std::move(pem);
  return ca;
}

absl::StatusOr<IssuedCertificate> ThrowawayCa::Issue(
    const std::string& common_name, CertificateUse use,
    const std::vector<std::string>& names, absl::Duration validity) const {
  std::vector<std::string> alt;
  for (const std::string& n : names) {
    if (n.empty()) {
      return absl::InvalidArgumentError(
          "an empty host name for a certificate's subjectAltName");
    }
    alt.push_back(absl::StrCat(IsIpAddress(n) ? "IP:" : "DNS:", n));
  }
  absl::StatusOr<Pkey> key = NewP256Key();
  if (!key.ok()) return key.status();
  absl::StatusOr<Cert> cert = NewCertificate(common_name, key->get(),
                                             impl_->cert.get(), validity);
  if (!cert.ok()) return cert.status();
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, impl_->cert.get(), cert->get(), nullptr, nullptr, 0);
  std::vector<std::pair<int, std::string>> extensions = {
      {NID_basic_constraints, "critical,CA:FALSE"},
      {NID_key_usage, "critical,digitalSignature"},
      {NID_ext_key_usage,
       use == CertificateUse::kServer ? "serverAuth" : "clientAuth"},
      {NID_subject_key_identifier, "hash"},
      {NID_authority_key_identifier, "keyid:always"}};
  if (!alt.empty()) {
    extensions.push_back({NID_subject_alt_name, absl::StrJoin(alt, ",")});
  }
  for (const auto& [nid, value] : extensions) {
    if (absl::Status s = AddExtension(&ctx, cert->get(), nid, value); !s.ok()) {
      return s;
    }
  }
  if (X509_sign(cert->get(), impl_->key.get(), EVP_sha256()) == 0) {
    return OpenSslError("signing a certificate");
  }
  IssuedCertificate out;
  absl::StatusOr<std::string> cert_pem = CertPem(cert->get());
  if (!cert_pem.ok()) return cert_pem.status();
  absl::StatusOr<std::string> key_pem = KeyPem(key->get());
  if (!key_pem.ok()) return key_pem.status();
  out.cert_pem = *std::move(cert_pem);
  out.key_pem = *std::move(key_pem);
  return out;
}

absl::Status WritePrivateFile(const std::string& path,
                              const std::string& content, int mode) {
  const std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());
  // O_EXCL: never write through a file (or link) someone else put there.
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                        static_cast<mode_t>(mode));
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  }
  // The umask may have cleared bits of `mode`; set exactly `mode`.
  bool ok = ::fchmod(fd, static_cast<mode_t>(mode)) == 0;
  size_t done = 0;
  while (ok && done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<size_t>(n);
  }
  const int saved = errno;
  ok = ::close(fd) == 0 && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = ok ? errno : saved;
    ::unlink(tmp.c_str());
    return absl::InternalError(
        absl::StrCat("cannot write ", path, ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

absl::StatusOr<ThrowawayTlsFiles> WriteThrowawayTls(
    const std::string& dir, const std::vector<std::string>& hosts) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || ::chmod(dir.c_str(), 0700) != 0) {
    return absl::InternalError(absl::StrCat(
        "cannot create ", dir, ": ", ec ? ec.message() : std::strerror(errno)));
  }
  absl::StatusOr<ThrowawayCa> ca = ThrowawayCa::Create("pskit psrun CA");
  if (!ca.ok()) return ca.status();
  std::vector<std::string> names = {"127.0.0.1", "::1", "localhost"};
  for (const std::string& h : hosts) {
    if (!h.empty() && std::find(names.begin(), names.end(), h) == names.end()) {
      names.push_back(h);
    }
  }
  absl::StatusOr<IssuedCertificate> shard =
      ca->Issue("pskit shard", CertificateUse::kServer, names);
  if (!shard.ok()) return shard.status();
  absl::StatusOr<IssuedCertificate> client =
      ca->Issue("pskit client", CertificateUse::kClient, {});
  if (!client.ok()) return client.status();
  ThrowawayTlsFiles f;
  f.ca = dir + "/ca.pem";
  f.shard_cert = dir + "/shard.pem";
  f.shard_key = dir + "/shard.key";
  f.client_cert = dir + "/client.pem";
  f.client_key = dir + "/client.key";
  for (const auto& [path, content, mode] :
       std::vector<std::tuple<std::string, std::string, int>>{
           {f.ca, ca->cert_pem(), 0644},
           {f.shard_key, shard->key_pem, 0600},
           {f.shard_cert, shard->cert_pem, 0644},
           {f.client_key, client->key_pem, 0600},
           {f.client_cert, client->cert_pem, 0644}}) {
    if (absl::Status s = WritePrivateFile(path, content, mode); !s.ok()) {
      return s;
    }
  }
  return f;
}

}  // namespace pskit::launch
