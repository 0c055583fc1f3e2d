// Every CUDA backend op against the CPU backend on the same inputs. Skipped,
// with a message, where there is no CUDA device.
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "worker/backend/cuda_backend.h"
#include "worker/model/mlp.h"

namespace pskit::worker {
namespace {

class CudaVsCpu : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Backend>> gpu = MakeCudaBackend(0);
    if (!gpu.ok()) GTEST_SKIP() << "no CUDA device: " << gpu.status();
    gpu_ = std::move(*gpu);
    cpu_ = MakeCpuBackend(1);
  }
  std::vector<float> Random(size_t n, float scale = 1.0f) {
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (float& x : v) x = d(rng_);
    return v;
  }
  // Copies `host` into a new buffer on `be`.
  DeviceBuffer On(Backend* be, const std::vector<float>& host) {
    DeviceBuffer b = be->Allocate(host.size()).value();
    EXPECT_OK(be->CopyToDevice(host.data(), b.data(), host.size()));
    return b;
  }
  std::vector<float> Back(Backend* be, const DeviceBuffer& b) {
    std::vector<float> host(b.size());
    EXPECT_OK(be->CopyToHost(b.data(), host.data(), host.size()));
    return host;
  }
  // Tolerance: float rounding differs in order of operations (GEMM sums of
  // k products, transcendental functions), never in more than ~1e-4
  // relative for these sizes.
  void ExpectClose(const std::vector<float>& a, const std::vector<float>& b,
                   float tol, const char* what) {
    ASSERT_EQ(a.size(), b.size()) << what;
    for (size_t i = 0; i < a.size(); ++i) {
      ASSERT_NEAR(a[i], b[i], tol * (1 + std::abs(b[i]))) << what << " [" << i << "]";
    }
  }

  std::mt19937 rng_{3};
  std::unique_ptr<Backend> gpu_, cpu_;
};

TEST_F(CudaVsCpu, GemmAllTransposes) {
  const int m = 37, n = 29, k = 53;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const std::vector<float> a = Random(m * k), b = Random(k * n), c = Random(m * n);
      DeviceBuffer ga = On(gpu_.get(), a), gb = On(gpu_.get(), b), gc = On(gpu_.get(), c);
      DeviceBuffer ca = On(cpu_.get(), a), cb = On(cpu_.get(), b), cc = On(cpu_.get(), c);
      ASSERT_OK(gpu_->Gemm(ta, tb, m, n, k, 0.7f, ga.data(), gb.data(), 0.3f, gc.data()));
      ASSERT_OK(cpu_->Gemm(ta, tb, m, n, k, 0.7f, ca.data(), cb.data(), 0.3f, cc.data()));
      ExpectClose(Back(gpu_.get(), gc), Back(cpu_.get(), cc), 1e-4f, "gemm");
    }
  }
}

