// helper_master: a worker pool plus a helper process, as nginx runs a cache
// manager beside its workers. The workers answer "hello from worker SLOT
// pid PID" on each connection; the "janitor" helper removes files older
// than a minute from a spool directory every second. The janitor is
// respawned when it dies, told about reopen (USR1), stopped after the
// workers on QUIT, and holds no listening socket (unless --janitor-listens).
// It builds header-only and against the separately compiled library alike.
//
//   helper_master --listen 127.0.0.1:7100 --workers 2 --spool /tmp/spool

#include <procmodel/procmodel.hpp>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

namespace asio = boost::asio;
namespace fs = std::filesystem;

namespace {

struct hello_worker {
  void operator()(procmodel::worker_context& ctx) const {
    const std::string text = fmt::format("hello from worker {} pid {}\n", ctx.slot(), ctx.pid());
    procmodel::serve(ctx, [text](auto socket, procmodel::connection conn) {
      auto s = std::make_shared<decltype(socket)>(std::move(socket));
      asio::async_write(*s, asio::buffer(text), [s, conn = std::move(conn)](auto, std::size_t) {});
    });
    ctx.ready();
  }
};

// Sweeps the spool every second until told to quit.
void janitor(procmodel::worker_context& ctx, const fs::path& spool) {
  auto timer = std::make_shared<asio::steady_timer>(ctx.loop());
  auto sweep = std::make_shared<std::function<void()>>();
  *sweep = [&ctx, timer, spool, weak = std::weak_ptr<std::function<void()>>(sweep)] {
    std::error_code ec;
    const auto old = fs::file_time_type::clock::now() - std::chrono::minutes(1);
    for (const auto& e : fs::directory_iterator(spool, ec))
      if (e.is_regular_file(ec) && e.last_write_time(ec) < old) fs::remove(e.path(), ec);
    timer->expires_after(std::chrono::seconds(1));
    timer->async_wait([weak](auto error) {
      if (auto again = weak.lock(); again && !error) (*again)();
    });
  };
  (*sweep)();
  ctx.on_reopen([&ctx] { ctx.log().notice("janitor: reopening (nothing to reopen)"); });
  // The loop ends once the timer is gone: the janitor exits 0.
  ctx.on_drain([timer, sweep](auto) mutable {
    timer->cancel();
    sweep.reset();
  });
}

}  // namespace

int main(int argc, char** argv) {
  procmodel::options opt;
  opt.listen = {"127.0.0.1:7100"};
  std::string spool = "/tmp/procmodel-spool";
  bool janitor_listens = false;
  procmodel::command_line cli(opt);
  cli.add("--spool", "DIR", "the directory the janitor sweeps", [&](std::string_view v) { spool = v; });
  cli.add_flag("--janitor-listens", "hand the janitor the listening sockets too",
               [&] { janitor_listens = true; });
  if (auto code = cli.parse(argc, argv)) return *code;

  procmodel::supervisor<hello_worker> master(opt);
  master.add_helper({"janitor", 1,
                     [spool](procmodel::worker_context& ctx) { janitor(ctx, spool); }, {},
                     janitor_listens});
  return master.run();
}
