// Fused multi-scale pooling: y = concat[x, pool_k1(x), pool_k2(x), ...] in one kernel, input read once.
//
// Tiled kernel (the normal path). One block owns a kTileH x kTileW output tile of one (n, c) plane:
//   1. load the tile plus a halo of R = max(k) // 2 into shared memory as fp32, padding with -inf (max) or
//      0 (avg), so the inner loops have no bounds checks;
//   2. write channel block 0 (the copy of x) straight from shared memory;
//   3. row pass: for every halo row and tile column, grow ONE window outwards d = 1..R and emit the running
//      max/sum into window j's row buffer when d == k_j // 2. Nested windows share the work, so the row cost
//      is R steps for all windows together instead of sum(k_j) (the SPPF cascade 9 = 5 o 5 without its
//      intermediate global round-trips), and the window order in `windows` does not matter;
//   4. column pass per window over its row buffer; avg divides by the analytic count of valid elements
//      (count_include_pad=False), computed from the clamped window bounds.
// For (5, 9, 13): R = 6, shared memory (28 * 44 + 3 * 28 * 32) * 4 B = 15.6 KiB, so several blocks per SM.
//
// Direct kernel (fallback): when the window set would need more than kMaxTiledSharedBytes (windows much wider
// than the tile), one thread per output pixel loops over its windows in global memory (L2 absorbs reuse).
//
// Numerics: max is exact in every dtype and propagates NaN like torch.nn.functional.max_pool2d; avg sums in
// fp32 and rounds once. The order of the fp32 sum differs from PyTorch's, so avg matches to fp32 rounding.
#include <cmath>

#include "omsf2_kernels.cuh"

