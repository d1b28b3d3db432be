#include "ichkit/core/runtime.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/version.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "ichkit/core/threading.h"
#include "ichkit/core/version.h"

namespace ichkit {

namespace {
bool g_heap_retention = false;

/// glibc hands every block over 128 kB (rising to 32 MB) to mmap and gives it back to the
/// kernel on free, so each activation tensor of a forward pass - tens of MB on a 3D volume -
/// arrives as fresh pages and is paid for again in page faults (first touch), every call.
/// Measured on the 2-core VM: the oneDNN forward of ResNet-18 at 64x128x128 spent ~45 % of
/// its time there. Serving blocks up to 1 GiB from the heap and trimming only above 1 GiB
/// makes the second and later calls reuse warm pages. Off with ICHKIT_HEAP_RETENTION=0.
void apply_heap_retention() {
#if defined(__GLIBC__)
  const char* env = std::getenv("ICHKIT_HEAP_RETENTION");
  if (env && std::strcmp(env, "0") == 0) return;
  constexpr int kMmap = 1 << 30;  // blocks up to 1 GiB come from the heap
  int trim_mb = 1024;              // free heap top kept, MB ($ICHKIT_HEAP_TRIM_MB)
  if (const char* t = std::getenv("ICHKIT_HEAP_TRIM_MB")) trim_mb = std::clamp(std::atoi(t), 0, 1 << 20);
  g_heap_retention = mallopt(M_MMAP_THRESHOLD, kMmap) == 1 && mallopt(M_TRIM_THRESHOLD, trim_mb << 20) == 1;
#endif
}
}  // namespace

void init_runtime() {
  static std::once_flag once;
  std::call_once(once, [] {
    apply_heap_retention();
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
  r.cores = available_cores();
  r.torch_threads = at::get_num_threads();
  r.mkldnn = at::hasMKLDNN();
  r.cuda = at::hasCUDA();
  r.heap_retention = g_heap_retention;
  return r;
}

}  // namespace ichkit
