// Prometheus metrics of real ps-server and ps-worker processes: scraped over
// HTTP while they work (counters move, histograms fill, names follow
// pskit_<process>_<what>_<unit>), by a real Prometheus (Debian's package),
// and pushed to a real Pushgateway.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "client/client.h"
#include "common/http_get.h"
#include "gtest/gtest.h"
#include "tests/testing/child_server.h"
#include "tests/testing/cluster.h"
#include "tests/testing/status_matchers.h"

namespace pskit {
namespace {

using testing::ChildServer;

// The port of "... metrics on http://127.0.0.1:PORT/metrics", or 0.
int MetricsPort(const std::string& line) {
  const size_t at = line.find("metrics on http://127.0.0.1:");
  if (at == std::string::npos) return 0;
  return std::atoi(line.c_str() + at + std::strlen("metrics on http://127.0.0.1:"));
}

absl::StatusOr<std::string> Scrape(int port) {
  return HttpGet("127.0.0.1", port, "/metrics", absl::Seconds(10));
}

double Sample(const std::string& text, const std::string& name,
              const std::vector<std::string>& labels = {}) {
  absl::StatusOr<double> v = FindSample(text, name, labels);
  return v.ok() ? *v : -1;
}

// A TCP port on 127.0.0.1 that nothing listens on now (for programs that
// cannot report the port they picked).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// Every "# TYPE name kind" of `text` must follow the naming convention.
void ExpectConventionalNames(const std::string& text, const std::string& process,
                             std::set<std::string>* names) {
  const std::regex shape("pskit_" + process + "_[a-z0-9_]+");
  int pskit_families = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::StartsWith(line, "# TYPE ")) continue;
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    ASSERT_EQ(f.size(), 4u) << line;
    const std::string& name = f[2];
    const std::string& kind = f[3];
    if (!absl::StartsWith(name, "pskit_")) continue;
    ++pskit_families;
    names->insert(name);
    EXPECT_TRUE(std::regex_match(name, shape)) << name;
    EXPECT_EQ(absl::EndsWith(name, "_total"), kind == "counter") << name;
    if (absl::StrContains(name, "duration")) {
      EXPECT_EQ(kind, "histogram") << name;
      EXPECT_TRUE(absl::EndsWith(name, "_seconds")) << name;
    }
  }
  EXPECT_GE(pskit_families, 4) << text;
}

