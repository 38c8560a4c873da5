# Tests of kilnd's daemon parts (lock, sd_notify, logging), its systemd units,
# the config schema and packaging; included from tests/CMakeLists.txt.

# agent/ is compiled only into kilnd, so the parts under test are compiled
# again here, from the same sources.
add_executable(kiln_agent_tests
  agent/test_agent_lock.cpp
  agent/test_notify.cpp
  agent/test_logging.cpp
  ${CMAKE_SOURCE_DIR}/agent/agent_lock.cpp
  ${CMAKE_SOURCE_DIR}/agent/notify.cpp
  ${CMAKE_SOURCE_DIR}/agent/logging.cpp
)
target_include_directories(kiln_agent_tests PRIVATE ${CMAKE_SOURCE_DIR}/agent)
target_link_libraries(kiln_agent_tests PRIVATE kiln_test_support spdlog::spdlog PkgConfig::SYSTEMD)
catch_discover_tests(kiln_agent_tests TEST_PREFIX "agent: ")
