// kilnd's log lines: journald priority prefixes under systemd, timestamps elsewhere.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <regex>
#include <string>

#include <spdlog/spdlog.h>

#include "logging.h"

namespace {

// Runs `body` with stderr redirected into a pipe and returns what it wrote.
// With `as_journal`, JOURNAL_STREAM names the pipe, as systemd names the
// journal's stream socket.
template <typename Body>
std::string captured_stderr(bool as_journal, Body body) {
  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  int saved = ::dup(STDERR_FILENO);
  REQUIRE(saved >= 0);
  REQUIRE(::dup2(pipe_fds[1], STDERR_FILENO) == STDERR_FILENO);
  ::close(pipe_fds[1]);
  struct stat status {};
  REQUIRE(::fstat(STDERR_FILENO, &status) == 0);
  if (as_journal) {
    std::string stream = std::to_string(status.st_dev) + ":" + std::to_string(status.st_ino);
    ::setenv("JOURNAL_STREAM", stream.c_str(), 1);
  } else {
    ::unsetenv("JOURNAL_STREAM");
  }
  body();
  spdlog::default_logger()->flush();
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  ::unsetenv("JOURNAL_STREAM");
  std::string text;
  char buffer[4096];
  ssize_t count;
  while ((count = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0) text.append(buffer, static_cast<std::size_t>(count));
  ::close(pipe_fds[0]);
  return text;
}

}  // namespace

TEST_CASE("under systemd each line starts with its syslog priority and has no timestamp", "[logging]") {
  std::string text = captured_stderr(true, [] {
    kilnd::setup_logging(/*debug=*/true);
    spdlog::info("operation=op-1 instance=9f1c image=cirros event=boot_started");
    spdlog::warn("event=slow_download image=cirros");
    spdlog::error("operation=op-1 code=checksum_mismatch");
    spdlog::critical("event=cannot_listen");
    spdlog::debug("event=detail");
  });
  REQUIRE(text ==
          "<6>operation=op-1 instance=9f1c image=cirros event=boot_started\n"
          "<4>event=slow_download image=cirros\n"
          "<3>operation=op-1 code=checksum_mismatch\n"
          "<2>event=cannot_listen\n"
          "<7>event=detail\n");
}

TEST_CASE("run by hand, lines carry a UTC timestamp and the level", "[logging]") {
  std::string text = captured_stderr(false, [] {
    kilnd::setup_logging(/*debug=*/false);
    spdlog::info("event=listening socket=/run/kiln/kiln.sock");
    spdlog::debug("event=hidden_without_debug");
  });
  INFO(text);
  REQUIRE(std::regex_match(text, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z info event=listening socket=/run/kiln/kiln.sock\n)")));
}

TEST_CASE("a JOURNAL_STREAM inherited by a process whose stderr goes elsewhere is not trusted", "[logging]") {
  ::setenv("JOURNAL_STREAM", "1:1", 1);
  REQUIRE_FALSE(kilnd::stderr_is_journal());
  ::unsetenv("JOURNAL_STREAM");
  std::string text = captured_stderr(false, [] {
    ::setenv("JOURNAL_STREAM", "1:1", 1);
    kilnd::setup_logging(false);
    spdlog::info("event=x");
  });
  REQUIRE(text.rfind("<6>", 0) == std::string::npos);
  REQUIRE(text.find(" info event=x\n") != std::string::npos);
}

TEST_CASE("a message with line breaks stays one journal line", "[logging]") {
  std::string text = captured_stderr(true, [] {
    kilnd::setup_logging(false);
    spdlog::error("code=libvirt_error message=\"first\nsecond\r\nthird\"");
  });
  REQUIRE(text == "<3>code=libvirt_error message=\"first second  third\"\n");
}
