#include "worker/backend/cuda_kernels.h"

#include <cfloat>

namespace pskit::worker::cuda {
namespace {

constexpr int kThreads = 256;

unsigned Blocks(size_t n) {
  const size_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 65535 * 32 ? (b == 0 ? 1 : b) : 65535 * 32);
}

// Grid-stride loops: any n with a bounded grid.
#define PSKIT_FOR(i, n)                                              \
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; \
       i < (n); i += static_cast<size_t>(blockDim.x) * gridDim.x)

__global__ void AddBiasKernel(float* y, const float* b, int rows, int cols) {
  PSKIT_FOR(i, static_cast<size_t>(rows) * cols) { y[i] += b[i % cols]; }
}

__global__ void ColumnSumsKernel(const float* dy, int rows, int cols,
                                 float* db) {
  PSKIT_FOR(c, static_cast<size_t>(cols)) {
    float s = 0;
    for (int r = 0; r < rows; ++r) s += dy[static_cast<size_t>(r) * cols + c];
    db[c] = s;
  }
}

__global__ void ActivateKernel(int kind, const float* x, float* y, size_t n) {
  PSKIT_FOR(i, n) {
    const float v = x[i];
    switch (kind) {
      case kRelu: y[i] = v > 0.0f ? v : 0.0f; break;
      case kTanh: y[i] = tanhf(v); break;
      case kSigmoid: y[i] = 1.0f / (1.0f + expf(-v)); break;
      default: y[i] = v; break;
    }
  }
}

__global__ void ActivateBackwardKernel(int kind, const float* y,
                                       const float* dy, float* dx, size_t n) {
  PSKIT_FOR(i, n) {
    const float o = y[i];
    switch (kind) {
      case kRelu: dx[i] = o > 0.0f ? dy[i] : 0.0f; break;
      case kTanh: dx[i] = dy[i] * (1.0f - o * o); break;
      case kSigmoid: dx[i] = dy[i] * o * (1.0f - o); break;
      default: dx[i] = dy[i]; break;
    }
  }
}

// One thread per row: the rows are short (the number of classes).
__global__ void SoftmaxXentKernel(const float* logits, const int32_t* labels,
                                  int rows, int cols, float* d, float* loss,
                                  int* correct) {
  PSKIT_FOR(r, static_cast<size_t>(rows)) {
    const float* z = logits + r * cols;
    float* g = d + r * cols;
    int best = 0;
    float mx = z[0];
    for (int c = 1; c < cols; ++c) {
      if (z[c] > mx) {
        mx = z[c];
        best = c;
      }
    }
    float sum = 0;
    for (int c = 0; c < cols; ++c) {
      g[c] = expf(z[c] - mx);
      sum += g[c];
    }
    const int label = labels[r];
    const float inv_rows = 1.0f / rows;
    for (int c = 0; c < cols; ++c) g[c] = g[c] / sum * inv_rows;
    g[label] -= inv_rows;
    loss[r] = -(z[label] - mx - logf(sum));
    correct[r] = best == label;
  }
}

__global__ void MseKernel(const float* y, const float* t, size_t n, int rows,
                          float* dy, float* sq) {
  PSKIT_FOR(i, n) {
    const float e = y[i] - t[i];
    dy[i] = e / rows;
    sq[i] = 0.5f * e * e;
  }
}

__global__ void AxpyKernel(float alpha, const float* x, float* y, size_t n) {
  PSKIT_FOR(i, n) { y[i] += alpha * x[i]; }
}

__global__ void MomentumKernel(float lr, float mu, bool nesterov,
                               const float* g, float* v, float* w, size_t n) {
  PSKIT_FOR(i, n) {
    const float vi = mu * v[i] + g[i];
    v[i] = vi;
    w[i] -= lr * (nesterov ? g[i] + mu * vi : vi);
  }
}

__global__ void AdamKernel(float lr, float b1, float b2, float eps, float c1,
                           float c2, const float* g, float* m, float* v,
                           float* w, size_t n) {
  PSKIT_FOR(i, n) {
    const float mi = b1 * m[i] + (1.0f - b1) * g[i];
    const float vi = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
    m[i] = mi;
    v[i] = vi;
    w[i] -= lr * (mi * c1) / (sqrtf(vi * c2) + eps);
  }
}

}  // namespace

cudaError_t AddBias(float* y, const float* bias, int rows, int cols,
                    cudaStream_t s) {
  AddBiasKernel<<<Blocks(static_cast<size_t>(rows) * cols), kThreads, 0, s>>>(
      y, bias, rows, cols);
  return cudaGetLastError();
}

cudaError_t ColumnSums(const float* dy, int rows, int cols, float* db,
                       cudaStream_t s) {
  ColumnSumsKernel<<<Blocks(cols), kThreads, 0, s>>>(dy, rows, cols, db);
  return cudaGetLastError();
}

cudaError_t Activate(int kind, const float* x, float* y, size_t n,
                     cudaStream_t s) {
  ActivateKernel<<<Blocks(n), kThreads, 0, s>>>(kind, x, y, n);
  return cudaGetLastError();
}

cudaError_t ActivateBackward(int kind, const float* y, const float* dy,
                             float* dx, size_t n, cudaStream_t s) {
  ActivateBackwardKernel<<<Blocks(n), kThreads, 0, s>>>(kind, y, dy, dx, n);
  return cudaGetLastError();
}

cudaError_t SoftmaxCrossEntropy(const float* logits, const int32_t* labels,
                                int rows, int cols, float* dlogits,
                                float* row_loss, int* row_correct,
                                cudaStream_t s) {
  SoftmaxXentKernel<<<Blocks(rows), kThreads, 0, s>>>(
      logits, labels, rows, cols, dlogits, row_loss, row_correct);
  return cudaGetLastError();
}

cudaError_t MeanSquaredError(const float* y, const float* t, int rows,
                             int cols, float* dy, float* sq, cudaStream_t s) {
  const size_t n = static_cast<size_t>(rows) * cols;
  MseKernel<<<Blocks(n), kThreads, 0, s>>>(y, t, n, rows, dy, sq);
  return cudaGetLastError();
}

cudaError_t Axpy(float alpha, const float* x, float* y, size_t n,
                 cudaStream_t s) {
  AxpyKernel<<<Blocks(n), kThreads, 0, s>>>(alpha, x, y, n);
  return cudaGetLastError();
}

cudaError_t MomentumStep(float lr, float mu, bool nesterov, const float* g,
                         float* v, float* w, size_t n, cudaStream_t s) {
  MomentumKernel<<<Blocks(n), kThreads, 0, s>>>(lr, mu, nesterov, g, v, w, n);
  return cudaGetLastError();
}

cudaError_t AdamStep(float lr, float beta1, float beta2, float eps, float c1,
                     float c2, const float* g, float* m, float* v, float* w,
                     size_t n, cudaStream_t s) {
  AdamKernel<<<Blocks(n), kThreads, 0, s>>>(lr, beta1, beta2, eps, c1, c2, g,
                                            m, v, w, n);
  return cudaGetLastError();
}

}  // namespace pskit::worker::cuda
