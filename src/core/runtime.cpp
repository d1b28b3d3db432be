#include "ichkit/core/runtime.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/version.h>

#include <mutex>

#include "ichkit/core/threading.h"
#include "ichkit/core/version.h"

namespace ichkit {

void init_runtime() {
  static std::once_flag once;
  std::call_once(once, [] {
    on_num_threads_changed([](int n) {
      if (at::get_num_threads() != n) at::set_num_threads(n);
    });
  });
}

RuntimeInfo runtime_info() {
  init_runtime();
  RuntimeInfo r;
  r.ichkit_version = version();
  r.torch_version = TORCH_VERSION;
  r.threads = num_threads();
  r.torch_threads = at::get_num_threads();
  r.mkldnn = at::hasMKLDNN();
  r.cuda = at::hasCUDA();
  return r;
}

}  // namespace ichkit
