// common/channel.cc: MakeChannel and CheckChannelSecurity (see channel.h).
#include "common/channel.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <grpcpp/support/client_interceptor.h>

#include <algorithm>
#include <map>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/tls_files.h"

namespace pskit {
namespace {

using grpc::experimental::CertificateProviderInterface;
using grpc::experimental::FileWatcherCertificateProvider;

// Adds "authorization: Bearer <token>" to every call's initial metadata.
class BearerTokenInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit BearerTokenInterceptor(std::shared_ptr<const std::string> value)
      : value_(std::move(value)) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::
                PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("authorization", *value_);
    }
    methods->Proceed();
  }

 private:
  const std::shared_ptr<const std::string> value_;  // "Bearer <token>"
};

class BearerTokenInterceptorFactory
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerTokenInterceptorFactory(const std::string& token)
      : value_(std::make_shared<const std::string>(
            absl::StrCat("Bearer ", token))) {}

  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new BearerTokenInterceptor(value_);
  }

 private:
  const std::shared_ptr<const std::string> value_;
};

// One file-watcher provider per (files, interval), shared by every channel
// that uses them: each provider owns a watcher thread, and a client with
// many shards and channels per shard would otherwise start one per channel.
// The cache holds them for the process's life (a strong reference: gRPC
// core's own reference is not visible here, so a weak one expired as soon
// as the credentials were built and every channel made a new provider); a
// process uses a handful of file sets at most.
class ProviderCache {
 public:
  std::shared_ptr<CertificateProviderInterface> Get(const ChannelSecurity& s,
                                                    unsigned refresh_s)
      ABSL_LOCKS_EXCLUDED(mu_) {
    const Key key{s.tls_ca, s.tls_cert, s.tls_key, refresh_s};
    absl::MutexLock lock(&mu_);
    if (auto it = providers_.find(key); it != providers_.end()) {
      return it->second;
    }
    std::shared_ptr<CertificateProviderInterface> p =
        s.tls_cert.empty()
            ? std::make_shared<FileWatcherCertificateProvider>(s.tls_ca,
                                                               refresh_s)
            : std::make_shared<FileWatcherCertificateProvider>(
                  s.tls_key, s.tls_cert, s.tls_ca, refresh_s);
    providers_[key] = p;
    return p;
  }

 private:
  using Key = std::tuple<std::string, std::string, std::string, unsigned>;
  absl::Mutex mu_;
  std::map<Key, std::shared_ptr<CertificateProviderInterface>> providers_
      ABSL_GUARDED_BY(mu_);
};

ProviderCache& Providers() {
  static ProviderCache* cache = new ProviderCache();
  return *cache;
}

std::shared_ptr<grpc::ChannelCredentials> Credentials(
    const ChannelOptions& options) {
  const ChannelSecurity& s = options.security;
  if (s.tls_ca.empty()) return grpc::InsecureChannelCredentials();
  const unsigned refresh_s = static_cast<unsigned>(std::max<int64_t>(
      1, absl::ToInt64Seconds(options.tls_refresh_interval)));
  grpc::experimental::TlsChannelCredentialsOptions tls;
  tls.set_certificate_provider(Providers().Get(s, refresh_s));
  tls.watch_root_certs();
  if (!s.tls_cert.empty()) tls.watch_identity_key_cert_pairs();
  // The default: verify the chain against tls_ca and the host name dialled
  // against the certificate's subjectAltName.
  tls.set_verify_server_certs(true);
  return grpc::experimental::TlsCredentials(tls);
}

}  // namespace

absl::Status CheckChannelSecurity(const ChannelSecurity& security) {
  const ChannelSecurity& s = security;
  if (s.tls_cert.empty() != s.tls_key.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert and --tls_key go together: give both (a client "
        "certificate for mTLS) or neither");
  }
  if (!s.tls_cert.empty() && s.tls_ca.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert/--tls_key need --tls_ca (the CA that signed the shards' "
        "certificates): a client certificate is only sent over TLS");
  }
  if (!s.tls_ca.empty()) {
    if (absl::Status st = CheckCaFile(s.tls_ca, "tls_ca"); !st.ok()) return st;
  }
  if (!s.tls_cert.empty()) {
    if (absl::Status st =
            CheckCertAndKeyFiles(s.tls_cert, "tls_cert", s.tls_key, "tls_key");
        !st.ok()) {
      return st;
    }
  }
  for (const char c : s.token) {
    if (c <= ' ' || c > '~') {
      return absl::InvalidArgumentError(
          "the token holds a space, control or non-ASCII character; a bearer "
          "token is printable ASCII without spaces (check the token file or "
          "PSKIT_TOKEN)");
    }
  }
  return absl::OkStatus();
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address,
                                           const ChannelOptions& options) {
  grpc::ChannelArguments args =
      ClientChannelArguments(options.max_message_bytes, options.channel_index);
  std::shared_ptr<grpc::ChannelCredentials> creds = Credentials(options);
  if (options.security.token.empty()) {
    return grpc::CreateCustomChannel(address, creds, args);
  }
  std::vector<
      std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(
      std::make_unique<BearerTokenInterceptorFactory>(options.security.token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      address, creds, args, std::move(interceptors));
}

}  // namespace pskit
