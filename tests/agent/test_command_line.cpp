// Both binaries' command lines as an operator meets them: --version, and a
// usage error's exit code (2, as for most Unix tools).
#include <catch2/catch.hpp>

#include "kiln/util/subprocess.h"

TEST_CASE("kilnd and kilnctl print their version and exit 2 on a usage error") {
  for (const auto& [binary, name] : {std::pair{KILN_KILND, "kilnd"}, std::pair{KILN_KILNCTL, "kilnctl"}}) {
    INFO(name);
    auto version = kiln::run({{binary, "--version"}});
    REQUIRE(version.exit_code == 0);
    REQUIRE(version.out == std::string(name) + " " + KILN_VERSION + "\n");
    // The build's git revision (or "unknown" outside a checkout), from configure time.
    REQUIRE(std::string(KILN_VERSION).find(" (git ") != std::string::npos);
    auto usage = kiln::run({{binary, "--no-such-option"}});
    REQUIRE(usage.exit_code == 2);
    REQUIRE(usage.err.find("--no-such-option") != std::string::npos);
  }
  auto misspelled = kiln::run({{KILN_KILNCTL, "bootx"}});
  REQUIRE(misspelled.exit_code == 2);
  REQUIRE(misspelled.err.find("unknown command or option 'bootx'") != std::string::npos);
}

TEST_CASE("every kilnctl subcommand's help shows the global options, and the completion helper stays hidden") {
  for (const std::vector<std::string>& command :
       {std::vector<std::string>{"cache", "ls"}, {"instance", "show"}, {"boot"}, {"du"}}) {
    std::vector<std::string> argv = {KILN_KILNCTL};
    argv.insert(argv.end(), command.begin(), command.end());
    argv.push_back("--help");
    auto help = kiln::run({argv});
    INFO(command.front() << ": " << help.out);
    REQUIRE(help.exit_code == 0);
    REQUIRE(help.out.find("Global options") != std::string::npos);
    REQUIRE(help.out.find("--json") != std::string::npos);
    REQUIRE(help.out.find("--instances-path") != std::string::npos);
  }
  auto top = kiln::run({{KILN_KILNCTL, "--help"}});
  REQUIRE(top.exit_code == 0);
  REQUIRE(top.out.find("__complete") == std::string::npos);
}
