#pragma once

/// @file options.ipp
/// command_line's definitions: inline with the headers, or compiled once
/// into the library (PROCMODEL_SEPARATE_COMPILATION).

#include <algorithm>
#include <charconv>
#include <iterator>
#include <cstdio>
#include <stdexcept>
#include <system_error>

#include <fmt/core.h>

#include "../detail/format.hpp"
#include "../listen_spec.hpp"
#include "../options.hpp"

namespace procmodel {

long long parse_number(std::string_view what, std::string_view text, long long lo,
                              long long hi) {
  long long value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || value < lo || value > hi)
    throw std::invalid_argument(
        detail::format("{}: expected a whole number from {} to {}, got '{}'", what, lo, hi, text));
  return value;
}

std::uint64_t parse_rlimit(std::string_view what, std::string_view text, std::uint64_t hi) {
  if (text == "unlimited") return rlimit_unlimited;
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || value > hi)
    throw std::invalid_argument(detail::format(
        "{}: expected a whole number from 0 to {} or 'unlimited', got '{}'", what, hi, text));
  return value;
}

cpu_affinity parse_cpu_affinity(std::string_view what, std::string_view text) {
  cpu_affinity out;
  if (text == "auto") {
    out.automatic = true;
    return out;
  }
  // As the kernel's cpu lists (taskset -c, Cpus_allowed_list): N or N-M, by commas.
  constexpr long long max_cpu = 1023;  // CPU_SETSIZE - 1
  auto bad = [&](std::string_view why) {
    return std::invalid_argument(detail::format(
        "{}: expected 'auto' or a CPU list such as 0,2,4-7, got '{}' ({})", what, text, why));
  };
  std::string_view rest = text;
  while (true) {
    auto comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    auto dash = item.find('-');
    long long first = 0, last = 0;
    try {
      first = parse_number(what, item.substr(0, dash), 0, max_cpu);
      last = dash == std::string_view::npos ? first
                                            : parse_number(what, item.substr(dash + 1), 0, max_cpu);
    } catch (const std::invalid_argument&) {
      throw bad(detail::format("CPUs are numbered 0 to {}", max_cpu));
    }
    if (last < first) throw bad(detail::format("{} ends before it starts", item));
    for (long long c = first; c <= last; ++c) out.cpus.push_back(static_cast<unsigned>(c));
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return out;
}

std::optional<command> parse_command(std::string_view name) {
  for (command c : {command::stop, command::quit, command::reload, command::reopen,
                    command::upgrade, command::drain_workers, command::add_worker,
                    command::remove_worker})
    if (to_string(c) == name) return c;
  return std::nullopt;
}

namespace detail {

// "(default: TEXT)", the way --help shows the value a program set.
inline std::string shown_default(std::string_view text) {
  return detail::format("(default: {})", text);
}

inline std::string joined(const std::vector<std::string>& items, std::string_view none) {
  if (items.empty()) return std::string(none);
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : " ") + item;
  return out;
}

// "stop, quit, ... or remove-worker": the names in control_commands.
inline std::string control_command_names() {
  std::string out;
  constexpr std::size_t n = std::size(control_commands);
  for (std::size_t i = 0; i < n; ++i)
    out += detail::format("{}{}",
                          i == 0       ? ""
                          : i + 1 == n ? " or "
                                       : ", ",
                          control_commands[i].name);
  return out;
}

}  // namespace detail

