// ps-bench: push/pull throughput and latency against a running cluster.
//
//   ps-bench --shards 127.0.0.1:7000,127.0.0.1:7001 --op pushpull
//            --model_mib 64 --clients 2 --seconds 20 [--json]
//
// Declares a model of --model_mib (tensors of at most --tensor_mib) in
// namespace --namespace, then --clients threads, each with its own Client,
// repeat --op over the whole model for --seconds. Reports GB/s moved (push
// and pull bytes both counted, 1 GB = 1e9 bytes), operations/s (one op = the
// whole model) and p50/p99/max latency per op, and this process's peak
// resident memory next to what its clients' own arrays take (each client
// holds a gradient and a weight array of the model, f32), so the client's
// memory bound can be checked.
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/client.h"
#include "client/security_flags.h"
#include "common/flags.h"
#include "common/encoding.h"
#include "common/logging.h"
#include "common/malloc_tuning.h"

ABSL_FLAG(std::string, shards, "",
          "comma-separated shard addresses, in shard order (required)");
ABSL_FLAG(std::string, op, "pushpull", "push, pull or pushpull");
ABSL_FLAG(double, model_mib, 64, "model size in MiB of float32");
ABSL_FLAG(double, tensor_mib, 16, "largest tensor in MiB");
ABSL_FLAG(double, op_mib, 0,
          "MiB each op pushes/pulls: consecutive tensors of the model, a "
          "different window each op; 0 = the whole model");
ABSL_FLAG(double, checkpoint_every_s, 0,
          "while measuring, start a checkpoint on every shard this often "
          "(back to back if they take longer); 0 = none. Needs --data_dir "
          "on the shards");
ABSL_FLAG(int32_t, clients, 1, "concurrent clients (threads)");
ABSL_FLAG(double, seconds, 10, "how long to measure");
ABSL_FLAG(double, warmup_s, 1, "unmeasured run-in before measuring");
ABSL_FLAG(std::string, encoding, "f32", "wire encoding: f32, f16 or bf16");
ABSL_FLAG(uint32_t, chunk_elems, pskit::kDefaultChunkElems,
          "must match the shards' --chunk_elems");
ABSL_FLAG(double, max_request_mib,
          pskit::ClientOptions().max_request_bytes / double{1 << 20},
          "payload MiB per request");
ABSL_FLAG(int32_t, max_in_flight_per_shard,
          pskit::ClientOptions().max_in_flight_per_shard,
          "requests in flight per shard and client (0: all of an op at once)");
ABSL_FLAG(int32_t, channels_per_shard, pskit::ClientOptions().channels_per_shard,
          "TCP connections per shard");
ABSL_FLAG(std::string, namespace, "bench", "namespace to declare the model in");
ABSL_FLAG(double, timeout_s, 60,
          "deadline of each operation; an unreachable shard fails after it");
ABSL_FLAG(bool, json, false, "print one JSON object instead of text");

