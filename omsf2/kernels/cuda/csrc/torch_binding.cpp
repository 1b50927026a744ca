// Torch extension glue for the omsf2 CUDA kernels: input checks, output allocation, current-stream launch.
//
// Compiled by the host compiler (the kernels live in the .cu files, which know nothing of torch), so the
// TensorRT plugin and this binding call the very same launchers. Python-side validation in
// omsf2/kernels/cuda/__init__.py gives friendlier errors; these TORCH_CHECKs guard direct calls.
// c10/cuda headers only (not ATen/cuda/CUDAContext.h, which drags in cuBLAS/cuSPARSE headers this glue
// does not need): the binding then also syntax-checks on CI machines with a minimal CUDA toolkit.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <vector>

#include "omsf2_kernels.cuh"

namespace {

omsf2::DType to_dtype(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return omsf2::DType::kFloat32;
    case at::kHalf:
      return omsf2::DType::kFloat16;
    case at::kBFloat16:
      return omsf2::DType::kBFloat16;
    default:
      TORCH_CHECK(false, "omsf2 CUDA kernels support float32, float16 and bfloat16, got ", t.scalar_type());
  }
}

void check_input(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "omsf2: ", name, " must be a CUDA tensor, got device ", t.device());
  TORCH_CHECK(t.dim() == 4, "omsf2: ", name, " must be 4-D (N, C, H, W), got ", t.dim(), "-D");
  TORCH_CHECK(t.is_contiguous(), "omsf2: ", name, " must be contiguous (NCHW)");
}

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "omsf2 ", op, " kernel failed: ", cudaGetErrorString(err));
}

at::Tensor multiscale_pool(const at::Tensor& x, const std::vector<int64_t>& windows, int64_t mode) {
  check_input(x, "x");
  const omsf2::DType dtype = to_dtype(x);
  TORCH_CHECK(!windows.empty() && static_cast<int>(windows.size()) <= omsf2::kMaxWindows,
              "omsf2 multiscale_pool: between 1 and ", omsf2::kMaxWindows, " windows, got ", windows.size());
  std::vector<int> ks;
  ks.reserve(windows.size());
  for (int64_t k : windows) {
    TORCH_CHECK(k >= 1 && k % 2 == 1 && k <= INT32_MAX, "omsf2 multiscale_pool: windows must be odd positive, got ",
                k);
    ks.push_back(static_cast<int>(k));
  }
  TORCH_CHECK(mode == 0 || mode == 1, "omsf2 multiscale_pool: mode must be 0 (max) or 1 (avg), got ", mode);

  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  at::Tensor y = at::empty({n, c * (1 + static_cast<int64_t>(ks.size())), h, w}, x.options());
  if (y.numel() == 0) return y;  // early return: no launch on empty tensors

  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  check_launch(omsf2::launch_multiscale_pool(dtype, x.data_ptr(), y.data_ptr(), n, c, h, w, ks.data(),
                                             static_cast<int>(ks.size()), static_cast<omsf2::PoolMode>(mode), stream),
               "multiscale_pool");
  return y;
}

at::Tensor scale_fuse(const at::Tensor& l, const at::Tensor& a, const at::Tensor& l_up, const at::Tensor& a_up) {
  check_input(l, "l");
  check_input(a, "a");
  check_input(l_up, "l_up");
  check_input(a_up, "a_up");
  const omsf2::DType dtype = to_dtype(l);
  TORCH_CHECK(a.scalar_type() == l.scalar_type() && l_up.scalar_type() == l.scalar_type() &&
                  a_up.scalar_type() == l.scalar_type(),
              "omsf2 scale_fuse: all inputs must share one dtype");
  TORCH_CHECK(a.device() == l.device() && l_up.device() == l.device() && a_up.device() == l.device(),
              "omsf2 scale_fuse: all inputs must be on one device");
  const int64_t n = l.size(0), c = l.size(1), h = l.size(2), w = l.size(3);
  const int64_t h_up = l_up.size(2), w_up = l_up.size(3);
  TORCH_CHECK(a.size(0) == n && a.size(1) == 1 && a.size(2) == h && a.size(3) == w,
              "omsf2 scale_fuse: a must be (N, 1, H, W) = (", n, ", 1, ", h, ", ", w, "), got ", a.sizes());
  TORCH_CHECK(l_up.size(0) == n && l_up.size(1) == c, "omsf2 scale_fuse: l_up must be (", n, ", ", c,
              ", h, w), got ", l_up.sizes());
  TORCH_CHECK(a_up.size(0) == n && a_up.size(1) == 1 && a_up.size(2) == h_up && a_up.size(3) == w_up,
              "omsf2 scale_fuse: a_up must be (", n, ", 1, ", h_up, ", ", w_up, "), got ", a_up.sizes());

  at::Tensor out = at::empty_like(l);
  if (out.numel() == 0) return out;  // early return: no launch on empty tensors
  TORCH_CHECK(h_up > 0 && w_up > 0, "omsf2 scale_fuse: l_up must be non-empty when the output is not");

  const c10::cuda::CUDAGuard guard(l.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  check_launch(omsf2::launch_scale_fuse(dtype, l.data_ptr(), a.data_ptr(), l_up.data_ptr(), a_up.data_ptr(),
                                        out.data_ptr(), n, c, h, w, h_up, w_up, stream),
               "scale_fuse");
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "omsf2 fused neck kernels (CUDA)";
  m.def("multiscale_pool", &multiscale_pool, "Fused multi-scale pooling, NCHW (mode: 0 = max, 1 = avg)",
        pybind11::arg("x"), pybind11::arg("windows"), pybind11::arg("mode"));
  m.def("scale_fuse", &scale_fuse, "Fused (1 + a) * l + a * up(a_up) * up(l_up), nearest upsampling",
        pybind11::arg("l"), pybind11::arg("a"), pybind11::arg("l_up"), pybind11::arg("a_up"));
}
