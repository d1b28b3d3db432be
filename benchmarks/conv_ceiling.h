#pragma once
// The oneDNN convolution ceiling shared by bench_model and bench_device: one convolution of
// the forward (FastEncoder::convolutions) timed alone in oneDNN's layout with its packed
// weights - the speed a forward would have if nothing but convolutions ran.
#include <algorithm>
#include <chrono>
#include <vector>

#include "ichkit/model/net.h"

namespace ichkit::bench {

/// Best of `timed` runs of convolution `c` on `x` (an MKL-DNN tensor of c.in_shape), after
/// `warmup` untimed runs, in seconds.
inline double conv_alone_seconds(const model::FastEncoder::ConvCall& c, const torch::Tensor& x, int warmup, int timed) {
  double best = 1e30;
  for (int r = 0; r < warmup + timed; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    torch::Tensor y = at::mkldnn_convolution(x, c.weight, c.bias, c.padding, c.stride, {1, 1, 1}, 1);
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r >= warmup) best = std::min(best, t);
  }
  return best;
}

/// Every convolution of a forward of input shape `shape`, each with a random input of its
/// own (MKL-DNN), and their total FLOPs: the ceiling the forward is measured against.
struct ForwardConvolutions {
  std::vector<model::FastEncoder::ConvCall> convs;
  std::vector<torch::Tensor> inputs;
  double flops = 0;

  ForwardConvolutions(const model::FastEncoder& fast, const std::vector<int64_t>& shape) : convs(fast.convolutions(shape)) {
    for (const auto& c : convs) {
      inputs.push_back(torch::rand(c.in_shape).to_mkldnn());
      flops += c.flops;
    }
  }
  /// The sum over the convolutions of each one's best of `timed` runs alone (conv_alone_seconds).
  double seconds(int warmup, int timed) const {
    double t = 0;
    for (std::size_t q = 0; q < convs.size(); ++q) t += conv_alone_seconds(convs[q], inputs[q], warmup, timed);
    return t;
  }
};

}  // namespace ichkit::bench
