#include "common/channel.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

namespace pskit {

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address,
                                           const ChannelOptions& options) {
  return grpc::CreateCustomChannel(
      address, grpc::InsecureChannelCredentials(),
      ClientChannelArguments(options.max_message_bytes, options.channel_index));
}

}  // namespace pskit
