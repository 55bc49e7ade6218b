// expect-error: Worker is missing: void operator\(\)\(procmodel::worker_context&\)
// A Worker with no operator() to run.

#include <procmodel/procmodel.hpp>

struct not_a_worker {
  void serve(procmodel::worker_context&) {}
};

int main(int argc, char** argv) {
  procmodel::options opt;
  return procmodel::supervisor<not_a_worker>(opt).run(argc, argv);
}
