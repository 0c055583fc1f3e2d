// worker/backend/cuda_backend.h
//
// MakeCudaBackend: the CUDA backend on `device` (cuBLAS GEMMs, the kernels of
// cuda_kernels.cu, one stream). Declared only in builds with PSKIT_WITH_CUDA.
// FAILED_PRECONDITION when the machine has no usable CUDA device (the
// message says why); INVALID_ARGUMENT for a device index it does not have.
//
// Thread safety: the returned backend is used by one thread.
#ifndef PSKIT_WORKER_BACKEND_CUDA_BACKEND_H_
#define PSKIT_WORKER_BACKEND_CUDA_BACKEND_H_

#include <memory>

#include "absl/status/statusor.h"
#include "worker/backend/backend.h"

namespace pskit::worker {

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device);

}  // namespace pskit::worker

#endif  // PSKIT_WORKER_BACKEND_CUDA_BACKEND_H_
