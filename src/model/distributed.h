#pragma once
/// \file distributed.h
/// Gradient averaging across processes over c10d (Gloo on CPU) for data-parallel training
/// (internal; keeps the Gloo headers out of the trainer).
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace ichkit::model::detail {

class GradientReducer {
public:
  /// Rendezvous with the other ranks through a TCP store at master_addr:master_port (rank 0
  /// hosts it). Throws IoError when the group cannot be formed within timeout_s.
  GradientReducer(int rank, int world_size, const std::string& master_addr, int master_port, double timeout_s);
  ~GradientReducer();
  /// Replace every defined gradient by its mean over all ranks (one flat all-reduce).
  void average(const std::vector<torch::Tensor>& params);
  /// Sum a few scalars over the ranks.
  std::vector<double> sum(const std::vector<double>& values);
  void barrier();
  int rank() const { return rank_; }
  int world_size() const { return world_; }

private:
  struct State;
  std::unique_ptr<State> s_;
  int rank_, world_;
};

}  // namespace ichkit::model::detail
