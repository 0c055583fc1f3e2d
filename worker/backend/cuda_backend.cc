// The CUDA backend: cuBLAS for the matrix products, the kernels of
// cuda_kernels.cu for the rest, all on one stream of one device. Built only
// with PSKIT_WITH_CUDA; MakeCudaBackend says why when no device is usable.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "worker/backend/backend.h"
#include "worker/backend/cuda_backend.h"
#include "common/status_macros.h"
#include "worker/backend/cuda_kernels.h"

namespace pskit::worker {
namespace {

absl::Status Check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  if (e == cudaErrorMemoryAllocation) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, ": out of GPU memory: ", cudaGetErrorString(e)));
  }
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(e)));
}

absl::Status Check(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(what, ": cuBLAS status ", static_cast<int>(s)));
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, std::string device_name, cudaStream_t stream,
              cublasHandle_t blas)
      : device_(device),
        device_name_(std::move(device_name)),
        stream_(stream),
        blas_(blas) {}
  ~CudaBackend() override {
    for (void* p : {static_cast<void*>(row_loss_), static_cast<void*>(row_correct_),
                    static_cast<void*>(squares_)}) {
      if (p != nullptr) cudaFree(p);
    }
    cublasDestroy(blas_);
    cudaStreamDestroy(stream_);
  }

  std::string name() const override {
    return absl::StrCat("cuda:", device_, " (", device_name_, ")");
  }

  absl::StatusOr<DeviceBuffer> Allocate(size_t n) override {
    if (n == 0) return DeviceBuffer(this, nullptr, 0);
    void* p = nullptr;
    if (absl::Status s = Check(cudaMalloc(&p, n * sizeof(float)), "cudaMalloc");
        !s.ok()) {
      return s;
    }
    if (absl::Status s = Check(cudaMemset(p, 0, n * sizeof(float)), "cudaMemset");
        !s.ok()) {
      cudaFree(p);
      return s;
    }
    return DeviceBuffer(this, static_cast<float*>(p), n);
  }
  absl::Status CopyToDevice(const float* host, float* device,
                            size_t n) override {
    if (n == 0) return absl::OkStatus();
    return Check(cudaMemcpyAsync(device, host, n * sizeof(float),
                                 cudaMemcpyHostToDevice, stream_),
                 "copy to the GPU");
  }
  absl::Status CopyToHost(const float* device, float* host,
                          size_t n) override {
    if (n == 0) return absl::OkStatus();
    absl::Status s = Check(cudaMemcpyAsync(host, device, n * sizeof(float),
                                           cudaMemcpyDeviceToHost, stream_),
                           "copy from the GPU");
    if (!s.ok()) return s;
    return Synchronize();
  }
  absl::Status CopyIntsToDevice(const int32_t* host, int32_t* device,
                                size_t n) override {
    if (n == 0) return absl::OkStatus();
    return Check(cudaMemcpyAsync(device, host, n * sizeof(int32_t),
                                 cudaMemcpyHostToDevice, stream_),
                 "copy labels to the GPU");
  }
  absl::StatusOr<int32_t*> AllocateInts(size_t n) override {
    void* p = nullptr;
    if (absl::Status s = Check(cudaMalloc(&p, std::max<size_t>(n, 1) * 4),
                               "cudaMalloc");
        !s.ok()) {
      return s;
    }
    return static_cast<int32_t*>(p);
  }
  void FreeInts(int32_t* p) override { cudaFree(p); }

  absl::Status Gemm(bool ta, bool tb, int m, int n, int k, float alpha,
                    const float* a, const float* b, float beta,
                    float* c) override {
    // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T:
    // cuBLAS sees the same memory with the operands swapped.
    return Check(cublasSgemm(blas_, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                             ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha,
                             b, tb ? k : n, a, ta ? m : k, &beta, c, n),
                 "cublasSgemm");
  }
  absl::Status AddBias(float* y, const float* bias, int rows,
                       int cols) override {
    return Check(cuda::AddBias(y, bias, rows, cols, stream_), "add bias");
  }
  absl::Status ColumnSums(const float* dy, int rows, int cols,
                          float* db) override {
    return Check(cuda::ColumnSums(dy, rows, cols, db, stream_), "column sums");
  }
  absl::Status Activate(Activation f, const float* x, float* y,
                        size_t n) override {
    return Check(cuda::Activate(static_cast<int>(f), x, y, n, stream_),
                 "activation");
  }
  absl::Status ActivateBackward(Activation f, const float* y, const float* dy,
                                float* dx, size_t n) override {
    return Check(
        cuda::ActivateBackward(static_cast<int>(f), y, dy, dx, n, stream_),
        "activation backward");
  }
  absl::Status SoftmaxCrossEntropy(const float* logits, const int32_t* labels,
                                   int rows, int cols, float* dlogits,
                                   float* loss, int* correct) override {
    if (absl::Status s = Scratch(rows, 0); !s.ok()) return s;
    if (absl::Status s = Check(
            cuda::SoftmaxCrossEntropy(logits, labels, rows, cols, dlogits,
                                      row_loss_, row_correct_, stream_),
            "softmax cross-entropy");
        !s.ok()) {
      return s;
    }
    std::vector<float> l(rows);
    std::vector<int> ok(rows);
    if (absl::Status s = CopyToHost(row_loss_, l.data(), rows); !s.ok()) return s;
    if (absl::Status s = Check(cudaMemcpy(ok.data(), row_correct_,
                                          rows * sizeof(int),
                                          cudaMemcpyDeviceToHost),
                               "copy from the GPU");
        !s.ok()) {
      return s;
    }
    double total = 0;
    int right = 0;
    for (int r = 0; r < rows; ++r) {
      total += l[r];
      right += ok[r];
    }
    *loss = static_cast<float>(total / rows);
    if (correct != nullptr) *correct = right;
    return absl::OkStatus();
  }
  absl::Status MeanSquaredError(const float* y, const float* target, int rows,
                                int cols, float* dy, float* loss) override {
    const size_t n = static_cast<size_t>(rows) * cols;
    if (absl::Status s = Scratch(0, n); !s.ok()) return s;
    if (absl::Status s =
            Check(cuda::MeanSquaredError(y, target, rows, cols, dy, squares_,
                                         stream_),
                  "mean squared error");
        !s.ok()) {
      return s;
    }
    std::vector<float> sq(n);
    if (absl::Status s = CopyToHost(squares_, sq.data(), n); !s.ok()) return s;
    double total = 0;
    for (float v : sq) total += v;
    *loss = static_cast<float>(total / rows);
    return absl::OkStatus();
  }
  absl::Status Axpy(float alpha, const float* x, float* y,
                    size_t n) override {
    return Check(cuda::Axpy(alpha, x, y, n, stream_), "axpy");
  }
  absl::Status MomentumStep(float lr, float mu, bool nesterov, const float* g,
                            float* v, float* w, size_t n, float* sum,
                            bool restart_sum) override {
    if (mu == 0.0f) {
      PSKIT_RETURN_IF_ERROR(Axpy(-lr, g, w, n));
    } else {
      PSKIT_RETURN_IF_ERROR(
          Check(cuda::MomentumStep(lr, mu, nesterov, g, v, w, n, stream_),
                "momentum step"));
    }
    return AddToSum(g, n, sum, restart_sum);
  }
  absl::Status AdamStep(float lr, float beta1, float beta2, float eps,
                        int64_t step, const float* g, float* m, float* v,
                        float* w, size_t n, float* sum,
                        bool restart_sum) override {
    const double t = static_cast<double>(step);
    const float c1 = static_cast<float>(1.0 / (1.0 - std::pow(double{beta1}, t)));
    const float c2 = static_cast<float>(1.0 / (1.0 - std::pow(double{beta2}, t)));
    PSKIT_RETURN_IF_ERROR(
        Check(cuda::AdamStep(lr, beta1, beta2, eps, c1, c2, g, m, v, w, n,
                             stream_),
              "adam step"));
    return AddToSum(g, n, sum, restart_sum);
  }
  // The optimizer steps' running gradient sum (Backend::AdamStep), as
  // operations of their own on the stream: sum = g or sum += g.
  absl::Status AddToSum(const float* g, size_t n, float* sum, bool restart) {
    if (sum == nullptr || n == 0) return absl::OkStatus();
    if (!restart) return Axpy(1.0f, g, sum, n);
    return Check(cudaMemcpyAsync(sum, g, n * sizeof(float),
                                 cudaMemcpyDeviceToDevice, stream_),
                 "gradient sum copy");
  }
  absl::Status Synchronize() override {
    return Check(cudaStreamSynchronize(stream_), "GPU stream");
  }

 protected:
  void Free(float* p) override { cudaFree(p); }

 private:
  // Grows the loss scratch buffers to `rows` rows and `elems` elements.
  absl::Status Scratch(int rows, size_t elems) {
    if (rows > scratch_rows_) {
      if (row_loss_ != nullptr) cudaFree(row_loss_);
      if (row_correct_ != nullptr) cudaFree(row_correct_);
      row_loss_ = nullptr;
      row_correct_ = nullptr;
      scratch_rows_ = 0;
      if (absl::Status s = Check(cudaMalloc(&row_loss_, rows * sizeof(float)),
                                 "cudaMalloc");
          !s.ok()) {
        return s;
      }
      if (absl::Status s = Check(cudaMalloc(&row_correct_, rows * sizeof(int)),
                                 "cudaMalloc");
          !s.ok()) {
        return s;
      }
      scratch_rows_ = rows;
    }
    if (elems > scratch_elems_) {
      if (squares_ != nullptr) cudaFree(squares_);
      squares_ = nullptr;
      scratch_elems_ = 0;
      if (absl::Status s = Check(cudaMalloc(&squares_, elems * sizeof(float)),
                                 "cudaMalloc");
          !s.ok()) {
        return s;
      }
      scratch_elems_ = elems;
    }
    return absl::OkStatus();
  }

  const int device_;
  const std::string device_name_;
  cudaStream_t stream_;
  cublasHandle_t blas_;
  float* row_loss_ = nullptr;
  int* row_correct_ = nullptr;
  float* squares_ = nullptr;
  int scratch_rows_ = 0;
  size_t scratch_elems_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no CUDA device: ",
        e != cudaSuccess ? cudaGetErrorString(e) : "none found"));
  }
  if (device < 0 || device >= count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CUDA device ", device, " does not exist; this machine has ", count));
  }
  if (absl::Status s = Check(cudaSetDevice(device), "cudaSetDevice"); !s.ok()) {
    return s;
  }
  cudaDeviceProp prop;
  if (absl::Status s = Check(cudaGetDeviceProperties(&prop, device),
                             "cudaGetDeviceProperties");
      !s.ok()) {
    return s;
  }
  cudaStream_t stream;
  if (absl::Status s = Check(cudaStreamCreate(&stream), "cudaStreamCreate");
      !s.ok()) {
    return s;
  }
  cublasHandle_t blas;
  if (absl::Status s = Check(cublasCreate(&blas), "cublasCreate"); !s.ok()) {
    cudaStreamDestroy(stream);
    return s;
  }
  cublasSetStream(blas, stream);
  return std::unique_ptr<Backend>(
      new CudaBackend(device, prop.name, stream, blas));
}

}  // namespace pskit::worker
