// expect-error: Worker must be copy-constructible: each worker process gets its own copy
// A move-only Worker: the rule is the first error, not Asio's internals.

#include <memory>

#include <procmodel/procmodel.hpp>

struct move_only_worker {
  std::unique_ptr<int> state = std::make_unique<int>(0);
  void operator()(procmodel::worker_context&) {}
};

int main(int argc, char** argv) {
  procmodel::options opt;
  return procmodel::supervisor<move_only_worker>(opt).run(argc, argv);
}
