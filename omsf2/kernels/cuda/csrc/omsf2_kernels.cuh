// omsf2 fused neck kernels: plain CUDA C++ API shared by the torch extension and the TensorRT plugin.
//
// This header is included by host-only translation units (torch_binding.cpp, omsf2_plugins.cpp compiled
// by g++), so its public part uses only cuda_runtime_api.h types and `void*` buffers; the typed templates
// are declared only for nvcc. Neither torch nor TensorRT is included here, so the same .cu files build
// the torch extension, the TensorRT plugin library and the CMake `omsf2_kernels` target.
//
// Specification: omsf2/kernels/reference.py (multiscale_pool_ref, scale_fuse_ref). All tensors are NCHW
// contiguous; all tensors of one call share one dtype; avg pooling and the scale_fuse arithmetic are
// computed in fp32 and rounded once to the storage type.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace omsf2 {

// Storage type of every tensor in a call. Values are stable: the plugin maps TensorRT's DataType to them.
enum class DType : int32_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Pooling mode. Values are part of the TensorRT plugin's `mode` field: 0 = max, 1 = avg.
enum class PoolMode : int32_t { kMax = 0, kAvg = 1 };

// At most this many windows per multiscale_pool call (the kernel keeps one row buffer per window).
constexpr int kMaxWindows = 8;

// The tiled pooling kernel keeps its input tile plus halo and one row buffer per window in at most this many
// bytes of shared memory (the default per-block limit, so no opt-in attribute and several blocks per SM).
// Window sets that need more (very large windows) take a direct kernel that reads from global memory.
constexpr int kMaxTiledSharedBytes = 48 * 1024;

// Fused multi-scale pooling.
//
// y (n, c * (1 + num_windows), h, w) = concat[x, pool_k(x) for k in windows], stride 1, padding k // 2.
// `windows` is a HOST array of num_windows odd positive sizes (1 <= num_windows <= kMaxWindows).
// Max ignores padding; avg divides by the number of valid elements (count_include_pad=False).
// Returns cudaErrorInvalidValue for bad arguments, cudaSuccess immediately for empty tensors, otherwise
// the launch status (cudaGetLastError()). Asynchronous on `stream`.
cudaError_t launch_multiscale_pool(DType dtype, const void* x, void* y, int64_t n, int64_t c, int64_t h, int64_t w,
                                   const int* windows, int num_windows, PoolMode mode, cudaStream_t stream);

// Fused top-down scale fusion: out = (1 + a) * l + a * up(a_up) * up(l_up), nearest upsampling with
// PyTorch's rule src = min(floor(dst * (float)in / out), in - 1).
//
// l, out: (n, c, h, w); a: (n, 1, h, w); l_up: (n, c, h_up, w_up); a_up: (n, 1, h_up, w_up).
// Returns as launch_multiscale_pool.
cudaError_t launch_scale_fuse(DType dtype, const void* l, const void* a, const void* l_up, const void* a_up, void* out,
                              int64_t n, int64_t c, int64_t h, int64_t w, int64_t h_up, int64_t w_up,
                              cudaStream_t stream);

#if defined(__CUDACC__)
// Typed entry points, one explicit instantiation per storage type in the .cu files.
template <typename T>
cudaError_t multiscale_pool(const T* x, T* y, int64_t n, int64_t c, int64_t h, int64_t w, const int* windows,
                            int num_windows, PoolMode mode, cudaStream_t stream);

template <typename T>
cudaError_t scale_fuse(const T* l, const T* a, const T* l_up, const T* a_up, T* out, int64_t n, int64_t c, int64_t h,
                       int64_t w, int64_t h_up, int64_t w_up, cudaStream_t stream);

namespace detail {
// Load/store conversions: all arithmetic is fp32, storage is T. fp16/bf16 -> fp32 is exact, so max pooling
// and the channel-block-0 copy reproduce the input bit for bit.
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Grid-stride launches cap the grid at this many blocks; each block then loops. Keeps grid.x valid for any
// tensor size without a 2-D/3-D grid (gridDim.y/z are limited to 65535).
constexpr int64_t kMaxGridBlocks = int64_t{1} << 20;
}  // namespace detail
#endif  // __CUDACC__

}  // namespace omsf2
