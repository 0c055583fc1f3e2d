// tools/psrun/launch/launcher.h
//
// The local-cluster launcher behind psrun: starts N ps-server shards and M
// ps-worker processes (plus an optional evaluator) on 127.0.0.1, streams
// their output line by line with a prefix, shows a live status line, and
// stops everything in order when the job ends, a child fails, or psrun is
// interrupted.
//
//   LauncherOptions o;
//   o.bin_dir = "/opt/pskit/bin";
//   o.servers = 2;
//   o.workers = 2;
//   o.evaluator = true;
//   o.worker_args = {"--dataset", "synthetic", "--target_accuracy", "0.9"};
//   return RunLocalCluster(o);  // psrun's exit code
//
// Lifecycle: shards start with --listen 127.0.0.1:0 and are read back from
// their "ps-server listening on" line; workers start once every shard
// answers Admin/Status. The job ends when every worker has exited; an
// evaluator still running then gets until its next evaluation (at most
// 2 x --eval_interval_s + 5 s) to score the final model and is stopped.
// Stopping = SIGTERM to workers and evaluator, wait, then SIGTERM to the
// shards (which checkpoint), wait; whoever outlasts kill_timeout gets SIGKILL.
//
// With options.workers 0 there is no job: once every shard answers, psrun
// prints "shards: HOST:PORT,..." and the psctl command, and serves until
// SIGINT/SIGTERM, then stops the shards as above and exits kExitOk.
//
// With options.worker_command, workers and the evaluator run that command
// instead of ps-worker, told the shards, rank, role, ... through their
// environment (the contract: worker_command.h).
//
// Thread safety: RunLocalCluster must run on the process's main thread
// before any other thread exists: it blocks SIGINT, SIGTERM, SIGHUP and
// SIGCHLD (threads started later inherit the mask) and reads them from a
// signalfd; children die with the thread that started them
// (PR_SET_PDEATHSIG). It writes to stdout and stderr.
#ifndef PSKIT_TOOLS_PSRUN_LAUNCH_LAUNCHER_H_
#define PSKIT_TOOLS_PSRUN_LAUNCH_LAUNCHER_H_

#include "tools/psrun/launch/options.h"
#include "tools/psrun/launch/worker_flags.h"

namespace pskit::launch {

// Options and exit codes: options.h. What psrun reads from the worker
// flags: worker_flags.h. The machinery: supervisor.h.

// Runs the cluster until the job ends (see the file comment) and returns
// psrun's exit code: kExitOk when every worker and the evaluator exited 0
// (or the evaluator was stopped after the workers finished) and every shard
// stopped cleanly; kExitFailed when a child failed (psrun names it, says how
// it ended and shows its last lines) or the cluster could not start;
// kExitUsage for invalid options; 128 + signal when interrupted. Prints a
// summary table at the end in every case but kExitUsage.
int RunLocalCluster(const LauncherOptions& options);

}  // namespace pskit::launch

#endif  // PSKIT_TOOLS_PSRUN_LAUNCH_LAUNCHER_H_
