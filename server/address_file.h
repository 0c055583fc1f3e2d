// server/address_file.h
//
// What ps-server --address_file writes: the address other processes should
// dial ("HOST:PORT\n"), written atomically into a rendezvous directory (a
// shared file system under SLURM), so a reader never sees half a line.
//
//   PSKIT_RETURN_IF_ERROR(CheckAddressFileDir("/shared/rdv/shard0"));
//   ... start serving on port 7000 ...
//   const std::string a = AdvertisedAddress("0.0.0.0", 7000, "", "node17");
//   PSKIT_RETURN_IF_ERROR(WriteAddressFile("/shared/rdv/shard0", a));
//   // /shared/rdv/shard0 holds "node17:7000\n"
//
// Thread safety: pure functions and file operations on the caller's paths.
#ifndef PSKIT_SERVER_ADDRESS_FILE_H_
#define PSKIT_SERVER_ADDRESS_FILE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace pskit {

// Whether `host` (of --listen, without the port) means "every interface":
// "", "0.0.0.0", "[::]" or "::". Such a host cannot be dialled.
bool IsWildcardHost(absl::string_view host);

// HOST:PORT for others to dial. HOST is `advertise_host` when not empty,
// else `listen_host` unless it is a wildcard (IsWildcardHost), else
// `hostname` (this machine's, from gethostname). An IPv6 literal gets its
// brackets ("::1" -> "[::1]:7000"); one that has them keeps them.
std::string AdvertisedAddress(absl::string_view listen_host, int port,
                              absl::string_view advertise_host,
                              absl::string_view hostname);

// OK when the directory `path` is to be written into exists and is a
// directory. FAILED_PRECONDITION naming it otherwise (create it first: a
// rendezvous directory is the job script's to make).
[[nodiscard]] absl::Status CheckAddressFileDir(const std::string& path);

// Writes "`address`\n" to `path` atomically: into `path`.tmp.<pid>, fsync,
// rename over `path`, fsync of the directory. A reader sees the old file (or
// none) or the whole new line. FAILED_PRECONDITION when the directory does
// not exist; INTERNAL naming the failed step otherwise (no temp file is
// left behind).
[[nodiscard]] absl::Status WriteAddressFile(const std::string& path,
                                            absl::string_view address);

}  // namespace pskit

#endif  // PSKIT_SERVER_ADDRESS_FILE_H_
