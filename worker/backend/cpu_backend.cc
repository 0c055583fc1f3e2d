// The CPU backend: OpenBLAS sgemm for the matrix products, plain loops the
// compiler vectorises for everything else.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>

#include "absl/strings/str_cat.h"
#include "common/vector_clones.h"
#include "worker/backend/backend.h"

namespace pskit::worker {
namespace {

// The optimizer loops, free functions so that they can be cloned for wider
// vectors (common/vector_clones.h). Contract: no argument aliases another.
PSKIT_VECTOR_CLONES void AxpyLoop(float alpha, const float* __restrict x,
                                  float* __restrict y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// How a step treats the running gradient sum (Backend::AdamStep).
enum class SumMode { kNone, kAdd, kRestart };

inline void Sum(SumMode mode, float gi, float* __restrict sum, size_t i) {
  if (mode == SumMode::kAdd) sum[i] += gi;
  if (mode == SumMode::kRestart) sum[i] = gi;
}

// Mode is a template argument, so that each loop has no branch in it.
template <SumMode kMode>
inline void MomentumLoopWith(float lr, float mu, bool nesterov,
                             const float* __restrict g, float* __restrict v,
                             float* __restrict w, float* __restrict sum,
                             size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const float vi = mu * v[i] + g[i];
    v[i] = vi;
    w[i] -= lr * (nesterov ? g[i] + mu * vi : vi);
    Sum(kMode, g[i], sum, i);
  }
}

template <SumMode kMode>
inline void AdamLoopWith(float lr, float beta1, float beta2, float eps,
                         float c1, float c2, const float* __restrict g,
                         float* __restrict m, float* __restrict v,
                         float* __restrict w, float* __restrict sum,
                         size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const float mi = beta1 * m[i] + (1.0f - beta1) * g[i];
    const float vi = beta2 * v[i] + (1.0f - beta2) * g[i] * g[i];
    m[i] = mi;
    v[i] = vi;
    w[i] -= lr * (mi * c1) / (std::sqrt(vi * c2) + eps);
    Sum(kMode, g[i], sum, i);
  }
}

SumMode ModeOf(const float* sum, bool restart) {
  if (sum == nullptr) return SumMode::kNone;
  return restart ? SumMode::kRestart : SumMode::kAdd;
}

PSKIT_VECTOR_CLONES void MomentumLoop(float lr, float mu, bool nesterov,
                                      const float* __restrict g,
                                      float* __restrict v,
                                      float* __restrict w,
                                      float* __restrict sum, SumMode mode,
                                      size_t n) {
  switch (mode) {
    case SumMode::kNone:
      return MomentumLoopWith<SumMode::kNone>(lr, mu, nesterov, g, v, w, sum, n);
    case SumMode::kAdd:
      return MomentumLoopWith<SumMode::kAdd>(lr, mu, nesterov, g, v, w, sum, n);
    case SumMode::kRestart:
      return MomentumLoopWith<SumMode::kRestart>(lr, mu, nesterov, g, v, w,
                                                 sum, n);
  }
}

PSKIT_VECTOR_CLONES void AdamLoop(float lr, float beta1, float beta2,
                                  float eps, float c1, float c2,
                                  const float* __restrict g,
                                  float* __restrict m, float* __restrict v,
                                  float* __restrict w, float* __restrict sum,
                                  SumMode mode, size_t n) {
  switch (mode) {
    case SumMode::kNone:
      return AdamLoopWith<SumMode::kNone>(lr, beta1, beta2, eps, c1, c2, g, m,
                                          v, w, sum, n);
    case SumMode::kAdd:
      return AdamLoopWith<SumMode::kAdd>(lr, beta1, beta2, eps, c1, c2, g, m,
                                         v, w, sum, n);
    case SumMode::kRestart:
      return AdamLoopWith<SumMode::kRestart>(lr, beta1, beta2, eps, c1, c2, g,
                                             m, v, w, sum, n);
  }
}

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }

  absl::StatusOr<DeviceBuffer> Allocate(size_t n) override {
    if (n == 0) return DeviceBuffer(this, nullptr, 0);
    // 64-byte alignment: whole cache lines, and aligned vector loads.
    void* p = std::aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64);
    if (p == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot allocate ", n, " floats on the CPU"));
    }
    std::memset(p, 0, n * sizeof(float));
    return DeviceBuffer(this, static_cast<float*>(p), n);
  }
  absl::Status CopyToDevice(const float* host, float* device,
                            size_t n) override {
    if (n > 0) std::memcpy(device, host, n * sizeof(float));
    return absl::OkStatus();
  }
  absl::Status CopyToHost(const float* device, float* host,
                          size_t n) override {
    if (n > 0) std::memcpy(host, device, n * sizeof(float));
    return absl::OkStatus();
  }
  absl::Status CopyIntsToDevice(const int32_t* host, int32_t* device,
                                size_t n) override {
    if (n > 0) std::memcpy(device, host, n * sizeof(int32_t));
    return absl::OkStatus();
  }
  absl::StatusOr<int32_t*> AllocateInts(size_t n) override {
    auto* p = static_cast<int32_t*>(std::calloc(std::max<size_t>(n, 1), 4));
    if (p == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot allocate ", n, " ints on the CPU"));
    }
    return p;
  }
  void FreeInts(int32_t* p) override { std::free(p); }

  absl::Status Gemm(bool ta, bool tb, int m, int n, int k, float alpha,
                    const float* a, const float* b, float beta,
                    float* c) override {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, ta ? m : k,
                b, tb ? k : n, beta, c, n);
    return absl::OkStatus();
  }

  absl::Status AddBias(float* y, const float* bias, int rows,
                       int cols) override {
    for (int r = 0; r < rows; ++r) {
      float* __restrict row = y + static_cast<size_t>(r) * cols;
      for (int c = 0; c < cols; ++c) row[c] += bias[c];
    }
    return absl::OkStatus();
  }

  absl::Status ColumnSums(const float* dy, int rows, int cols,
                          float* db) override {
    std::fill(db, db + cols, 0.0f);
    for (int r = 0; r < rows; ++r) {
      const float* __restrict row = dy + static_cast<size_t>(r) * cols;
      for (int c = 0; c < cols; ++c) db[c] += row[c];
    }
    return absl::OkStatus();
  }

  absl::Status Activate(Activation f, const float* x, float* y,
                        size_t n) override {
    switch (f) {
      case Activation::kIdentity:
        if (x != y) std::memcpy(y, x, n * sizeof(float));
        break;
      case Activation::kRelu:
        for (size_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
        break;
      case Activation::kTanh:
        for (size_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]);
        break;
      case Activation::kSigmoid:
        for (size_t i = 0; i < n; ++i) y[i] = 1.0f / (1.0f + std::exp(-x[i]));
        break;
    }
    return absl::OkStatus();
  }

  absl::Status ActivateBackward(Activation f, const float* y, const float* dy,
                                float* dx, size_t n) override {
    switch (f) {
      case Activation::kIdentity:
        if (dy != dx) std::memcpy(dx, dy, n * sizeof(float));
        break;
      case Activation::kRelu:
        for (size_t i = 0; i < n; ++i) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
        break;
      case Activation::kTanh:
        for (size_t i = 0; i < n; ++i) dx[i] = dy[i] * (1.0f - y[i] * y[i]);
        break;
      case Activation::kSigmoid:
        for (size_t i = 0; i < n; ++i) dx[i] = dy[i] * y[i] * (1.0f - y[i]);
        break;
    }
    return absl::OkStatus();
  }

  absl::Status SoftmaxCrossEntropy(const float* logits, const int32_t* labels,
                                   int rows, int cols, float* dlogits,
                                   float* loss, int* correct) override {
    double total = 0;
    int right = 0;
    const float inv_rows = 1.0f / static_cast<float>(rows);
    for (int r = 0; r < rows; ++r) {
      const float* z = logits + static_cast<size_t>(r) * cols;
      float* d = dlogits + static_cast<size_t>(r) * cols;
      const int label = labels[r];
      if (label < 0 || label >= cols) {
        return absl::InvalidArgumentError(absl::StrCat(
            "label ", label, " of row ", r, " is outside [0, ", cols, ")"));
      }
      int best = 0;
      float max = z[0];
      for (int c = 1; c < cols; ++c) {
        if (z[c] > max) {
          max = z[c];
          best = c;
        }
      }
      right += best == label;
      float sum = 0;
      for (int c = 0; c < cols; ++c) {
        d[c] = std::exp(z[c] - max);
        sum += d[c];
      }
      // log softmax of the label, computed stably.
      total += -(z[label] - max - std::log(sum));
      const float inv = 1.0f / sum;
      for (int c = 0; c < cols; ++c) d[c] *= inv * inv_rows;
      d[label] -= inv_rows;
    }
    *loss = static_cast<float>(total / rows);
    if (correct != nullptr) *correct = right;
    return absl::OkStatus();
  }

  absl::Status MeanSquaredError(const float* y, const float* target, int rows,
                                int cols, float* dy, float* loss) override {
    double total = 0;
    const size_t n = static_cast<size_t>(rows) * cols;
    const float inv_rows = 1.0f / static_cast<float>(rows);
    for (size_t i = 0; i < n; ++i) {
      const float e = y[i] - target[i];
      total += 0.5 * double{e} * e;
      dy[i] = e * inv_rows;
    }
    *loss = static_cast<float>(total / rows);
    return absl::OkStatus();
  }

  absl::Status Axpy(float alpha, const float* x, float* y,
                    size_t n) override {
    AxpyLoop(alpha, x, y, n);
    return absl::OkStatus();
  }

  absl::Status MomentumStep(float lr, float mu, bool nesterov, const float* g,
                            float* v, float* w, size_t n, float* sum,
                            bool restart_sum) override {
    const SumMode mode = ModeOf(sum, restart_sum);
    if (mu == 0.0f) {  // plain SGD: v is unused
      AxpyLoop(-lr, g, w, n);
      if (mode == SumMode::kRestart) std::memcpy(sum, g, n * sizeof(float));
      if (mode == SumMode::kAdd) AxpyLoop(1.0f, g, sum, n);
      return absl::OkStatus();
    }
    MomentumLoop(lr, mu, nesterov, g, v, w, sum, mode, n);
    return absl::OkStatus();
  }

  absl::Status AdamStep(float lr, float beta1, float beta2, float eps,
                        int64_t step, const float* g, float* m, float* v,
                        float* w, size_t n, float* sum,
                        bool restart_sum) override {
    const double t = static_cast<double>(step);
    const float c1 = static_cast<float>(1.0 / (1.0 - std::pow(double{beta1}, t)));
    const float c2 = static_cast<float>(1.0 / (1.0 - std::pow(double{beta2}, t)));
    AdamLoop(lr, beta1, beta2, eps, c1, c2, g, m, v, w, sum,
             ModeOf(sum, restart_sum), n);
    return absl::OkStatus();
  }

  absl::Status Synchronize() override { return absl::OkStatus(); }

 protected:
  void Free(float* p) override { std::free(p); }
};

}  // namespace

absl::StatusOr<Activation> ParseActivation(absl::string_view name) {
  if (name == "relu") return Activation::kRelu;
  if (name == "tanh") return Activation::kTanh;
  if (name == "sigmoid") return Activation::kSigmoid;
  if (name == "identity") return Activation::kIdentity;
  return absl::InvalidArgumentError(absl::StrCat(
      "activation '", name, "' is not known; use relu, tanh or sigmoid"));
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (owner_ != nullptr && data_ != nullptr) owner_->Free(data_);
    owner_ = other.owner_;
    data_ = other.data_;
    size_ = other.size_;
    other.owner_ = nullptr;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() {
  if (owner_ != nullptr && data_ != nullptr) owner_->Free(data_);
}

std::unique_ptr<Backend> MakeCpuBackend(int threads) {
  if (threads > 0) openblas_set_num_threads(threads);
  return std::make_unique<CpuBackend>();
}

}  // namespace pskit::worker
