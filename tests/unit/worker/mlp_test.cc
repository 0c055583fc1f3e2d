#include "worker/model/mlp.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "worker/data/dataset.h"

namespace pskit::worker {
namespace {

struct Case {
  const char* activation;
  const char* loss;
};

// Every gradient the backward pass computes matches central finite
// differences of the loss, for every activation and loss (CPU backend).
class GradientCheck : public ::testing::TestWithParam<Case> {};

TEST_P(GradientCheck, MatchesFiniteDifferences) {
  ASSERT_OK_AND_ASSIGN(MlpConfig config,
                       ParseMlpConfig("5,7,6,3", GetParam().activation,
                                      GetParam().loss));
  std::unique_ptr<Backend> be = MakeCpuBackend(1);
  const int batch = 4;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Mlp> mlp, Mlp::Create(config, be.get(), batch));
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 0.7f);
  std::vector<std::vector<float>> params(mlp->num_params());
  for (size_t i = 0; i < mlp->num_params(); ++i) {
    params[i].resize(mlp->param_size(i));
    for (float& p : params[i]) p = normal(rng);
    ASSERT_OK(be->CopyToDevice(params[i].data(), mlp->param(i), params[i].size()));
  }
  std::vector<float> x(batch * 5);
  for (float& v : x) v = normal(rng);
  ASSERT_OK_AND_ASSIGN(DeviceBuffer xd, be->Allocate(x.size()));
  ASSERT_OK(be->CopyToDevice(x.data(), xd.data(), x.size()));
  const std::vector<int32_t> labels = {0, 2, 1, 2};

  ASSERT_OK(mlp->ForwardBackward(xd.data(), labels));
  std::vector<std::vector<float>> grads(mlp->num_params());
  for (size_t i = 0; i < mlp->num_params(); ++i) {
    grads[i].resize(mlp->param_size(i));
    ASSERT_OK(be->CopyToHost(mlp->grad(i), grads[i].data(), grads[i].size()));
  }
  auto loss_at = [&](size_t i, size_t j, float value) {
    float saved = params[i][j];
    params[i][j] = value;
    EXPECT_OK(be->CopyToDevice(params[i].data(), mlp->param(i), params[i].size()));
    absl::StatusOr<StepResult> r = mlp->Evaluate(xd.data(), labels);
    params[i][j] = saved;
    EXPECT_OK(be->CopyToDevice(params[i].data(), mlp->param(i), params[i].size()));
    return r.ok() ? double{r->loss} : NAN;
  };
  const float eps = 1e-2f;
  int checked = 0;
  for (size_t i = 0; i < mlp->num_params(); ++i) {
    for (size_t j = 0; j < params[i].size(); ++j) {
      const float p = params[i][j];
      const double fd = (loss_at(i, j, p + eps) - loss_at(i, j, p - eps)) / (2 * eps);
      // Tolerance: O(eps^2) truncation plus float round-off in the loss.
      EXPECT_NEAR(grads[i][j], fd, 2e-3 + 2e-2 * std::abs(fd))
          << mlp->specs()[i].name() << "[" << j << "]";
      ++checked;
    }
  }
  EXPECT_EQ(checked, 5 * 7 + 7 + 7 * 6 + 6 + 6 * 3 + 3);
}

INSTANTIATE_TEST_SUITE_P(
    AllActivationsAndLosses, GradientCheck,
    ::testing::Values(Case{"relu", "xent"}, Case{"tanh", "xent"},
                      Case{"sigmoid", "xent"}, Case{"relu", "mse"},
                      Case{"tanh", "mse"}, Case{"sigmoid", "mse"}),
    [](const auto& info) {
      return std::string(info.param.activation) + "_" + info.param.loss;
    });

TEST(Mlp, DeclaresItsParametersWithFittingInitializers) {
  ASSERT_OK_AND_ASSIGN(MlpConfig config, ParseMlpConfig("784,512,10", "relu", "xent"));
  std::unique_ptr<Backend> be = MakeCpuBackend(1);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Mlp> mlp, Mlp::Create(config, be.get(), 8));
  ASSERT_EQ(mlp->specs().size(), 4u);
  EXPECT_EQ(mlp->specs()[0].name(), "fc0/w");
  EXPECT_EQ(mlp->specs()[0].shape(0), 784);
  EXPECT_EQ(mlp->specs()[0].shape(1), 512);
  EXPECT_EQ(mlp->specs()[0].init().kind(), v1::INIT_HE_NORMAL);
  EXPECT_EQ(mlp->specs()[1].name(), "fc0/b");
  EXPECT_EQ(mlp->specs()[1].init().kind(), v1::INIT_ZEROS);
  EXPECT_EQ(mlp->specs()[2].init().kind(), v1::INIT_GLOROT_UNIFORM);  // output
  EXPECT_EQ(mlp->param_size(2), 5120u);
}

TEST(Mlp, RefusesBadConfigsAndBatches) {
  EXPECT_EQ(ParseMlpConfig("784", "relu", "xent").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseMlpConfig("784,0,10", "relu", "xent").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseMlpConfig("784,x,10", "relu", "xent").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseMlpConfig("784,10", "swish", "xent").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseMlpConfig("784,10", "relu", "hinge").status().code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_OK_AND_ASSIGN(MlpConfig config, ParseMlpConfig("3,2", "relu", "xent"));
  std::unique_ptr<Backend> be = MakeCpuBackend(1);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Mlp> mlp, Mlp::Create(config, be.get(), 2));
  ASSERT_OK_AND_ASSIGN(DeviceBuffer x, be->Allocate(9));
  EXPECT_EQ(mlp->ForwardBackward(x.data(), {0, 1, 0}).status().code(),
            absl::StatusCode::kInvalidArgument);  // 3 rows > max batch 2
  EXPECT_EQ(mlp->ForwardBackward(x.data(), {0, 2}).status().code(),
            absl::StatusCode::kInvalidArgument);  // label 2 of 2 classes
  EXPECT_OK(mlp->ForwardBackward(x.data(), {0, 1}));
}

