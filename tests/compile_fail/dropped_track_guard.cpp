// expect-error: nodiscard.*the guard counts the connection only while it lives
// flags: -Werror=unused-result
// ctx.track() whose guard is dropped at once counts nothing.

#include <procmodel/worker_context.hpp>

void serve(procmodel::worker_context& ctx) { ctx.track(); }
