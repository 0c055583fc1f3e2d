// worker/backend/cuda_kernels.h
//
// The CUDA kernels of the CUDA backend, as plain C++ launchers that return
// cudaError_t (no Abseil or protobuf in nvcc translation units; the host
// side in cuda_backend.cc turns errors into Status). All pointers are device
// memory; every launcher queues work on `stream` and returns at once.
//
// Thread safety: as the stream's.
#ifndef PSKIT_WORKER_BACKEND_CUDA_KERNELS_H_
#define PSKIT_WORKER_BACKEND_CUDA_KERNELS_H_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace pskit::worker::cuda {

// Activation kinds, as worker::Activation's values.
enum ActivationKind : int { kIdentity = 0, kRelu = 1, kTanh = 2, kSigmoid = 3 };

cudaError_t AddBias(float* y, const float* bias, int rows, int cols,
                    cudaStream_t stream);
cudaError_t ColumnSums(const float* dy, int rows, int cols, float* db,
                       cudaStream_t stream);
cudaError_t Activate(int kind, const float* x, float* y, size_t n,
                     cudaStream_t stream);
cudaError_t ActivateBackward(int kind, const float* y, const float* dy,
                             float* dx, size_t n, cudaStream_t stream);
// Per row: dlogits = (softmax - onehot) / rows, row_loss = -log softmax[label],
// row_correct = argmax == label. Labels must be in [0, cols).
cudaError_t SoftmaxCrossEntropy(const float* logits, const int32_t* labels,
                                int rows, int cols, float* dlogits,
                                float* row_loss, int* row_correct,
                                cudaStream_t stream);
// dy = (y - t) / rows; sq[i] = 0.5 (y - t)^2.
cudaError_t MeanSquaredError(const float* y, const float* t, int rows,
                             int cols, float* dy, float* sq,
                             cudaStream_t stream);
cudaError_t Axpy(float alpha, const float* x, float* y, size_t n,
                 cudaStream_t stream);
cudaError_t MomentumStep(float lr, float mu, bool nesterov, const float* g,
                         float* v, float* w, size_t n, cudaStream_t stream);
cudaError_t AdamStep(float lr, float beta1, float beta2, float eps, float c1,
                     float c2, const float* g, float* m, float* v, float* w,
                     size_t n, cudaStream_t stream);

}  // namespace pskit::worker::cuda

#endif  // PSKIT_WORKER_BACKEND_CUDA_KERNELS_H_
