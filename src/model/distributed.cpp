/// \file distributed.cpp
/// GradientReducer over c10d::ProcessGroupGloo.
#include "distributed.h"

#ifndef ICHKIT_NO_DISTRIBUTED
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

#include "ichkit/core/error.h"

#ifdef ICHKIT_NO_DISTRIBUTED
// Built with ICHKIT_WITH_DISTRIBUTED=OFF (e.g. against a LibTorch whose c10d API differs):
// training runs on one process; asking for ranks is a clear error.
namespace ichkit::model::detail {
struct GradientReducer::State {};
GradientReducer::GradientReducer(int, int, const std::string&, int, double) : rank_(0), world_(1) {
  throw InvalidArgument("distributed training: this ichkit was built without it (ICHKIT_WITH_DISTRIBUTED=OFF)");
}
GradientReducer::~GradientReducer() = default;
void GradientReducer::average(const std::vector<torch::Tensor>&) {}
std::vector<double> GradientReducer::sum(const std::vector<double>& v) { return v; }
void GradientReducer::barrier() {}
}  // namespace ichkit::model::detail
#else
namespace ichkit::model::detail {

struct GradientReducer::State {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
};

GradientReducer::GradientReducer(int rank, int world, const std::string& addr, int port, double timeout_s)
    : s_(std::make_unique<State>()), rank_(rank), world_(world) {
  if (world < 1 || rank < 0 || rank >= world)
    throw InvalidArgument("distributed: need 0 <= rank < world_size, got rank " + std::to_string(rank) + " of " + std::to_string(world));
  if (port < 1 || port > 65535) throw InvalidArgument("distributed: master port must be in [1, 65535]");
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  try {
    c10d::TCPStoreOptions o;
    o.port = static_cast<std::uint16_t>(port);
    o.isServer = rank == 0;
    o.numWorkers = static_cast<std::size_t>(world);
    o.waitWorkers = true;
    o.timeout = timeout;
    s_->store = c10::make_intrusive<c10d::TCPStore>(addr, o);
    auto opts = c10d::ProcessGroupGloo::Options::create();
    opts->timeout = timeout;
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(addr));
    s_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(s_->store, rank, world, opts);
  } catch (const c10::Error& e) {
    throw IoError("distributed: cannot form the process group at " + addr + ":" + std::to_string(port) + " (rank " +
                  std::to_string(rank) + " of " + std::to_string(world) + "): " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw IoError("distributed: cannot form the process group at " + addr + ":" + std::to_string(port) + ": " + e.what());
  }
}

GradientReducer::~GradientReducer() = default;

void GradientReducer::average(const std::vector<torch::Tensor>& params) {
  // every rank must contribute the same flat layout: a parameter without a gradient here
  // (e.g. a head with no labelled case in this shard) contributes zeros
  std::vector<torch::Tensor> grads;
  for (const auto& p0 : params) {
    torch::Tensor p = p0;
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    grads.push_back(p.grad());
  }
  if (grads.empty()) return;
  std::vector<torch::Tensor> flat{torch::cat([&] {
    std::vector<torch::Tensor> v;
    for (auto& g : grads) v.push_back(g.reshape({-1}));
    return v;
  }())};
  s_->group->allreduce(flat)->wait();
  flat[0].div_(static_cast<double>(world_));
  int64_t off = 0;
  torch::NoGradGuard ng;
  for (auto& g : grads) {
    g.copy_(flat[0].narrow(0, off, g.numel()).view_as(g));
    off += g.numel();
  }
}

std::vector<double> GradientReducer::sum(const std::vector<double>& values) {
  std::vector<torch::Tensor> t{torch::tensor(values, torch::kFloat64)};
  s_->group->allreduce(t)->wait();
  return std::vector<double>(t[0].data_ptr<double>(), t[0].data_ptr<double>() + t[0].numel());
}

void GradientReducer::barrier() { s_->group->barrier()->wait(); }

}  // namespace ichkit::model::detail
#endif  // ICHKIT_NO_DISTRIBUTED