command_line::command_line(options& opt) : opt_(opt) {
  // Each flag's help ends with the value the program set: what --help shows
  // is what this program does without the flag.
  using detail::shown_default;
  auto ms = [](milliseconds d) { return shown_default(detail::format("{}", d.count())); };
  auto on_off = [](bool on) { return shown_default(on ? "on" : "off"); };
  add("--listen", "ADDRESS",
      detail::format("listen on HOST:PORT, [V6]:PORT or unix:/PATH, then nginx's listen "
                  "parameters ('127.0.0.1:80 backlog=1024 deferred', 'unix:/run/app.sock "
                  "mode=0660'); repeat for more; '' for none {}",
                  shown_default(detail::joined(opt.listen, "none"))),
      [this](auto v) {
        if (!v.empty()) (void)parse_listen(v);  // refused here, before anything starts
        if (!listen_seen_) opt_.listen.clear();
        listen_seen_ = true;
        if (!v.empty()) opt_.listen.emplace_back(v);
      });
  add("--workers", "N",
      detail::format("number of worker processes {}",
                     shown_default(detail::format("{}", opt.workers))),
      [](options& o, std::string_view v) {
        o.workers = static_cast<unsigned>(parse_number("--workers", v, 1, 1024));
      });
  add("--pid-file", "PATH",
      detail::format("write the master's pid here; -s finds it here {}",
                  shown_default(opt.pid_file.empty() ? "none" : opt.pid_file)),
      [](options& o, std::string_view v) { o.pid_file = v; });
  add("--log-file", "PATH",
      detail::format("log here instead of stderr {}",
                  shown_default(opt.log_file.empty() ? "stderr" : opt.log_file)),
      [](options& o, std::string_view v) { o.log_file = v; });
  add("--log-level", "LEVEL",
      detail::format("debug, info, notice, warn or error {}", shown_default(to_string(opt.level))),
      [](options& o, std::string_view v) {
        for (auto l : {log_level::debug, log_level::info, log_level::notice, log_level::warn,
                       log_level::error})
          if (to_string(l) == v) return void(o.level = l);
        throw std::invalid_argument(detail::format("--log-level: unknown level '{}'", v));
      });
  add("--shutdown-timeout", "MS",
      detail::format("graceful stop: kill workers still draining after MS {}",
                     ms(opt.shutdown_timeout)),
      [](options& o, std::string_view v) {
        o.shutdown_timeout = milliseconds(parse_number("--shutdown-timeout", v, 0, 86'400'000));
      });
  add("--terminate-timeout", "MS",
      detail::format("fast stop: kill workers still running after MS {}",
                     ms(opt.terminate_timeout)),
      [](options& o, std::string_view v) {
        o.terminate_timeout =
            milliseconds(parse_number("--terminate-timeout", v, 0, 86'400'000));
      });
  add("--ready-timeout", "MS",
      detail::format("reload: roll back if new workers are not ready after MS {}",
                  ms(opt.ready_timeout)),
      [](options& o, std::string_view v) {
        o.ready_timeout = milliseconds(parse_number("--ready-timeout", v, 1, 86'400'000));
      });
  add("--heartbeat-timeout", "MS",
      detail::format("SIGABRT a worker or helper whose loop sent no heartbeat for MS, then replace it; 0: "
                  "off {}",
                  ms(opt.heartbeat_timeout)),
      [](options& o, std::string_view v) {
        auto n = parse_number("--heartbeat-timeout", v, 0, 86'400'000);
        if (n != 0 && n < 30)
          throw std::invalid_argument(detail::format(
              "--heartbeat-timeout: {} ms is too short to be met (at least 30, or 0 for off)", n));
        o.heartbeat_timeout = milliseconds(n);
      });
  add("--heartbeat-grace", "MS",
      detail::format("SIGKILL a worker still there MS after its SIGABRT {}",
                     ms(opt.heartbeat_grace)),
      [](options& o, std::string_view v) {
        o.heartbeat_grace = milliseconds(parse_number("--heartbeat-grace", v, 0, 86'400'000));
      });
  add("--max-requests", "N",
      detail::format("recycle a worker after N requests; 0: never {}",
                  shown_default(detail::format("{}", opt.max_requests))),
      [](options& o, std::string_view v) {
        o.max_requests =
            static_cast<std::uint64_t>(parse_number("--max-requests", v, 0, 1LL << 53));
      });
  add("--max-age", "MS",
      detail::format("recycle a worker after MS of life; 0: never {}", ms(opt.max_age)),
      [](options& o, std::string_view v) {
        o.max_age = milliseconds(parse_number("--max-age", v, 0, 365LL * 86'400'000));
      });
  add("--max-rss", "MB",
      detail::format("recycle a worker whose resident memory is above MB; 0: never {}",
                  shown_default(detail::format("{}", opt.max_rss >> 20))),
      [](options& o, std::string_view v) {
        o.max_rss = static_cast<std::uint64_t>(parse_number("--max-rss", v, 0, 1LL << 30)) << 20;
      });
  add("--rss-check-interval", "MS",
      detail::format("--max-rss: measure the workers every MS {}", ms(opt.rss_check_interval)),
      [](options& o, std::string_view v) {
        o.rss_check_interval =
            milliseconds(parse_number("--rss-check-interval", v, 10, 86'400'000));
      });
  add("--recycle-jitter", "PERCENT",
      detail::format(
          "raise each worker's --max-requests and --max-age by up to PERCENT, at random {}",
          shown_default(detail::format("{}", static_cast<int>(opt.recycle_jitter * 100 + 0.5)))),
      [](options& o, std::string_view v) {
        o.recycle_jitter =
            static_cast<double>(parse_number("--recycle-jitter", v, 0, 100)) / 100.0;
      });
  add("--reload-batch", "K",
      detail::format(
          "reload K slots at a time, each batch ready before the next; 0: all at once {}",
          shown_default(detail::format("{}", opt.reload_batch))),
      [](options& o, std::string_view v) {
        o.reload_batch = static_cast<unsigned>(parse_number("--reload-batch", v, 0, 1024));
      });
  add_flag("--subreaper",
           detail::format("reap orphaned descendants, as PID 1 does (PR_SET_CHILD_SUBREAPER) {}",
                       on_off(opt.subreaper)),
           &options::subreaper);
  add("--sigterm", "MODE",
      detail::format("what SIGTERM does: stop (fast), quit (graceful) or auto (quit as PID 1, "
                  "else the signal table's) {}",
                  shown_default(to_string(opt.sigterm))),
      [](options& o, std::string_view v) {
        for (auto m : {sigterm_mode::automatic, sigterm_mode::stop, sigterm_mode::quit})
          if (to_string(m) == v) return void(o.sigterm = m);
        throw std::invalid_argument(
            detail::format("--sigterm: unknown mode '{}' (expected auto, stop or quit)", v));
      });
  add_flag("--reuseport",
           detail::format("one SO_REUSEPORT socket per worker instead of a shared one {}",
                       on_off(opt.reuseport)),
           &options::reuseport);
  add_flag("--fd-store",
           detail::format("under systemd, keep the listening sockets in the service's "
                       "file-descriptor store (FileDescriptorStoreMax=) so that they outlive a "
                       "crashed master {}",
                       on_off(opt.fd_store)),
           &options::fd_store);
  add_flag("--daemon", detail::format("detach from the terminal {}", on_off(opt.daemon)),
           &options::daemon);
  add_flag("--single-process",
           detail::format("run the workers as threads of the master, for debugging {}",
                       on_off(opt.single_process)),
           &options::single_process);
  add_flag("--winch-with-terminal",
           detail::format("WINCH drains workers even with a controlling terminal {}",
                       on_off(opt.winch_with_terminal)),
           &options::winch_with_terminal);
  add("--control", "PATH",
      detail::format("control socket {}",
                  shown_default(!opt.control_socket.empty() ? opt.control_socket
                                : opt.pid_file.empty()      ? "<pid file>.sock"
                                                            : opt.pid_file + ".sock")),
      [](options& o, std::string_view v) { o.control_socket = v; });
  add("--upgrade-timeout", "MS",
      detail::format("-s upgrade: give up if the new master is not ready after MS {}",
                  ms(opt.upgrade_timeout)),
      [](options& o, std::string_view v) {
        o.upgrade_timeout = milliseconds(parse_number("--upgrade-timeout", v, 1, 86'400'000));
      });
  add_flag("--json", "-s status: print JSON", &options::json);
  add_flag("--no-wait", "-s reload: only send SIGHUP; do not wait for the outcome",
           &options::no_wait);
  add_flag("-t", "check the configuration (as a reload would load it) and exit",
           &options::check_config);
  add_flag("--check-config", "the same as -t", &options::check_config);
  add("-s", "COMMAND", "tell the running master COMMAND, one of those below",
      [](options& o, std::string_view v) {
        // The last -s wins, as with nginx: a signal and a query never both stand.
        o.signal.reset();
        o.query.clear();
        const auto* c = std::find_if(std::begin(control_commands), std::end(control_commands),
                                     [&](const control_command& cc) { return cc.name == v; });
        if (c == std::end(control_commands))
          throw std::invalid_argument(detail::format("-s: unknown command '{}' (expected {})", v,
                                                  detail::control_command_names()));
        if (c->asks) return void(o.query = std::string(v));
        o.signal = parse_command(v);
        if (!o.signal)  // the table names a signal no command carries
          throw std::logic_error(detail::format("-s {}: no command carries it", v));
      });

  // Privileges and per-worker settings, named after nginx's directives.
  auto unset_or = [](bool set, auto value) {
    return set ? shown_default(detail::format("{}", value)) : shown_default("the master's");
  };
  auto limit_text = [](std::uint64_t v) {
    return v == rlimit_unlimited ? std::string("unlimited") : detail::format("{}", v);
  };
  add("--user", "NAME",
      detail::format("workers run as this user (the master, started as root, keeps root) {}",
                  unset_or(!opt.user.empty(), opt.user)),
      [](options& o, std::string_view v) {
        if (v.empty()) throw std::invalid_argument("--user: expected a user name or number");
        o.user = v;
      });
  add("--group", "NAME",
      detail::format("the workers' group (with --user) {}",
                  shown_default(opt.group.empty() ? "the user's primary group" : opt.group)),
      [](options& o, std::string_view v) {
        if (v.empty()) throw std::invalid_argument("--group: expected a group name or number");
        o.group = v;
      });
  add("--worker-rlimit-nofile", "N",
      detail::format("each worker's limit of open files {}",
                  unset_or(opt.worker_rlimit_nofile.has_value(),
                           limit_text(opt.worker_rlimit_nofile.value_or(0)))),
      [](options& o, std::string_view v) {
        // The kernel's ceiling for fs.nr_open.
        o.worker_rlimit_nofile =
            static_cast<std::uint64_t>(parse_number("--worker-rlimit-nofile", v, 1, 1 << 30));
      });
  add("--worker-rlimit-core", "BYTES",
      detail::format("each worker's core file size limit, or 'unlimited' {}",
                  unset_or(opt.worker_rlimit_core.has_value(),
                           limit_text(opt.worker_rlimit_core.value_or(0)))),
      [](options& o, std::string_view v) {
        o.worker_rlimit_core = parse_rlimit("--worker-rlimit-core", v, rlimit_unlimited - 1);
      });
  add("--worker-cpu-affinity", "CPUS",
      detail::format(
          "worker k runs on the (k mod n)th of n CPUS: a list (0,2,4-7) or 'auto', "
          "the master's {}",
          shown_default(opt.worker_cpu_affinity.automatic ? std::string("auto")
                        : opt.worker_cpu_affinity.enabled()
                            ? detail::format("{} CPU(s)", opt.worker_cpu_affinity.cpus.size())
                            : std::string("off"))),
      [](options& o, std::string_view v) {
        o.worker_cpu_affinity = parse_cpu_affinity("--worker-cpu-affinity", v);
      });
  add("--worker-priority", "N",
      detail::format("each worker's nice value, -20 to 19 {}",
                  unset_or(opt.worker_priority.has_value(), opt.worker_priority.value_or(0))),
      [](options& o, std::string_view v) {
        o.worker_priority = static_cast<int>(parse_number("--worker-priority", v, -20, 19));
      });
  add("--worker-directory", "DIR",
      detail::format("each worker's working directory, an absolute path {}",
                  unset_or(!opt.worker_directory.empty(), opt.worker_directory)),
      [](options& o, std::string_view v) {
        if (!v.starts_with('/'))
          throw std::invalid_argument(
              detail::format("--worker-directory: expected an absolute path, got '{}'", v));
        o.worker_directory = v;
      });
}

