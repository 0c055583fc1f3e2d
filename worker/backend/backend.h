// worker/backend/backend.h
//
// Backend: the math a worker's model needs (GEMM, bias, activations, losses,
// local optimizer steps) on one device. Plain C++: the CPU backend
// (OpenBLAS sgemm plus loops the compiler vectorises) is always built; a
// CUDA backend plugs in behind the same interface.
//
// Buffers are device memory owned by DeviceBuffer; every op takes raw
// pointers into such buffers (host pointers for the CPU backend). Matrices
// are row-major. Ops may run asynchronously on the backend's stream;
// CopyToHost and Synchronize wait.
//
// Example:
//   PSKIT_ASSIGN_OR_RETURN(std::unique_ptr<Backend> be, MakeBackend("auto", 1));
//   PSKIT_ASSIGN_OR_RETURN(DeviceBuffer x, be->Allocate(rows * cols));
//   PSKIT_RETURN_IF_ERROR(be->CopyToDevice(host.data(), x.data(), host.size()));
//
// Thread safety: a Backend and its buffers are used by one thread.
#ifndef PSKIT_WORKER_BACKEND_BACKEND_H_
#define PSKIT_WORKER_BACKEND_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pskit::worker {

enum class Activation { kIdentity, kRelu, kTanh, kSigmoid };

// "relu", "tanh", "sigmoid", "identity"; INVALID_ARGUMENT otherwise.
absl::StatusOr<Activation> ParseActivation(absl::string_view name);

class Backend;

// Device memory of `size` floats, freed by the backend that made it.
// Move-only. The backend must outlive its buffers.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Backend* owner, float* data, size_t size)
      : owner_(owner), data_(data), size_(size) {}
  DeviceBuffer(DeviceBuffer&& other) noexcept { *this = std::move(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();

  float* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  Backend* owner_ = nullptr;
  float* data_ = nullptr;
  size_t size_ = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  // "cpu" or "cuda:<device>".
  virtual std::string name() const = 0;

  // A zero-filled buffer of `n` floats. RESOURCE_EXHAUSTED when out of
  // memory.
  virtual absl::StatusOr<DeviceBuffer> Allocate(size_t n) = 0;
  virtual absl::Status CopyToDevice(const float* host, float* device,
                                    size_t n) = 0;
  virtual absl::Status CopyToHost(const float* device, float* host,
                                  size_t n) = 0;
  virtual absl::Status CopyIntsToDevice(const int32_t* host, int32_t* device,
                                        size_t n) = 0;
  // An int buffer (labels), as raw memory of `n` int32s; free with
  // FreeInts. RESOURCE_EXHAUSTED when out of memory.
  virtual absl::StatusOr<int32_t*> AllocateInts(size_t n) = 0;
  virtual void FreeInts(int32_t* p) = 0;

  // C[m,n] = alpha * op(A) * op(B) + beta * C, op(X) = X or X^T, row-major;
  // op(A) is m x k, op(B) is k x n.
  virtual absl::Status Gemm(bool transpose_a, bool transpose_b, int m, int n,
                            int k, float alpha, const float* a, const float* b,
                            float beta, float* c) = 0;
  // y[r, :] += bias for every row r of y[rows, cols].
  virtual absl::Status AddBias(float* y, const float* bias, int rows,
                               int cols) = 0;
  // db[c] = sum_r dy[r, c].
  virtual absl::Status ColumnSums(const float* dy, int rows, int cols,
                                  float* db) = 0;
  // y = f(x) elementwise (in place allowed).
  virtual absl::Status Activate(Activation f, const float* x, float* y,
                                size_t n) = 0;
  // dx = dy * f'(x), written with y = f(x) (in place on dy allowed).
  virtual absl::Status ActivateBackward(Activation f, const float* y,
                                        const float* dy, float* dx,
                                        size_t n) = 0;
  // Mean softmax cross-entropy over `rows` rows of logits[rows, cols] with
  // integer labels in [0, cols); dlogits = (softmax - onehot) / rows.
  // `loss` and `correct` (argmax == label count) are host outputs.
  virtual absl::Status SoftmaxCrossEntropy(const float* logits,
                                           const int32_t* labels, int rows,
                                           int cols, float* dlogits,
                                           float* loss, int* correct) = 0;
  // Mean squared error 0.5 * sum (y - t)^2 / rows; dy = (y - t) / rows.
  virtual absl::Status MeanSquaredError(const float* y, const float* target,
                                        int rows, int cols, float* dy,
                                        float* loss) = 0;
  // y += alpha * x.
  virtual absl::Status Axpy(float alpha, const float* x, float* y,
                            size_t n) = 0;
  // The optimizer steps below also keep a running sum of the gradients
  // when `sum` is not null: sum += g, or sum = g with `restart_sum` (no
  // zeroing needed). Downpour with local updates pushes that sum; the CPU
  // backend folds it into the step's own pass over g for Adam and momentum
  // (plain SGD, mu = 0, and the CUDA backend add it in a pass of its own).
  //
  // Momentum SGD (PyTorch form): v = mu v + g; w -= lr (g + mu v) when
  // nesterov, else w -= lr v. mu = 0 is plain SGD (v is then unused).
  virtual absl::Status MomentumStep(float lr, float mu, bool nesterov,
                                    const float* g, float* v, float* w,
                                    size_t n, float* sum,
                                    bool restart_sum) = 0;
  // Adam (Kingma & Ba): m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
  // w -= lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps), t = step >= 1.
  virtual absl::Status AdamStep(float lr, float beta1, float beta2, float eps,
                                int64_t step, const float* g, float* m,
                                float* v, float* w, size_t n, float* sum,
                                bool restart_sum) = 0;
  // Waits for every queued op.
  virtual absl::Status Synchronize() = 0;

 protected:
  friend class DeviceBuffer;
  virtual void Free(float* p) = 0;
};

// "cpu", "cuda" or "auto" (CUDA when it is built in and a device is present,
// else the CPU, with a log line saying why). The CPU backend gets
// `cpu_threads` OpenBLAS threads (0: OpenBLAS's default, every core).
// INVALID_ARGUMENT for another name; FAILED_PRECONDITION for "cuda" when
// this build or machine has none.
absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(absl::string_view name,
                                                     int cpu_threads);

// The CPU backend; `threads` OpenBLAS threads (0: leave OpenBLAS's default).
std::unique_ptr<Backend> MakeCpuBackend(int threads);

}  // namespace pskit::worker

#endif  // PSKIT_WORKER_BACKEND_BACKEND_H_