namespace {

// This process's peak resident memory in MiB (Linux: ru_maxrss is in KiB).
double PeakRssMib() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

int Fail(const std::string& msg) {
  std::fprintf(stderr, "ps-bench: %s\n", msg.c_str());
  return 2;
}

double Percentile(std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const size_t rank = static_cast<size_t>(std::ceil(p * sorted.size()));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

}  // namespace

int main(int argc, char** argv) {
  pskit::ParseFlags(argc, argv,
      "push/pull throughput and latency against a pskit cluster.\n"
      "  ps-bench --shards h1:7000,h2:7000 --op pushpull --model_mib 64 "
      "--clients 2 --seconds 20");
  pskit::TuneMallocForLargeMessages();
  if (absl::Status s = pskit::SetupLogging("ps-bench", "warn"); !s.ok()) {
    return Fail(s.ToString());
  }
  const std::string op = absl::GetFlag(FLAGS_op);
  if (op != "push" && op != "pull" && op != "pushpull") {
    return Fail("--op must be push, pull or pushpull, got '" + op + "'");
  }
  std::vector<std::string> shards =
      absl::StrSplit(absl::GetFlag(FLAGS_shards), ',', absl::SkipEmpty());
  if (shards.empty()) return Fail("--shards is required (host:port,...)");
  const int clients = absl::GetFlag(FLAGS_clients);
  const double seconds = absl::GetFlag(FLAGS_seconds);
  const double model_mib = absl::GetFlag(FLAGS_model_mib);
  const double tensor_mib = absl::GetFlag(FLAGS_tensor_mib);
  if (clients < 1) return Fail("--clients must be >= 1");
  if (!(seconds > 0)) return Fail("--seconds must be > 0");
  if (!(model_mib > 0) || !(tensor_mib > 0)) {
    return Fail("--model_mib and --tensor_mib must be > 0");
  }
  pskit::ClientOptions options;
  absl::StatusOr<pskit::v1::Encoding> encoding =
      pskit::ParseEncoding(absl::GetFlag(FLAGS_encoding), "--encoding");
  if (!encoding.ok()) return Fail(std::string(encoding.status().message()));
  options.encoding = *encoding;
  options.chunk_elems = absl::GetFlag(FLAGS_chunk_elems);
  options.max_request_bytes =
      static_cast<size_t>(absl::GetFlag(FLAGS_max_request_mib) * (1 << 20));
  options.channels_per_shard = absl::GetFlag(FLAGS_channels_per_shard);
  options.max_in_flight_per_shard =
      absl::GetFlag(FLAGS_max_in_flight_per_shard);
  options.timeout = absl::Seconds(absl::GetFlag(FLAGS_timeout_s));
  absl::StatusOr<pskit::ChannelSecurity> security =
      pskit::ChannelSecurityFromFlags();
  if (!security.ok()) return Fail(std::string(security.status().message()));
  options.security = *std::move(security);
  const std::string ns = absl::GetFlag(FLAGS_namespace);

  // The model: tensors of tensor_mib, the last one smaller.
  const uint64_t total = static_cast<uint64_t>(model_mib * (1 << 20) / 4);
  const uint64_t per = std::max<uint64_t>(
      1, static_cast<uint64_t>(tensor_mib * (1 << 20) / 4));
  std::vector<pskit::TensorDecl> decls;
  for (uint64_t off = 0, i = 0; off < total; off += per, ++i) {
    pskit::TensorDecl d;
    d.spec.set_name(absl::StrCat("t", i));
    d.spec.add_shape(static_cast<int64_t>(std::min(per, total - off)));
    d.spec.mutable_init()->set_kind(pskit::v1::INIT_ZEROS);
    decls.push_back(std::move(d));
  }
  pskit::v1::NamespaceConfig config;
  config.mutable_optimizer()->set_kind(pskit::v1::OPTIMIZER_SGD);
  config.mutable_optimizer()->set_learning_rate(1e-6f);
  {
    auto c = pskit::Client::Connect(shards, options);
    if (!c.ok()) return Fail(c.status().ToString());
    if (absl::Status s = (*c)->Declare(ns, config, decls); !s.ok()) {
      return Fail(s.ToString());
    }
  }

  const size_t bpe = pskit::BytesPerElement(options.encoding);
  const size_t per_op = absl::GetFlag(FLAGS_op_mib) > 0
                            ? std::clamp<size_t>(
                                  static_cast<size_t>(std::lround(
                                      absl::GetFlag(FLAGS_op_mib) / tensor_mib)),
                                  1, decls.size())
                            : decls.size();
  absl::Mutex mu;
  std::vector<double> latencies_ms;
  uint64_t ops = 0;
  double bytes = 0;
  // Over the whole run (warm-up included): chunk updates the shards acked,
  // to be matched against their updates_applied (tests/bench/load_test.sh),
  // and calls that failed (each client stops at its first).
  uint64_t acked_updates = 0;
  int errors = 0;
  absl::Status first_error;
  // The clock starts once every client has connected and filled its arrays
  // (seconds for a large model, which would otherwise eat into the
  // warm-up and the measured time): the last one ready sets it.
  int ready = 0;
  absl::Time measure_from, stop;
  auto wait_for_start = [&](bool arrived) {
    absl::MutexLock lock(&mu);
    if (arrived && ++ready == clients) {
      measure_from =
          absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_warmup_s));
      stop = measure_from + absl::Seconds(seconds);
    }
    auto all_ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      return ready >= clients;
    };
    mu.Await(absl::Condition(&all_ready));
    return std::make_pair(measure_from, stop);
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < clients; ++t) {
    threads.emplace_back([&, t] {
      auto client = pskit::Client::Connect(shards, options);
      std::vector<std::vector<float>> grads, weights;
      std::vector<pskit::ConstTensorBuffer> g;
      std::vector<pskit::TensorBuffer> w;
      for (const auto& d : decls) {
        grads.emplace_back(d.spec.shape(0), 1e-3f * (t + 1));
        weights.emplace_back(d.spec.shape(0));
      }
      for (size_t i = 0; i < decls.size(); ++i) {
        g.push_back({decls[i].spec.name(), grads[i]});
        w.push_back({decls[i].spec.name(), absl::MakeSpan(weights[i])});
      }
      const auto [measure_from, stop] = wait_for_start(true);
      std::vector<double> mine;
      uint64_t my_ops = 0;
      uint64_t my_acked = 0;
      double my_bytes = 0;
      absl::Status err = client.status();
      // Clients start at different windows of the model.
      size_t first = (t * per_op) % decls.size();
      while (err.ok()) {
        const absl::Time t0 = absl::Now();
        if (t0 >= stop) break;
        std::vector<pskit::ConstTensorBuffer> gs;
        std::vector<pskit::TensorBuffer> ws;
        double op_bytes = 0;
        for (size_t k = 0; k < per_op; ++k) {
          const size_t i = (first + k) % decls.size();
          gs.push_back(g[i]);
          ws.push_back(w[i]);
          op_bytes += static_cast<double>(g[i].data.size()) * bpe *
                      (op == "pushpull" ? 2 : 1);
        }
        first = (first + per_op) % decls.size();
        if (op == "pull") {
          err = client.value()->Pull(ns, ws);
        } else {
          absl::StatusOr<pskit::PushResult> pushed =
              op == "push" ? client.value()->Push(ns, gs)
                           : client.value()->PushPull(ns, gs, ws);
          err = pushed.status();
          if (pushed.ok()) my_acked += pushed->chunks;
        }
        const absl::Time t1 = absl::Now();
        if (err.ok() && t0 >= measure_from && t1 <= stop) {
          mine.push_back(absl::ToDoubleMilliseconds(t1 - t0));
          ++my_ops;
          my_bytes += op_bytes;
        }
      }
      absl::MutexLock lock(&mu);
      latencies_ms.insert(latencies_ms.end(), mine.begin(), mine.end());
      ops += my_ops;
      bytes += my_bytes;
      acked_updates += my_acked;
      if (!err.ok()) ++errors;
      if (!err.ok() && first_error.ok()) first_error = err;
    });
  }
  // Checkpoints while measuring, to see what they cost the data path.
  const double every = absl::GetFlag(FLAGS_checkpoint_every_s);
  std::vector<double> checkpoint_s;
  double checkpoint_busy_s = 0;
  absl::Status checkpoint_error;
  std::thread checkpointer;
  if (every > 0) {
    checkpointer = std::thread([&] {
      auto client = pskit::Client::Connect(shards, options);
      if (!client.ok()) {
        checkpoint_error = client.status();
        return;
      }
      const auto [measure_from, stop] = wait_for_start(false);
      absl::SleepFor(measure_from - absl::Now());
      for (int n = 0;; ++n) {
        const absl::Time t0 = absl::Now();
        if (t0 >= stop) break;
        auto done = (*client)->Checkpoint(
            absl::StrCat("bench-", absl::ToUnixMillis(t0), "-", n));
        const absl::Time t1 = absl::Now();
        if (!done.ok()) {
          checkpoint_error = done.status();
          return;
        }
        checkpoint_s.push_back(absl::ToDoubleSeconds(t1 - t0));
        checkpoint_busy_s += absl::ToDoubleSeconds(std::min(t1, stop) - t0);
        absl::SleepFor(t0 + absl::Seconds(every) - absl::Now());
      }
    });
  }
  for (auto& th : threads) th.join();
  if (checkpointer.joinable()) checkpointer.join();
  if (!first_error.ok()) {
    return Fail(absl::StrCat(
        errors, " of ", clients, " clients failed (", acked_updates,
        " chunk updates acked); first: ", first_error.ToString()));
  }
  if (!checkpoint_error.ok()) return Fail(checkpoint_error.ToString());
  double checkpoint_mean = 0, checkpoint_max = 0;
  for (double d : checkpoint_s) {
    checkpoint_mean += d / checkpoint_s.size();
    checkpoint_max = std::max(checkpoint_max, d);
  }

  // Every client's gradient and weight arrays (f32), the caller's own memory.
  const double arrays_mib =
      2.0 * static_cast<double>(total) * 4 * clients / (1 << 20);
  const double peak_rss_mib = PeakRssMib();
  std::sort(latencies_ms.begin(), latencies_ms.end());
  // Per second of operation time: the counted operations' bytes over their
  // summed latency per client. Every client is busy the whole time, so this
  // is bytes / seconds without the partial operations at both ends of the
  // measured window, which a large model's second-long operations would
  // otherwise leave out (up to two of eight at 1 GiB).
  double busy_s = 0;
  for (double ms : latencies_ms) busy_s += ms / 1e3;
  busy_s /= clients;
  const double gbps = busy_s > 0 ? bytes / busy_s / 1e9 : 0;
  const double ops_per_s = busy_s > 0 ? ops / busy_s : 0;
  const double p50 = Percentile(latencies_ms, 0.50);
  const double p99 = Percentile(latencies_ms, 0.99);
  const double max = latencies_ms.empty() ? 0 : latencies_ms.back();
  if (absl::GetFlag(FLAGS_json)) {
    std::printf(
        "{\"op\":\"%s\",\"encoding\":\"%s\",\"model_mib\":%.3f,\"shards\":%zu,"
        "\"clients\":%d,\"seconds\":%.3f,\"ops\":%llu,\"ops_per_s\":%.3f,"
        "\"bytes\":%.0f,\"gb_per_s\":%.4f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,"
        "\"max_ms\":%.3f,\"op_tensors\":%zu,\"checkpoints\":%zu,"
        "\"checkpoint_mean_s\":%.3f,\"checkpoint_max_s\":%.3f,"
        "\"checkpoint_busy_fraction\":%.3f,\"acked_updates\":%llu,"
        "\"errors\":%d,\"client_arrays_mib\":%.1f,"
        "\"client_peak_rss_mib\":%.1f,\"max_request_mib\":%.3f,"
        "\"max_in_flight_per_shard\":%d,\"channels_per_shard\":%d}\n",
        op.c_str(), pskit::EncodingName(options.encoding).c_str(), model_mib,
        shards.size(), clients, seconds,
        static_cast<unsigned long long>(ops), ops_per_s, bytes, gbps, p50, p99,
        max, per_op, checkpoint_s.size(), checkpoint_mean, checkpoint_max,
        checkpoint_busy_s / seconds,
        static_cast<unsigned long long>(acked_updates), errors, arrays_mib,
        peak_rss_mib, options.max_request_bytes / double{1 << 20},
        options.max_in_flight_per_shard, options.channels_per_shard);
  } else {
    std::printf("ps-bench: op=%s encoding=%s model=%.1f MiB shards=%zu "
                "clients=%d measured %.1f s\n",
                op.c_str(), pskit::EncodingName(options.encoding).c_str(),
                model_mib, shards.size(), clients,
                seconds);
    std::printf("  throughput: %.3f GB/s (%s bytes counted), %.2f ops/s, "
                "%llu ops\n",
                gbps, op == "pushpull" ? "push+pull" : op.c_str(), ops_per_s,
                static_cast<unsigned long long>(ops));
    std::printf("  latency per op: p50 %.1f ms  p99 %.1f ms  max %.1f ms\n",
                p50, p99, max);
    std::printf(
        "  chunk updates acked (whole run, warm-up included): %llu; "
        "errors: %d\n",
        static_cast<unsigned long long>(acked_updates), errors);
    std::printf(
        "  client peak RSS: %.0f MiB (model %.1f MiB; the clients' gradient "
        "and weight arrays %.0f MiB; requests of %.2f MiB, %d in flight per "
        "shard, %d channel(s) per shard)\n",
        peak_rss_mib, model_mib, arrays_mib,
        options.max_request_bytes / double{1 << 20},
        options.max_in_flight_per_shard, options.channels_per_shard);
    if (every > 0) {
      std::printf("  checkpoints: %zu, mean %.2f s, max %.2f s, running %.0f%% "
                  "of the measured time\n",
                  checkpoint_s.size(), checkpoint_mean, checkpoint_max,
                  100 * checkpoint_busy_s / seconds);
    }
  }
  return 0;
}