namespace omsf2 {
namespace {

constexpr int kTileW = 32;    // a warp spans one tile row: coalesced stores
constexpr int kTileH = 16;
constexpr int kThreads = 256;  // 8 warps; each thread handles 2 pixels of the tile per pass

struct WindowSet {
  int count;
  int max_radius;
  int radius[kMaxWindows];
};

template <PoolMode M>
struct PoolOp;

template <>
struct PoolOp<PoolMode::kMax> {
  // -inf never wins against a valid element and every window holds its (valid) centre, so padding is ignored.
  static __device__ __forceinline__ float pad() { return -INFINITY; }
  // NaN-propagating max, as PyTorch's max_pool2d: once acc is NaN it stays NaN.
  static __device__ __forceinline__ float combine(float acc, float v) { return (v > acc || isnan(v)) ? v : acc; }
};

template <>
struct PoolOp<PoolMode::kAvg> {
  static __device__ __forceinline__ float pad() { return 0.0f; }  // contributes nothing to the sum
  static __device__ __forceinline__ float combine(float acc, float v) { return acc + v; }
};

// Number of valid positions of a window of radius r centred at p in [0, size).
__device__ __forceinline__ int valid_count(int p, int r, int size) {
  return min(p + r, size - 1) - max(p - r, 0) + 1;
}

template <typename T, PoolMode M>
__global__ void __launch_bounds__(kThreads)
    multiscale_pool_tiled_kernel(const T* __restrict__ x, T* __restrict__ y, int c, int h, int w, int tiles_x,
                                 int64_t tiles_per_plane, int64_t num_tiles, WindowSet ws) {
  extern __shared__ float smem[];
  // Radii in shared memory: indexing the by-value kernel parameter with a runtime j would force a local-memory
  // (stack) copy of the struct.
  __shared__ int radius[kMaxWindows];
  if (threadIdx.x == 0) {
#pragma unroll
    for (int j = 0; j < kMaxWindows; ++j) radius[j] = ws.radius[j];  // unrolled: constant indices
  }
  const int R = ws.max_radius;
  const int SH = kTileH + 2 * R;  // halo rows
  const int SW = kTileW + 2 * R;  // halo columns
  float* tile = smem;             // [SH][SW]
  float* rows = smem + SH * SW;   // [count][SH][kTileW]
  const int64_t plane_size = static_cast<int64_t>(h) * w;
  const int out_channels = c * (1 + ws.count);

  for (int64_t t = blockIdx.x; t < num_tiles; t += gridDim.x) {
    const int64_t plane = t / tiles_per_plane;  // n * c + ch
    const int64_t tile_id = t - plane * tiles_per_plane;
    const int y0 = static_cast<int>(tile_id / tiles_x) * kTileH;
    const int x0 = static_cast<int>(tile_id % tiles_x) * kTileW;
    const int64_t nn = plane / c;
    const int ch = static_cast<int>(plane - nn * c);
    const T* xp = x + plane * plane_size;
    // Output plane of channel block j is (nn, j * c + ch).
    T* yp = y + (nn * out_channels + ch) * plane_size;
    const int64_t block_stride = static_cast<int64_t>(c) * plane_size;

    // 1. Tile + halo -> shared memory (fp32), padded.
    for (int i = threadIdx.x; i < SH * SW; i += kThreads) {
      const int sy = i / SW;
      const int sx = i - sy * SW;
      const int gy = y0 - R + sy;
      const int gx = x0 - R + sx;
      float v = PoolOp<M>::pad();
      if (gy >= 0 && gy < h && gx >= 0 && gx < w) {
        v = detail::to_float(xp[static_cast<int64_t>(gy) * w + gx]);
      }
      tile[i] = v;
    }
    __syncthreads();

    // 2. Channel block 0: the copy of x, from shared memory (fp16/bf16 -> fp32 -> fp16/bf16 is exact).
    for (int i = threadIdx.x; i < kTileH * kTileW; i += kThreads) {
      const int ly = i / kTileW;
      const int lx = i - ly * kTileW;
      const int gy = y0 + ly;
      const int gx = x0 + lx;
      if (gy < h && gx < w) {
        yp[static_cast<int64_t>(gy) * w + gx] = detail::from_float<T>(tile[(ly + R) * SW + lx + R]);
      }
    }

    // 3. Row pass: all windows at once, growing outwards from the centre column.
    for (int i = threadIdx.x; i < SH * kTileW; i += kThreads) {
      const int sy = i / kTileW;
      const int lx = i - sy * kTileW;
      const float* row = tile + sy * SW + lx + R;  // centre element
      float acc = row[0];
      for (int j = 0; j < ws.count; ++j) {
        if (radius[j] == 0) rows[j * SH * kTileW + i] = acc;
      }
      for (int d = 1; d <= R; ++d) {
        acc = PoolOp<M>::combine(acc, row[-d]);
        acc = PoolOp<M>::combine(acc, row[d]);
        for (int j = 0; j < ws.count; ++j) {
          if (radius[j] == d) rows[j * SH * kTileW + i] = acc;
        }
      }
    }
    __syncthreads();

    // 4. Column pass per window, written straight into its channel block of the concatenated output.
    for (int j = 0; j < ws.count; ++j) {
      const int r = radius[j];
      const float* buf = rows + j * SH * kTileW;
      T* out = yp + (j + 1) * block_stride;
      for (int i = threadIdx.x; i < kTileH * kTileW; i += kThreads) {
        const int ly = i / kTileW;
        const int lx = i - ly * kTileW;
        const int gy = y0 + ly;
        const int gx = x0 + lx;
        if (gy >= h || gx >= w) continue;
        const float* col = buf + (ly + R) * kTileW + lx;  // centre row of this output pixel
        float acc = col[0];
        for (int d = 1; d <= r; ++d) {
          acc = PoolOp<M>::combine(acc, col[-d * kTileW]);
          acc = PoolOp<M>::combine(acc, col[d * kTileW]);
        }
        if (M == PoolMode::kAvg) {
          acc /= static_cast<float>(valid_count(gy, r, h) * valid_count(gx, r, w));
        }
        out[static_cast<int64_t>(gy) * w + gx] = detail::from_float<T>(acc);
      }
    }
    // The next tile overwrites `tile` and `rows`.
    __syncthreads();
  }
}

template <typename T, PoolMode M>
__global__ void __launch_bounds__(kThreads)
    multiscale_pool_direct_kernel(const T* __restrict__ x, T* __restrict__ y, int c, int h, int w, int64_t total,
                                  WindowSet ws) {
  const int64_t plane_size = static_cast<int64_t>(h) * w;
  const int out_channels = c * (1 + ws.count);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t plane = i / plane_size;
    const int64_t pix = i - plane * plane_size;
    const int py = static_cast<int>(pix / w);
    const int px = static_cast<int>(pix - static_cast<int64_t>(py) * w);
    const int64_t nn = plane / c;
    const int64_t ch = plane - nn * c;
    const T* xp = x + plane * plane_size;
    T* yp = y + (nn * out_channels + ch) * plane_size + pix;
    yp[0] = xp[pix];
    for (int j = 0; j < ws.count; ++j) {
      const int r = ws.radius[j];
      const int ya = max(py - r, 0), yb = min(py + r, h - 1);
      const int xa = max(px - r, 0), xb = min(px + r, w - 1);
      float acc = M == PoolMode::kMax ? -INFINITY : 0.0f;
      for (int yy = ya; yy <= yb; ++yy) {
        for (int xx = xa; xx <= xb; ++xx) {
          acc = PoolOp<M>::combine(acc, detail::to_float(xp[static_cast<int64_t>(yy) * w + xx]));
        }
      }
      if (M == PoolMode::kAvg) acc /= static_cast<float>((yb - ya + 1) * (xb - xa + 1));
      yp[(j + 1) * c * plane_size] = detail::from_float<T>(acc);
    }
  }
}

size_t tiled_shared_bytes(const WindowSet& ws) {
  const size_t sh = kTileH + 2 * ws.max_radius;
  const size_t sw = kTileW + 2 * ws.max_radius;
  return (sh * sw + static_cast<size_t>(ws.count) * sh * kTileW) * sizeof(float);
}

template <typename T, PoolMode M>
cudaError_t launch_typed(const T* x, T* y, int64_t n, int64_t c, int64_t h, int64_t w, const WindowSet& ws,
                         cudaStream_t stream) {
  const size_t smem = tiled_shared_bytes(ws);
  if (smem <= static_cast<size_t>(kMaxTiledSharedBytes)) {
    const int tiles_x = static_cast<int>((w + kTileW - 1) / kTileW);
    const int64_t tiles_y = (h + kTileH - 1) / kTileH;
    const int64_t tiles_per_plane = tiles_x * tiles_y;
    const int64_t num_tiles = n * c * tiles_per_plane;
    const unsigned grid = static_cast<unsigned>(num_tiles < detail::kMaxGridBlocks ? num_tiles : detail::kMaxGridBlocks);
    multiscale_pool_tiled_kernel<T, M><<<grid, kThreads, smem, stream>>>(
        x, y, static_cast<int>(c), static_cast<int>(h), static_cast<int>(w), tiles_x, tiles_per_plane, num_tiles, ws);
  } else {
    const int64_t total = n * c * h * w;
    const int64_t blocks = (total + kThreads - 1) / kThreads;
    const unsigned grid = static_cast<unsigned>(blocks < detail::kMaxGridBlocks ? blocks : detail::kMaxGridBlocks);
    multiscale_pool_direct_kernel<T, M><<<grid, kThreads, 0, stream>>>(x, y, static_cast<int>(c), static_cast<int>(h),
                                                                      static_cast<int>(w), total, ws);
  }
  return cudaGetLastError();
}

}  // namespace

