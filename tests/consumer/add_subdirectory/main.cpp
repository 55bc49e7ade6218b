#include <procmodel/procmodel.hpp>
struct hello_worker {
  void operator()(procmodel::worker_context& ctx) { ctx.ready(); ctx.stop(); }
};
int main(int argc, char** argv) {
  procmodel::options opt;
  opt.workers = 1;
  return procmodel::supervisor<hello_worker>(opt).run(argc, argv);
}
