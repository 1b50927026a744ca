// Fused top-down scale fusion: out = (1 + a) * l + a * up(a_up) * up(l_up), one pass over four inputs.
//
// Unfused this is two nearest resizes (each materialising a full-size tensor) and four elementwise kernels;
// here each output element gathers its two coarse-level values through the nearest index and never writes an
// intermediate. One thread per output element in a grid-stride loop; l and out are read/written coalesced,
// the gathers of l_up / a_up hit the same coarse element for neighbouring threads (L1/L2 broadcast), and a
// (N, 1, H, W) is reused across all C channels through L2.
//
// Nearest index: PyTorch's CUDA upsample_nearest2d computes the scale as (float)in / out and the source as
// min((int)floorf(dst * scale), in - 1) in fp32; the CPU kernel's nearest_idx gives the same values. Doing the
// same float arithmetic here is what makes odd sizes (H = 13 from h = 7, etc.) match element for element.
//
// Index type: 32-bit when every index fits (the common case; cheaper div/mod), else 64-bit.
#include <cmath>

#include "omsf2_kernels.cuh"

namespace omsf2 {
namespace {

constexpr int kThreads = 256;

template <typename T, typename I>
__global__ void __launch_bounds__(kThreads)
    scale_fuse_kernel(const T* __restrict__ l, const T* __restrict__ a, const T* __restrict__ l_up,
                      const T* __restrict__ a_up, T* __restrict__ out, I c, I h, I w, I h_up, I w_up, float scale_h,
                      float scale_w, I total) {
  for (I i = static_cast<I>(blockIdx.x) * kThreads + threadIdx.x; i < total;
       i += static_cast<I>(gridDim.x) * kThreads) {
    const I px = i % w;
    I t = i / w;
    const I py = t % h;
    t /= h;
    const I ch = t % c;
    const I nn = t / c;
    // floorf of a non-negative product, then clamp: identical to at::native nearest_neighbor_compute_source_index.
    const I sy = min(static_cast<I>(floorf(static_cast<float>(py) * scale_h)), h_up - 1);
    const I sx = min(static_cast<I>(floorf(static_cast<float>(px) * scale_w)), w_up - 1);
    const float lv = detail::to_float(l[i]);
    const float av = detail::to_float(a[(nn * h + py) * w + px]);
    const float luv = detail::to_float(l_up[((nn * c + ch) * h_up + sy) * w_up + sx]);
    const float auv = detail::to_float(a_up[(nn * h_up + sy) * w_up + sx]);
    out[i] = detail::from_float<T>((1.0f + av) * lv + av * auv * luv);
  }
}

template <typename T, typename I>
cudaError_t launch_typed(const T* l, const T* a, const T* l_up, const T* a_up, T* out, int64_t n, int64_t c, int64_t h,
                         int64_t w, int64_t h_up, int64_t w_up, cudaStream_t stream) {
  const int64_t total = n * c * h * w;
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  const unsigned grid = static_cast<unsigned>(blocks < detail::kMaxGridBlocks ? blocks : detail::kMaxGridBlocks);
  // Same expression as PyTorch's compute_scales_value<float>(nullopt, in, out): float(in) / out.
  const float scale_h = static_cast<float>(h_up) / static_cast<float>(h);
  const float scale_w = static_cast<float>(w_up) / static_cast<float>(w);
  scale_fuse_kernel<T, I><<<grid, kThreads, 0, stream>>>(l, a, l_up, a_up, out, static_cast<I>(c), static_cast<I>(h),
                                                         static_cast<I>(w), static_cast<I>(h_up),
                                                         static_cast<I>(w_up), scale_h, scale_w,
                                                         static_cast<I>(total));
  return cudaGetLastError();
}

}  // namespace

template <typename T>
cudaError_t scale_fuse(const T* l, const T* a, const T* l_up, const T* a_up, T* out, int64_t n, int64_t c, int64_t h,
                       int64_t w, int64_t h_up, int64_t w_up, cudaStream_t stream) {
  if (n < 0 || c < 0 || h < 0 || w < 0 || h_up < 0 || w_up < 0) return cudaErrorInvalidValue;
  if (n == 0 || c == 0 || h == 0 || w == 0) return cudaSuccess;  // empty output: nothing to launch
  // A non-empty output needs a non-empty source to gather from (PyTorch rejects this too).
  if (h_up == 0 || w_up == 0) return cudaErrorInvalidValue;
  if (l == nullptr || a == nullptr || l_up == nullptr || a_up == nullptr || out == nullptr) {
    return cudaErrorInvalidValue;
  }
  // Largest index touched: the bigger of the output and the l_up tensor (nearest may also downsample).
  const int64_t largest = n * c * (h * w > h_up * w_up ? h * w : h_up * w_up);
  // Headroom for the grid-stride increment past the end.
  if (largest + detail::kMaxGridBlocks * kThreads < INT32_MAX) {
    return launch_typed<T, int32_t>(l, a, l_up, a_up, out, n, c, h, w, h_up, w_up, stream);
  }
  return launch_typed<T, int64_t>(l, a, l_up, a_up, out, n, c, h, w, h_up, w_up, stream);
}

template cudaError_t scale_fuse<float>(const float*, const float*, const float*, const float*, float*, int64_t, int64_t,
                                       int64_t, int64_t, int64_t, int64_t, cudaStream_t);
template cudaError_t scale_fuse<__half>(const __half*, const __half*, const __half*, const __half*, __half*, int64_t,
                                        int64_t, int64_t, int64_t, int64_t, int64_t, cudaStream_t);
template cudaError_t scale_fuse<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*,
                                               const __nv_bfloat16*, __nv_bfloat16*, int64_t, int64_t, int64_t,
                                               int64_t, int64_t, int64_t, cudaStream_t);

cudaError_t launch_scale_fuse(DType dtype, const void* l, const void* a, const void* l_up, const void* a_up, void* out,
                              int64_t n, int64_t c, int64_t h, int64_t w, int64_t h_up, int64_t w_up,
                              cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32:
      return scale_fuse(static_cast<const float*>(l), static_cast<const float*>(a), static_cast<const float*>(l_up),
                        static_cast<const float*>(a_up), static_cast<float*>(out), n, c, h, w, h_up, w_up, stream);
    case DType::kFloat16:
      return scale_fuse(static_cast<const __half*>(l), static_cast<const __half*>(a), static_cast<const __half*>(l_up),
                        static_cast<const __half*>(a_up), static_cast<__half*>(out), n, c, h, w, h_up, w_up, stream);
    case DType::kBFloat16:
      return scale_fuse(static_cast<const __nv_bfloat16*>(l), static_cast<const __nv_bfloat16*>(a),
                        static_cast<const __nv_bfloat16*>(l_up), static_cast<const __nv_bfloat16*>(a_up),
                        static_cast<__nv_bfloat16*>(out), n, c, h, w, h_up, w_up, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace omsf2