template <typename T>
cudaError_t multiscale_pool(const T* x, T* y, int64_t n, int64_t c, int64_t h, int64_t w, const int* windows,
                            int num_windows, PoolMode mode, cudaStream_t stream) {
  if (n < 0 || c < 0 || h < 0 || w < 0 || num_windows < 1 || num_windows > kMaxWindows || windows == nullptr) {
    return cudaErrorInvalidValue;
  }
  // Per-plane indices (rows, columns, channel count) are int in the kernels; planes are int64.
  if (c > INT32_MAX / (1 + num_windows) || h > INT32_MAX || w > INT32_MAX || h * w > INT32_MAX) {
    return cudaErrorInvalidValue;
  }
  WindowSet ws{};
  ws.count = num_windows;
  ws.max_radius = 0;
  for (int j = 0; j < num_windows; ++j) {
    const int k = windows[j];
    if (k < 1 || k % 2 == 0) return cudaErrorInvalidValue;
    ws.radius[j] = k / 2;
    ws.max_radius = ws.radius[j] > ws.max_radius ? ws.radius[j] : ws.max_radius;
  }
  if (n == 0 || c == 0 || h == 0 || w == 0) return cudaSuccess;  // empty: nothing to launch
  if (x == nullptr || y == nullptr) return cudaErrorInvalidValue;
  switch (mode) {
    case PoolMode::kMax:
      return launch_typed<T, PoolMode::kMax>(x, y, n, c, h, w, ws, stream);
    case PoolMode::kAvg:
      return launch_typed<T, PoolMode::kAvg>(x, y, n, c, h, w, ws, stream);
  }
  return cudaErrorInvalidValue;
}

template cudaError_t multiscale_pool<float>(const float*, float*, int64_t, int64_t, int64_t, int64_t, const int*, int,
                                            PoolMode, cudaStream_t);
template cudaError_t multiscale_pool<__half>(const __half*, __half*, int64_t, int64_t, int64_t, int64_t, const int*,
                                             int, PoolMode, cudaStream_t);
template cudaError_t multiscale_pool<__nv_bfloat16>(const __nv_bfloat16*, __nv_bfloat16*, int64_t, int64_t, int64_t,
                                                    int64_t, const int*, int, PoolMode, cudaStream_t);

cudaError_t launch_multiscale_pool(DType dtype, const void* x, void* y, int64_t n, int64_t c, int64_t h, int64_t w,
                                   const int* windows, int num_windows, PoolMode mode, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32:
      return multiscale_pool(static_cast<const float*>(x), static_cast<float*>(y), n, c, h, w, windows, num_windows,
                             mode, stream);
    case DType::kFloat16:
      return multiscale_pool(static_cast<const __half*>(x), static_cast<__half*>(y), n, c, h, w, windows, num_windows,
                             mode, stream);
    case DType::kBFloat16:
      return multiscale_pool(static_cast<const __nv_bfloat16*>(x), static_cast<__nv_bfloat16*>(y), n, c, h, w, windows,
                             num_windows, mode, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace omsf2
