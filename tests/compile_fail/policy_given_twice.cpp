// expect-error: use_signals<> given more than once
// A policy named twice is refused, whichever comes first.
#include <procmodel/supervisor.hpp>

struct worker {
  void operator()(procmodel::worker_context&) {}
};

using sup = procmodel::supervisor_with<worker, procmodel::use_signals<procmodel::nginx_signals>,
                                       procmodel::use_loop<procmodel::asio_loop>,
                                       procmodel::use_signals<procmodel::graceful_term_signals>>;
sup::signals_type* unused = nullptr;
