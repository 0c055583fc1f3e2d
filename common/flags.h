// common/flags.h
//
// ParseFlags: the one way a pskit binary parses its command line. It is
// absl::ParseCommandLine with a --help that works: absl's own --help lists
// only flags defined in a file named after the binary (ours live in main.cc
// and in libraries), so it printed "No flags matched" and exited 1.
//
// Example:
//   int main(int argc, char** argv) {
//     std::vector<char*> rest = pskit::ParseFlags(
//         argc, argv, "one shard of a pskit cluster.\n  ps-server --listen ...");
//     ...
//
// Thread safety: call once, from main, before other threads start.
#ifndef PSKIT_COMMON_FLAGS_H_
#define PSKIT_COMMON_FLAGS_H_

#include <ostream>
#include <vector>

#include "absl/strings/string_view.h"

namespace pskit {

// Sets `usage` as the program's usage message. If argv[1..argc) holds
// --help, -help, -h, --helpfull or --helpshort, prints the usage and every
// pskit flag this binary has (name, type default, help; sorted by name) to
// stdout and exits 0. Otherwise parses the flags with absl (which exits 1 on
// an unknown flag or a bad value, naming it) and returns the positional
// arguments, argv[0] first.
std::vector<char*> ParseFlags(int argc, char** argv, absl::string_view usage);

// Writes the usage and the help of every flag defined outside Abseil itself
// to `out`: the body of --help.
void PrintFlagsHelp(std::ostream& out, absl::string_view usage);

}  // namespace pskit

#endif  // PSKIT_COMMON_FLAGS_H_