TEST(Metrics, ShardAndWorkerAreScrapedWhileTheyTrain) {
  ChildServer server({"--listen", "127.0.0.1:0", "--metrics_port", "0",
                      "--log_level", "warn"});
  const std::string address = server.address();
  ASSERT_FALSE(address.empty()) << server.first_line();
  const int server_port = MetricsPort(server.ReadLine());
  ASSERT_GT(server_port, 0);

  ChildServer worker("ps-worker",
                     {"--shards", address, "--metrics_port", "0",
                      "--metrics_host", "127.0.0.1", "--max_seconds", "4",
                      "--log_interval_s", "100", "--log_level", "warn"},
                     /*merge_stderr=*/false);
  const int worker_port = MetricsPort(worker.first_line());
  ASSERT_GT(worker_port, 0) << worker.first_line();

  // Wait for training to start, then scrape twice.
  std::string w1;
  for (int i = 0; i < 200; ++i) {
    ASSERT_OK_AND_ASSIGN(w1, Scrape(worker_port));
    if (Sample(w1, "pskit_worker_steps_total") > 0) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_OK_AND_ASSIGN(const std::string s1, Scrape(server_port));
  {  // An evaluator's report, so that the shard's eval gauges appear.
    ASSERT_OK_AND_ASSIGN(auto client, Client::Connect({address}, {}));
    v1::Evaluation e;
    e.set_time_unix_ms(absl::ToUnixMillis(absl::Now()));
    e.set_accuracy(0.5);
    e.set_loss(1.25);
    ASSERT_OK(client->ReportEvaluation("default", e));
  }
  absl::SleepFor(absl::Milliseconds(500));
  ASSERT_OK_AND_ASSIGN(const std::string w2, Scrape(worker_port));
  ASSERT_OK_AND_ASSIGN(const std::string s2, Scrape(server_port));

  // Counters move.
  EXPECT_GT(Sample(w2, "pskit_worker_steps_total"),
            Sample(w1, "pskit_worker_steps_total"));
  EXPECT_GT(Sample(w2, "pskit_worker_samples_total"),
            Sample(w1, "pskit_worker_samples_total"));
  const std::vector<std::string> pushpull_ok = {
      "method=\"ParameterServer/PushPull\"", "code=\"OK\""};
  EXPECT_GT(Sample(s2, "pskit_server_requests_total", pushpull_ok),
            Sample(s1, "pskit_server_requests_total", pushpull_ok));
  EXPECT_GT(Sample(s2, "pskit_server_updates_applied_total",
                   {"namespace=\"default\""}),
            Sample(s1, "pskit_server_updates_applied_total",
                   {"namespace=\"default\""}));
  EXPECT_GT(Sample(s2, "pskit_server_received_bytes_total",
                   {"method=\"ParameterServer/PushPull\""}),
            0);
  EXPECT_GT(Sample(s2, "pskit_server_sent_bytes_total",
                   {"method=\"ParameterServer/PushPull\""}),
            0);
  // Histograms fill.
  EXPECT_GT(Sample(w2, "pskit_worker_phase_duration_seconds_count",
                   {"phase=\"compute\""}), 0);
  EXPECT_GT(Sample(w2, "pskit_worker_phase_duration_seconds_count",
                   {"phase=\"pushpull\""}), 0);
  EXPECT_GT(Sample(s2, "pskit_server_request_duration_seconds_count",
                   {"method=\"ParameterServer/PushPull\""}), 0);
  EXPECT_GT(Sample(s2, "pskit_server_staleness_updates_count",
                   {"namespace=\"default\""}), 0);
  // State read at scrape time.
  EXPECT_EQ(Sample(s2, "pskit_server_active_workers"), 1);
  EXPECT_GT(Sample(s2, "pskit_server_parameters", {"namespace=\"default\""}), 0);
  EXPECT_GT(Sample(w2, "pskit_worker_loss"), 0);
  EXPECT_EQ(Sample(s2, "pskit_server_eval_accuracy_ratio"), 0.5);
  EXPECT_EQ(Sample(s2, "pskit_server_eval_loss"), 1.25);

  std::set<std::string> names;
  ExpectConventionalNames(s2, "server", &names);
  ExpectConventionalNames(w2, "worker", &names);

  // Every metric a Grafana panel asks for is one the processes export.
  std::ifstream in(std::string(PSKIT_SOURCE_DIR) +
                   "/deploy/grafana/pskit-dashboard.json");
  ASSERT_TRUE(in.good()) << "deploy/grafana/pskit-dashboard.json is missing";
  const std::string dashboard((std::istreambuf_iterator<char>(in)), {});
  const std::regex expr_re("\"expr\": \"([^\"\\\\]|\\\\.)*\"");
  const std::regex metric_re("pskit_[a-z0-9_]+");
  int exprs = 0;
  for (auto e = std::sregex_iterator(dashboard.begin(), dashboard.end(), expr_re);
       e != std::sregex_iterator(); ++e) {
    ++exprs;
    const std::string expr = e->str();
    int metrics_named = 0;
    for (auto m = std::sregex_iterator(expr.begin(), expr.end(), metric_re);
         m != std::sregex_iterator(); ++m) {
      ++metrics_named;
      std::string name = m->str();
      for (const char* suffix : {"_bucket", "_count", "_sum"}) {
        if (!names.contains(name) && absl::EndsWith(name, suffix)) {
          name.resize(name.size() - std::strlen(suffix));
        }
      }
      EXPECT_TRUE(names.contains(name))
          << "the dashboard asks for " << m->str()
          << ", which no pskit process exports (in " << expr << ")";
    }
    EXPECT_GT(metrics_named, 0) << expr;
  }
  EXPECT_GE(exprs, 15);

  // Anything but /metrics is a 404 that says where the metrics are.
  EXPECT_EQ(HttpGet("127.0.0.1", server_port, "/", absl::Seconds(5))
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);

  EXPECT_EQ(worker.StopWith(0), 0);
  EXPECT_EQ(server.StopWith(SIGTERM), 0);
}

TEST(Metrics, BusyMetricsPortIsAClearError) {
  ChildServer first({"--listen", "127.0.0.1:0", "--metrics_port", "0",
                     "--log_level", "warn"});
  ASSERT_FALSE(first.address().empty());
  const int port = MetricsPort(first.ReadLine());
  ASSERT_GT(port, 0);
  ChildServer second("ps-server",
                     {"--listen", "127.0.0.1:0", "--metrics_port",
                      std::to_string(port), "--log_level", "warn"},
                     /*merge_stderr=*/true);
  EXPECT_TRUE(absl::StrContains(second.first_line(), "cannot serve metrics"))
      << second.first_line();
  EXPECT_EQ(second.StopWith(0), 1);
  EXPECT_EQ(first.StopWith(SIGTERM), 0);
}

TEST(Metrics, PrometheusConfigIsValid) {
  const std::string promtool = "/usr/bin/promtool";
  if (access(promtool.c_str(), X_OK) != 0) {
    GTEST_SKIP() << "promtool (Debian's prometheus package) is not installed";
  }
  ChildServer check(promtool,
                    {"check", "config",
                     std::string(PSKIT_SOURCE_DIR) +
                         "/deploy/prometheus/prometheus.yml"},
                    /*merge_stderr=*/true);
  std::string all = check.first_line();
  for (std::string l = check.ReadLine(); !l.empty(); l = check.ReadLine()) {
    all += "\n" + l;
  }
  EXPECT_EQ(check.StopWith(0), 0) << all;
  EXPECT_TRUE(absl::StrContains(all, "SUCCESS")) << all;
}

TEST(Metrics, RealPrometheusScrapesAShard) {
  const std::string prometheus = "/usr/bin/prometheus";
  if (access(prometheus.c_str(), X_OK) != 0) {
    GTEST_SKIP() << "Debian's prometheus package is not installed "
                    "(scripts/install-deps.sh installs it)";
  }
  ChildServer server({"--listen", "127.0.0.1:0", "--metrics_port", "0",
                      "--log_level", "warn"});
  ASSERT_FALSE(server.address().empty());
  const int metrics_port = MetricsPort(server.ReadLine());
  ASSERT_GT(metrics_port, 0);

  testing::TempDir dir;
  const std::string config = dir.path() + "/prometheus.yml";
  std::ofstream(config) << "global:\n  scrape_interval: 1s\n"
                           "scrape_configs:\n  - job_name: pskit-server\n"
                           "    static_configs:\n      - targets: ['127.0.0.1:"
                        << metrics_port << "']\n";
  const int web_port = FreePort();
  ChildServer prom(prometheus,
                   {"--config.file=" + config,
                    "--storage.tsdb.path=" + dir.path() + "/tsdb",
                    absl::StrCat("--web.listen-address=127.0.0.1:", web_port)},
                   /*merge_stderr=*/true);
  std::string answer;
  const absl::Time deadline = absl::Now() + absl::Seconds(90);
  while (absl::Now() < deadline) {
    absl::StatusOr<std::string> r =
        HttpGet("127.0.0.1", web_port,
                "/api/v1/query?query=pskit_server_active_workers",
                absl::Seconds(5));
    if (r.ok() && absl::StrContains(*r, "\"job\":\"pskit-server\"")) {
      answer = *r;
      break;
    }
    absl::SleepFor(absl::Milliseconds(250));
  }
  EXPECT_TRUE(absl::StrContains(answer, "\"__name__\":\"pskit_server_active_workers\""))
      << "Prometheus never returned a pskit_server series; last answer: "
      << answer;
  EXPECT_TRUE(absl::StrContains(answer, "\"shard\":\"0\"")) << answer;
  prom.StopWith(SIGTERM);
  EXPECT_EQ(server.StopWith(SIGTERM), 0);
}

TEST(Metrics, WorkerPushesToAPushgateway) {
  const std::string gateway = "/usr/bin/prometheus-pushgateway";
  if (access(gateway.c_str(), X_OK) != 0) {
    GTEST_SKIP() << "Debian's prometheus-pushgateway package is not installed "
                    "(scripts/install-deps.sh installs it)";
  }
  const int port = FreePort();
  ChildServer gw(gateway,
                 {absl::StrCat("--web.listen-address=127.0.0.1:", port)},
                 /*merge_stderr=*/true);
  // Wait until the gateway answers.
  for (int i = 0; i < 200; ++i) {
    if (HttpGet("127.0.0.1", port, "/metrics", absl::Seconds(2)).ok()) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  ChildServer worker(
      "ps-worker",
      {"--algorithm", "local", "--max_seconds", "1", "--log_level", "warn",
       "--log_interval_s", "100", "--rank", "3", "--world", "4",
       "--pushgateway", absl::StrCat("http://127.0.0.1:", port),
       "--pushgateway_interval_s", "0.3"},
      /*merge_stderr=*/true);
  EXPECT_EQ(worker.StopWith(0), 0) << worker.first_line();
  ASSERT_OK_AND_ASSIGN(std::string text,
                       HttpGet("127.0.0.1", port, "/metrics", absl::Seconds(5)));
  // The final push (at exit) carries every step.
  EXPECT_GT(Sample(text, "pskit_worker_steps_total",
                   {"job=\"pskit-worker\"", "rank=\"3\""}),
            100)
      << text;
  gw.StopWith(SIGTERM);
}

// A gateway that takes the connection and never answers costs the worker a
// few seconds of deadlines, not its exit (prometheus-cpp's Gateway waited
// for minutes).
TEST(Metrics, SilentPushgatewayDoesNotHoldTheWorker) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(listen(fd, 16), 0);  // connections queue; nothing ever answers
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ChildServer worker(
      "ps-worker",
      {"--algorithm", "local", "--max_seconds", "1", "--log_interval_s", "100",
       "--pushgateway", absl::StrCat("http://127.0.0.1:", ntohs(a.sin_port)),
       "--pushgateway_interval_s", "0.3"},
      /*merge_stderr=*/true);
  std::string all = worker.first_line();
  for (std::string l = worker.ReadLine(); !l.empty(); l = worker.ReadLine()) {
    all += "\n" + l;
  }
  EXPECT_EQ(worker.StopWith(0), 0) << all;
  EXPECT_TRUE(absl::StrContains(all, "metrics push to")) << all;
  EXPECT_TRUE(absl::StrContains(all, "worker summary")) << all;
  close(fd);
}

TEST(Metrics, BadPushgatewayUrlIsAUsageError) {
  ChildServer worker("ps-worker",
                     {"--algorithm", "local", "--max_seconds", "1",
                      "--pushgateway", "pushgw:9091"},
                     /*merge_stderr=*/true);
  std::string all = worker.first_line();
  for (std::string l = worker.ReadLine(); !l.empty(); l = worker.ReadLine()) {
    all += "\n" + l;
  }
  EXPECT_TRUE(absl::StrContains(all, "must be http://HOST:PORT")) << all;
  EXPECT_EQ(worker.StopWith(0), 2);
}

}  // namespace
}  // namespace pskit