TEST(CpuBackend, SoftmaxCrossEntropyKnownValues) {
  std::unique_ptr<Backend> be = MakeCpuBackend(1);
  // Uniform logits over 4 classes: loss ln 4, gradient (1/4 - onehot) / rows.
  std::vector<float> logits = {0, 0, 0, 0, 1000, 0, 0, 0}, d(8);
  std::vector<int32_t> labels = {1, 0};
  float loss;
  int correct;
  ASSERT_OK(be->SoftmaxCrossEntropy(logits.data(), labels.data(), 2, 4, d.data(),
                                    &loss, &correct));
  EXPECT_NEAR(loss, std::log(4.0) / 2, 1e-6);  // row 2 is certain: loss 0
  EXPECT_EQ(correct, 1);                       // row 1's argmax is class 0
  EXPECT_NEAR(d[0], 0.125, 1e-6);
  EXPECT_NEAR(d[1], (0.25 - 1) / 2, 1e-6);
  EXPECT_NEAR(d[4], 0.0, 1e-6);
}

// The optimizer steps keep downpour's running gradient sum in their own
// pass: the weights and slots come out as without it, bit for bit, and the
// sum is the gradients' sum from the restart on (whatever it held before).
TEST(CpuBackend, OptimizerStepsKeepTheGradientSum) {
  std::unique_ptr<Backend> be = MakeCpuBackend(1);
  const size_t n = 37;  // not a whole number of vectors
  for (int opt = 0; opt < 3; ++opt) {  // sgd, nesterov, adam
    SCOPED_TRACE(opt);
    std::vector<float> w(n), m(n), v(n), w2, m2, v2, sum(n, 123.0f), g(n);
    for (size_t j = 0; j < n; ++j) w[j] = 0.01f * static_cast<float>(j);
    w2 = w;
    m2 = m;
    v2 = v;
    std::vector<float> expected(n, 0.0f);
    for (int step = 1; step <= 3; ++step) {
      for (size_t j = 0; j < n; ++j) {
        g[j] = 0.37f * static_cast<float>(step) - 0.05f * static_cast<float>(j);
        expected[j] = step == 1 ? g[j] : expected[j] + g[j];
      }
      const bool restart = step == 1;
      if (opt < 2) {
        const float mu = opt == 0 ? 0.0f : 0.9f;
        ASSERT_OK(be->MomentumStep(0.1f, mu, true, g.data(), m.data(),
                                   w.data(), n, sum.data(), restart));
        ASSERT_OK(be->MomentumStep(0.1f, mu, true, g.data(), m2.data(),
                                   w2.data(), n, nullptr, false));
      } else {
        ASSERT_OK(be->AdamStep(1e-3f, 0.9f, 0.999f, 1e-8f, step, g.data(),
                               m.data(), v.data(), w.data(), n, sum.data(),
                               restart));
        ASSERT_OK(be->AdamStep(1e-3f, 0.9f, 0.999f, 1e-8f, step, g.data(),
                               m2.data(), v2.data(), w2.data(), n, nullptr,
                               false));
      }
    }
    EXPECT_EQ(w, w2);
    EXPECT_EQ(m, m2);
    EXPECT_EQ(v, v2);
    EXPECT_EQ(sum, expected);
  }
}

// Plain SGD on the CPU learns a teacher network's labels: the end-to-end
// path (data, forward, backward, update) works.
TEST(Mlp, LearnsATeacherLocally) {
  const Dataset train = MakeTeacherDataset(1, 2, 4000, 20, 4);
  const Dataset test = MakeTeacherDataset(1, 3, 1000, 20, 4);
  ASSERT_OK_AND_ASSIGN(MlpConfig config, ParseMlpConfig("20,64,4", "relu", "xent"));
  std::unique_ptr<Backend> be = MakeCpuBackend(1);
  const int batch = 32;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Mlp> mlp, Mlp::Create(config, be.get(), 1000));
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 0.2f);
  for (size_t i = 0; i < mlp->num_params(); ++i) {
    std::vector<float> p(mlp->param_size(i));
    if (i % 2 == 0) for (float& v : p) v = normal(rng);
    ASSERT_OK(be->CopyToDevice(p.data(), mlp->param(i), p.size()));
  }
  ASSERT_OK_AND_ASSIGN(DeviceBuffer x, be->Allocate(1000 * 20));
  auto accuracy = [&]() {
    EXPECT_OK(be->CopyToDevice(test.features.data(), x.data(), test.features.size()));
    absl::StatusOr<StepResult> r = mlp->Evaluate(x.data(), test.labels);
    return r.ok() ? r->correct / 1000.0 : 0.0;
  };
  const double before = accuracy();
  for (int epoch = 0; epoch < 20; ++epoch) {
    for (int64_t b = 0; b + batch <= train.size(); b += batch) {
      ASSERT_OK(be->CopyToDevice(train.row(b), x.data(), batch * 20));
      ASSERT_OK(mlp->ForwardBackward(
          x.data(), absl::MakeConstSpan(train.labels).subspan(b, batch)));
      for (size_t i = 0; i < mlp->num_params(); ++i) {
        ASSERT_OK(be->Axpy(-0.1f, mlp->grad(i), mlp->param(i), mlp->param_size(i)));
      }
    }
  }
  const double after = accuracy();
  EXPECT_GT(after, 0.75) << "before training: " << before;  // chance: 0.25
  EXPECT_GT(after, before + 0.3);
}

}  // namespace
}  // namespace pskit::worker
