#include "tools/psctl/flags.h"

#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "client/security_flags.h"

ABSL_FLAG(std::string, shards, "",
          "comma-separated shard addresses host:port, in shard-index order. "
          "Default: the environment variable PSKIT_SHARDS");
ABSL_FLAG(bool, json, false,
          "print one JSON object on stdout instead of tables");
ABSL_FLAG(double, timeout_s, 60,
          "deadline of every call to a shard, in seconds (health: 3 unless "
          "given)");
ABSL_FLAG(double, wait_s, 60,
          "drain: how long to wait for the workers to leave, in seconds "
          "(counted from the start of the command)");
ABSL_FLAG(std::string, id, "",
          "checkpoint: the checkpoint id. Default: psctl-<unix ms>");
ABSL_FLAG(bool, wait, false,
          "checkpoint: wait until every shard has written it and report "
          "each; without it psctl waits at most 1 s and reports the shards "
          "still writing as started");
ABSL_FLAG(std::string, out, "",
          "dump: the .npy file to write; token new: the file the token is "
          "written to (mode 0600). Required by both");
ABSL_FLAG(std::string, role, "",
          "token new: the token's role: reader, worker or admin (required)");
ABSL_FLAG(std::string, namespaces, "",
          "token new: the namespaces the token may touch, comma-separated. "
          "Default: every namespace");
ABSL_FLAG(std::string, reason, "",
          "drain: why, recorded as each ended job's reason. Default: "
          "\"drained by an operator\"");

namespace pskit::psctl {

absl::StatusOr<std::vector<std::string>> ParseArgs(
    int argc, char** argv, bool* help, std::set<std::string>* given) {
  static const std::set<std::string>* const kOwnFlags = [] {
    auto* own = new std::set<std::string>{
        "shards", "json", "timeout_s", "wait_s",     "id",
        "wait",   "out",  "reason",    "role",       "namespaces"};
    for (absl::string_view f : kChannelSecurityFlags) own->emplace(f);
    return own;
  }();
  const std::set<std::string>& kOwn = *kOwnFlags;
  std::vector<std::string> positional;
  bool flags_done = false;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (flags_done || arg.size() < 2 || arg[0] != '-') {
      positional.emplace_back(arg);
      continue;
    }
    if (arg == "--") {
      flags_done = true;
      continue;
    }
    absl::string_view body =
        absl::StripPrefix(absl::StripPrefix(arg, "-"), "-");
    if (body == "help" || body == "h") {
      *help = true;
      continue;
    }
    std::string name(body), value;
    bool has_value = false;
    if (const size_t eq = body.find('='); eq != absl::string_view::npos) {
      name = std::string(body.substr(0, eq));
      value = std::string(body.substr(eq + 1));
      has_value = true;
    }
    absl::CommandLineFlag* flag =
        kOwn.count(name) ? absl::FindCommandLineFlag(name) : nullptr;
    if (flag == nullptr && !has_value && absl::StartsWith(name, "no") &&
        kOwn.count(name.substr(2))) {
      flag = absl::FindCommandLineFlag(name.substr(2));
      if (flag != nullptr && flag->IsOfType<bool>()) {
        name = name.substr(2);
        value = "false";
        has_value = true;
      } else {
        flag = nullptr;
      }
    }
    if (flag == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag ", arg, "; `psctl help` lists the flags"));
    }
    if (!has_value) {
      if (flag->IsOfType<bool>()) {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("flag --", name, " needs a value"));
      }
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, "=", value, ": ", error));
    }
    if (given != nullptr) given->insert(name);
  }
  return positional;
}

}  // namespace pskit::psctl