TEST_F(CudaVsCpu, ElementwiseOpsAndSteps) {
  const int rows = 19, cols = 23;
  const size_t n = rows * cols;
  const std::vector<float> x = Random(n), b = Random(cols), g = Random(n, 0.1f);
  for (Activation f : {Activation::kRelu, Activation::kTanh, Activation::kSigmoid,
                       Activation::kIdentity}) {
    DeviceBuffer gx = On(gpu_.get(), x), cx = On(cpu_.get(), x);
    ASSERT_OK(gpu_->Activate(f, gx.data(), gx.data(), n));
    ASSERT_OK(cpu_->Activate(f, cx.data(), cx.data(), n));
    ExpectClose(Back(gpu_.get(), gx), Back(cpu_.get(), cx), 1e-5f, "activate");
    DeviceBuffer gd = On(gpu_.get(), g), cd = On(cpu_.get(), g);
    ASSERT_OK(gpu_->ActivateBackward(f, gx.data(), gd.data(), gd.data(), n));
    ASSERT_OK(cpu_->ActivateBackward(f, cx.data(), cd.data(), cd.data(), n));
    ExpectClose(Back(gpu_.get(), gd), Back(cpu_.get(), cd), 1e-5f, "activate backward");
  }
  DeviceBuffer gy = On(gpu_.get(), x), cy = On(cpu_.get(), x);
  DeviceBuffer gbias = On(gpu_.get(), b), cbias = On(cpu_.get(), b);
  ASSERT_OK(gpu_->AddBias(gy.data(), gbias.data(), rows, cols));
  ASSERT_OK(cpu_->AddBias(cy.data(), cbias.data(), rows, cols));
  ExpectClose(Back(gpu_.get(), gy), Back(cpu_.get(), cy), 1e-6f, "bias");
  ASSERT_OK(gpu_->ColumnSums(gy.data(), rows, cols, gbias.data()));
  ASSERT_OK(cpu_->ColumnSums(cy.data(), rows, cols, cbias.data()));
  ExpectClose(Back(gpu_.get(), gbias), Back(cpu_.get(), cbias), 1e-5f, "column sums");

  for (int opt = 0; opt < 3; ++opt) {
    DeviceBuffer gw = On(gpu_.get(), x), cw = On(cpu_.get(), x);
    DeviceBuffer gg = On(gpu_.get(), g), cg = On(cpu_.get(), g);
    DeviceBuffer gm = gpu_->Allocate(n).value(), cm = cpu_->Allocate(n).value();
    DeviceBuffer gv = gpu_->Allocate(n).value(), cv = cpu_->Allocate(n).value();
    // The running gradient sum: restarted on step 1 (over the values x),
    // added to after.
    DeviceBuffer gs = On(gpu_.get(), x), cs = On(cpu_.get(), x);
    for (int step = 1; step <= 3; ++step) {
      const bool restart = step == 1;
      if (opt == 0) {
        ASSERT_OK(gpu_->Axpy(-0.1f, gg.data(), gw.data(), n));
        ASSERT_OK(cpu_->Axpy(-0.1f, cg.data(), cw.data(), n));
        ASSERT_OK(gpu_->MomentumStep(0.1f, 0.0f, false, gg.data(), gm.data(),
                                     gm.data(), n, gs.data(), restart));
        ASSERT_OK(cpu_->MomentumStep(0.1f, 0.0f, false, cg.data(), cm.data(),
                                     cm.data(), n, cs.data(), restart));
      } else if (opt == 1) {
        ASSERT_OK(gpu_->MomentumStep(0.1f, 0.9f, true, gg.data(), gm.data(),
                                     gw.data(), n, gs.data(), restart));
        ASSERT_OK(cpu_->MomentumStep(0.1f, 0.9f, true, cg.data(), cm.data(),
                                     cw.data(), n, cs.data(), restart));
      } else {
        ASSERT_OK(gpu_->AdamStep(1e-3f, 0.9f, 0.999f, 1e-8f, step, gg.data(), gm.data(),
                                 gv.data(), gw.data(), n, gs.data(), restart));
        ASSERT_OK(cpu_->AdamStep(1e-3f, 0.9f, 0.999f, 1e-8f, step, cg.data(), cm.data(),
                                 cv.data(), cw.data(), n, cs.data(), restart));
      }
    }
    ExpectClose(Back(gpu_.get(), gs), Back(cpu_.get(), cs), 1e-6f, "gradient sum");
    ExpectClose(Back(gpu_.get(), gw), Back(cpu_.get(), cw), 1e-5f, "optimizer step");
  }
}

TEST_F(CudaVsCpu, LossesAndAWholeModelStep) {
  // A full forward/backward pass: losses, GEMMs, bias, activations together.
  for (const char* loss : {"xent", "mse"}) {
    const MlpConfig config = ParseMlpConfig("20,32,16,5", "tanh", loss).value();
    const int batch = 11;
    ASSERT_OK_AND_ASSIGN(auto gm, Mlp::Create(config, gpu_.get(), batch));
    ASSERT_OK_AND_ASSIGN(auto cm, Mlp::Create(config, cpu_.get(), batch));
    for (size_t i = 0; i < gm->num_params(); ++i) {
      const std::vector<float> p = Random(gm->param_size(i), 0.3f);
      ASSERT_OK(gpu_->CopyToDevice(p.data(), gm->param(i), p.size()));
      ASSERT_OK(cpu_->CopyToDevice(p.data(), cm->param(i), p.size()));
    }
    const std::vector<float> x = Random(batch * 20);
    DeviceBuffer gx = On(gpu_.get(), x), cx = On(cpu_.get(), x);
    std::vector<int32_t> labels(batch);
    for (int r = 0; r < batch; ++r) labels[r] = r % 5;
    ASSERT_OK_AND_ASSIGN(StepResult gr, gm->ForwardBackward(gx.data(), labels));
    ASSERT_OK_AND_ASSIGN(StepResult cr, cm->ForwardBackward(cx.data(), labels));
    EXPECT_NEAR(gr.loss, cr.loss, 1e-4 * (1 + std::abs(cr.loss))) << loss;
    EXPECT_EQ(gr.correct, cr.correct) << loss;
    for (size_t i = 0; i < gm->num_params(); ++i) {
      std::vector<float> gg(gm->param_size(i)), cg(cm->param_size(i));
      ASSERT_OK(gpu_->CopyToHost(gm->grad(i), gg.data(), gg.size()));
      ASSERT_OK(cpu_->CopyToHost(cm->grad(i), cg.data(), cg.size()));
      ExpectClose(gg, cg, 1e-4f, loss);
    }
  }
}

}  // namespace
}  // namespace pskit::worker