command_line& command_line::add(std::string name, std::string metavar, std::string help, handler h) {
  flags_.push_back({std::move(name), std::move(metavar), std::move(help), std::move(h), {}});
  return *this;
}

command_line& command_line::add_flag(std::string name, std::string help, std::function<void()> h) {
  flags_.push_back({std::move(name), {}, std::move(help), {}, std::move(h)});
  return *this;
}

void command_line::add(std::string name, std::string metavar, std::string help,
                       standard_handler h) {
  flags_.push_back({std::move(name), std::move(metavar), std::move(help), {}, {}, h});
}

void command_line::add_flag(std::string name, std::string help, bool options::*sets) {
  flags_.push_back({std::move(name), {}, std::move(help), {}, {}, nullptr, sets});
}

std::optional<int> command_line::parse(int argc, const char* const* argv) {
  if (argc > 0 && argv[0]) {
    std::string_view p = argv[0];
    if (auto slash = p.rfind('/'); slash != std::string_view::npos) p.remove_prefix(slash + 1);
    if (!p.empty()) opt_.program_name = p;
  }
  try {
    for (int i = 1; i < argc; ++i) {
      std::string_view arg = argv[i];
      if (arg == "-h" || arg == "--help") {
        std::fputs(usage().c_str(), stdout);
        return 0;
      }
      std::optional<std::string_view> inline_value;
      if (auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
        inline_value = arg.substr(eq + 1);
        arg = arg.substr(0, eq);
      }
      auto f = std::find_if(flags_.begin(), flags_.end(),
                            [&](const flag& fl) { return fl.name == arg; });
      if (f == flags_.end())
        throw std::invalid_argument(detail::format("unknown option '{}'", argv[i]));
      if (!f->takes_value()) {
        if (inline_value)
          throw std::invalid_argument(detail::format("{} takes no value", f->name));
        if (f->sets)
          opt_.*(f->sets) = true;
        else
          f->on_flag();
        continue;
      }
      if (!inline_value) {
        if (i + 1 >= argc) throw std::invalid_argument(detail::format("{} needs a value", f->name));
        inline_value = argv[++i];
      }
      if (f->standard)
        f->standard(opt_, *inline_value);
      else
        f->on_value(*inline_value);
    }
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "%s: %s\nTry '%s --help'.\n", opt_.program_name.c_str(), e.what(),
                 opt_.program_name.c_str());
    return 2;
  }
  return std::nullopt;
}

std::string command_line::usage() const {
  std::string out =
      detail::format("usage: {} [options]\n       {} -s COMMAND [--pid-file PATH]\n\n",
                     opt_.program_name, opt_.program_name);
  for (const auto& f : flags_) {
    std::string lhs = f.metavar.empty() ? f.name : f.name + " " + f.metavar;
    out += detail::format("  {:<26} {}\n", lhs, f.help);
  }
  out += detail::format("  {:<26} {}\n", "-h, --help", "show this help");
  out += "\nCommands for -s (to the master named by the pid file):\n";
  for (const auto& c : control_commands) out += detail::format("  {:<26} {}\n", c.name, c.help);
  return out;
}

}  // namespace procmodel
