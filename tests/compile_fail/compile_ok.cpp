// compile-ok
// The control: the documented skeletons satisfy every check, and a worker
// that keeps its guards compiles with the flags the failing snippets use.
// flags: -Werror=unused-result

#include "skeletons.hpp"

#include <memory>

namespace {

struct good_worker {
  void operator()(procmodel::worker_context& ctx) {
    auto guard = std::make_shared<procmodel::connection_guard>(ctx.track());
    auto acceptor = ctx.acceptor(0);
    (void)guard;
  }
};

}  // namespace

int main(int argc, char** argv) {
  static_assert(skeleton_size > 0);
  procmodel::options opt;
  opt.listen = {"127.0.0.1:0"};
  return procmodel::supervisor<good_worker>(opt).run(argc, argv);
}
