// expect-error: each option must be use_spawner<S>, use_signals<S>
// A policy given bare, without the use_...<> that names its kind, is refused.
#include <procmodel/supervisor.hpp>

struct worker {
  void operator()(procmodel::worker_context&) {}
};

using sup = procmodel::supervisor_with<worker, procmodel::graceful_term_signals>;
sup::signals_type* unused = nullptr;
