# Tests of kilnd's daemon parts (lock, sd_notify, logging), its systemd units,
# the config schema and packaging; included from tests/CMakeLists.txt.

# The daemon's parts come from kilnd_agent (agent/CMakeLists.txt), the very
# objects kilnd links.
add_executable(kiln_agent_tests
  agent/test_agent_lock.cpp
  agent/test_notify.cpp
  agent/test_logging.cpp
  agent/test_config_schema.cpp
  agent/test_command_line.cpp
)
target_link_libraries(kiln_agent_tests PRIVATE kiln_test_support kilnd_agent)
target_compile_definitions(kiln_agent_tests PRIVATE KILN_SOURCE_DIR="${CMAKE_SOURCE_DIR}"
  KILN_KILND="$<TARGET_FILE:kilnd>" KILN_KILNCTL="$<TARGET_FILE:kilnctl>" KILN_VERSION="${KILN_VERSION_STRING}")
add_dependencies(kiln_agent_tests kilnd kilnctl)
catch_discover_tests(kiln_agent_tests TEST_PREFIX "agent: " EXTRA_ARGS -w NoTests PROPERTIES LABELS unit)

# The systemd unit and tmpfiles.d, judged by systemd's own tools.
set(KILN_AGENT_TESTS ${CMAKE_CURRENT_SOURCE_DIR}/agent)
add_test(NAME "agent: kilnd.service installs in the .deb's layout and passes systemd-analyze verify"
         COMMAND ${KILN_AGENT_TESTS}/verify-unit ${CMAKE_BINARY_DIR})
add_test(NAME "agent: kilnd.service's systemd-analyze security exposure is at most 4.0"
         COMMAND ${KILN_AGENT_TESTS}/unit-security ${CMAKE_SOURCE_DIR} 4.0)
add_test(NAME "agent: systemd-tmpfiles creates kiln's directories with modes QEMU can traverse"
         COMMAND ${KILN_AGENT_TESTS}/create-tmpfiles ${CMAKE_SOURCE_DIR})

# The bash completion, sourced in bash and asked for words (budget: a second).
add_test(NAME "agent: bash completion offers kilnctl's commands, options, instance uuids and image ids"
         COMMAND ${KILN_AGENT_TESTS}/check-completion ${CMAKE_SOURCE_DIR} $<TARGET_FILE:kilnctl>)
set_tests_properties("agent: bash completion offers kilnctl's commands, options, instance uuids and image ids"
                     PROPERTIES LABELS unit)

# The .deb: built by cpack and installed by dpkg (a fixture), then its kilnd started.
set(KILN_AGENT_DEB_DIR ${CMAKE_BINARY_DIR}/agent-deb)
add_test(NAME "agent: cpack builds a kiln .deb that dpkg installs, removes and purges in a throwaway root"
         COMMAND ${KILN_AGENT_TESTS}/check-deb ${CMAKE_BINARY_DIR} ${KILN_AGENT_DEB_DIR})
add_test(NAME "agent: the packaged kilnd starts with the sample config, sends READY=1, answers /healthz and stops on SIGTERM"
         COMMAND ${KILN_AGENT_TESTS}/start-packaged-kilnd ${KILN_AGENT_DEB_DIR})
set_tests_properties(
  "agent: kilnd.service installs in the .deb's layout and passes systemd-analyze verify"
  "agent: cpack builds a kiln .deb that dpkg installs, removes and purges in a throwaway root"
  PROPERTIES RESOURCE_LOCK kiln_install TIMEOUT 600)
set_tests_properties(
  "agent: cpack builds a kiln .deb that dpkg installs, removes and purges in a throwaway root"
  PROPERTIES FIXTURES_SETUP kiln_deb)
set_tests_properties(
  "agent: the packaged kilnd starts with the sample config, sends READY=1, answers /healthz and stops on SIGTERM"
  PROPERTIES FIXTURES_REQUIRED kiln_deb TIMEOUT 300)
set_tests_properties(
  "agent: kilnd.service installs in the .deb's layout and passes systemd-analyze verify"
  "agent: kilnd.service's systemd-analyze security exposure is at most 4.0"
  "agent: systemd-tmpfiles creates kiln's directories with modes QEMU can traverse"
  "agent: cpack builds a kiln .deb that dpkg installs, removes and purges in a throwaway root"
  "agent: the packaged kilnd starts with the sample config, sends READY=1, answers /healthz and stops on SIGTERM"
  PROPERTIES LABELS agent)
