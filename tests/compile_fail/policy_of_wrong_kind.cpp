// expect-error: Spawner policy is missing: bool separate_processes\(\) const
// A Signals table named as the spawner: the error names the Spawner contract,
// whatever the position (positionally it would name the wrong policy).
#include <procmodel/supervisor.hpp>

struct worker {
  void operator()(procmodel::worker_context&) {}
};

using sup = procmodel::supervisor_with<worker, procmodel::use_loop<procmodel::asio_loop>,
                                       procmodel::use_spawner<procmodel::graceful_term_signals>>;
sup::spawner_type* unused = nullptr;
