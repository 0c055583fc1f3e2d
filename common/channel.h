// common/channel.h
//
// MakeChannel: the one place where pskit creates a gRPC channel. Client,
// AdminClient, CheckHealth, psctl, psrun's monitor, the worker and the tests
// all call it, so what every channel needs (message limits, keepalive,
// reconnect backoff from common/grpc_options.h, TLS credentials and the
// bearer token) is added here once.
//
// Example:
//   ChannelOptions o;
//   o.security.tls_ca = "/etc/pskit/ca.pem";       // TLS, shard verified
//   o.security.tls_cert = "/etc/pskit/client.pem";  // mTLS
//   o.security.tls_key = "/etc/pskit/client.key";
//   o.security.token = token;  // from ReadTokenFile or the environment
//   PSKIT_RETURN_IF_ERROR(CheckChannelSecurity(o.security));  // at startup
//   std::shared_ptr<grpc::Channel> ch = MakeChannel("shard0.ps:7000", o);
//   auto stub = v1::Admin::NewStub(ch);
//
// TLS: with tls_ca set, the channel speaks TLS and verifies the shard's
// certificate against that CA, including that the certificate names the
// host dialled (DNS name or IP address in its subjectAltName). The files are
// read by gRPC's file-watcher certificate provider, which re-reads them every
// ChannelOptions::tls_refresh_interval: a rotated certificate is used by the
// next connection, without a restart. Channels with the same files and
// interval share one provider (one watcher thread, not one per channel).
//
// Token: a non-empty token goes on every call as the metadata
// "authorization: Bearer <token>", on TLS and plaintext channels alike (a
// client interceptor adds it: gRPC's call credentials refuse plaintext
// channels, and loopback clusters are plaintext). Without TLS the token
// crosses the network in clear text; only loopback should carry it so.
//
// Thread safety: all functions may be called from any thread; channels are
// thread-safe.
#ifndef PSKIT_COMMON_CHANNEL_H_
#define PSKIT_COMMON_CHANNEL_H_

#include <grpcpp/channel.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/grpc_options.h"

namespace pskit {

// How a client proves who it is and checks whom it talks to. Every field is
// empty by default: plaintext, no token (what a loopback cluster without
// tokens takes).
struct ChannelSecurity {
  std::string tls_ca;    // PEM file of the CA that signed the shards' certificates;
                         // non-empty => the channel uses TLS and verifies the shard
  std::string tls_cert;  // PEM files of this client's certificate and key (mTLS);
  std::string tls_key;   // both or neither
  std::string token;     // the bearer token itself (never a path); sent on every call
                         // as metadata "authorization: Bearer <token>"; empty: none
};

struct ChannelOptions {
  // Largest gRPC message sent or received. Default: 64 MiB
  // (kDefaultMaxMessageBytes), the shards' default too.
  int max_message_bytes = kDefaultMaxMessageBytes;
  // Channels to one address with different indices open separate TCP
  // connections (gRPC would otherwise share one). Default: 0.
  int channel_index = 0;
  // TLS files and token (see the file comment). Check it once with
  // CheckChannelSecurity before making channels: MakeChannel cannot fail, so
  // a missing file would only show as calls failing UNAVAILABLE.
  // Default: plaintext, no token.
  ChannelSecurity security;
  // How often the TLS files are looked at for a new version (gRPC's minimum
  // is 1 s). Shorter finds a rotation sooner at a few more stat() calls.
  // Default: 60 s.
  absl::Duration tls_refresh_interval = absl::Seconds(60);
};

// OK when `security` is usable: no TLS, or tls_ca a readable PEM file with
// at least one certificate; tls_cert and tls_key both set or both empty,
// and when set, readable PEM files whose key belongs to the certificate;
// client certificate files only together with tls_ca; a token of printable
// ASCII without spaces. INVALID_ARGUMENT otherwise, naming the field, file
// and what to fix (never the token itself).
[[nodiscard]] absl::Status CheckChannelSecurity(const ChannelSecurity& security);

// Returns a channel to `address` (host:port) with `options`. Does not
// connect: the first call does, and a channel reconnects by itself. TLS
// handshake failures (wrong CA, a shard without TLS, a client certificate
// the shard refuses) show as calls failing UNAVAILABLE.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address,
                                           const ChannelOptions& options = {});

}  // namespace pskit

#endif  // PSKIT_COMMON_CHANNEL_H_
