// The program every consumer project builds (tests/consumer/run_consumer.cmake
// runs it): a supervisor with one worker that reports its listener, says it is
// ready and asks its master for a graceful stop, so a whole run (fork, the
// inherited socket, signals, the master's log through fmt) ends by itself with
// exit code 0. `--help` prints the standard flags.
//
// The consumer says what it expects (0 or 1), and the build must agree:
// CONSUMER_FMT_HEADER_ONLY, how fmt is linked (procmodel must not impose the
// other way, or the program mixes header-only and compiled fmt), and
// CONSUMER_COMPILED, procmodel's separately compiled mode (else the program
// would quietly compile procmodel itself next to the library).
#include <procmodel/procmodel.hpp>

#include <csignal>
#include <cstdio>

#include <fmt/format.h>
#include <unistd.h>

#if !defined(CONSUMER_FMT_HEADER_ONLY)
#error "define CONSUMER_FMT_HEADER_ONLY to 0 or 1"
#elif CONSUMER_FMT_HEADER_ONLY && !defined(FMT_HEADER_ONLY)
#error "fmt is compiled here, but this consumer chose header-only fmt"
#elif !CONSUMER_FMT_HEADER_ONLY && defined(FMT_HEADER_ONLY)
#error "FMT_HEADER_ONLY is defined: procmodel imposed header-only fmt on a consumer of compiled fmt"
#endif

#if !defined(CONSUMER_COMPILED)
#error "define CONSUMER_COMPILED to 0 or 1"
#elif CONSUMER_COMPILED && !defined(PROCMODEL_SEPARATE_COMPILATION)
#error "linked to the compiled procmodel, but PROCMODEL_SEPARATE_COMPILATION is not defined"
#elif !CONSUMER_COMPILED && defined(PROCMODEL_SEPARATE_COMPILATION)
#error "PROCMODEL_SEPARATE_COMPILATION is defined in a header-only consumer"
#endif

struct consumer_worker {
  void operator()(procmodel::worker_context& ctx) {
    auto listener = ctx.acceptor().local_endpoint();
    fmt::print("consumer: worker {} ready on {}:{}\n", ctx.slot(), listener.address().to_string(),
               listener.port());
    std::fflush(stdout);
    ctx.ready();
    ::kill(::getppid(), SIGQUIT);
  }
};

int main(int argc, char** argv) {
  procmodel::options opt;
  opt.workers = 1;
  opt.listen = {"127.0.0.1:0"};
  return procmodel::supervisor<consumer_worker>(opt).run(argc, argv);
}
