# Tests of lib/rpc and of the kilnd binary; included from tests/CMakeLists.txt.

# Fast: lib/rpc in-process (test:///default, no peers).
add_executable(kiln_rpc_unit_tests rpc/test_rpc_validation.cpp rpc/test_rpc_server.cpp rpc/test_operation_journal.cpp
  rpc/raw_connection.cpp)
target_link_libraries(kiln_rpc_unit_tests PRIVATE kiln_test_support Boost::headers Threads::Threads)
catch_discover_tests(kiln_rpc_unit_tests TEST_PREFIX "rpc: " EXTRA_ARGS -w NoTests PROPERTIES TIMEOUT 120 LABELS unit)

# kilnd itself against the real peers (the `peers` fixture of tests/CMakeLists.txt).
add_executable(kiln_kilnd_tests rpc/test_kilnd.cpp rpc/test_kilnd_operations.cpp rpc/kilnd_process.cpp
  integration/peers.cpp)
target_include_directories(kiln_kilnd_tests PRIVATE integration)
target_compile_definitions(kiln_kilnd_tests PRIVATE
  KILN_PEERS_ENV="${KILN_PEERS_ENV}" KILN_KILND="$<TARGET_FILE:kilnd>" KILN_KILNCTL="$<TARGET_FILE:kilnctl>"
  KILN_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
add_dependencies(kiln_kilnd_tests kilnd kilnctl)
target_link_libraries(kiln_kilnd_tests PRIVATE kiln_test_support)
catch_discover_tests(kiln_kilnd_tests TEST_PREFIX "kilnd: " EXTRA_ARGS -w NoTests PROPERTIES FIXTURES_REQUIRED peers TIMEOUT 600 LABELS peers RESOURCE_LOCK libvirtd)

# kilnd's socket under abuse: raw bytes from root and from a second uid on a
# real kilnd (libvirt test:///default, no Glance, so no peers fixture).
add_executable(kiln_kilnd_abuse_tests rpc/test_kilnd_abuse.cpp rpc/kilnd_process.cpp rpc/raw_connection.cpp)
target_compile_definitions(kiln_kilnd_abuse_tests PRIVATE KILN_KILND="$<TARGET_FILE:kilnd>")
add_dependencies(kiln_kilnd_abuse_tests kilnd)
target_link_libraries(kiln_kilnd_abuse_tests PRIVATE kiln_test_support)
catch_discover_tests(kiln_kilnd_abuse_tests TEST_PREFIX "kilnd abuse: " EXTRA_ARGS -w NoTests PROPERTIES TIMEOUT 180 LABELS unit)

# kilnd on RabbitMQ (lib/bus): a private broker (tools/peers/rabbitmq) as the
# `bus` fixture, port 27150; the fault tests start their own on 27160 and
# 27170. The cleanup purges every broker under ${KILN_BUS_DIR}, also those of
# a test that died. Needs the peers' Glance, so both fixtures (set below).
set(KILN_BUS_DIR ${CMAKE_BINARY_DIR}/bus)
add_test(NAME "bus: start a private RabbitMQ"
         COMMAND sh -c "for d in '${KILN_BUS_DIR}'/*; do '${CMAKE_SOURCE_DIR}/tools/peers/rabbitmq' purge \"$d\"; done; exec '${CMAKE_SOURCE_DIR}/tools/peers/rabbitmq' start '${KILN_BUS_DIR}/fixture' 27150")
set_tests_properties("bus: start a private RabbitMQ" PROPERTIES FIXTURES_SETUP bus TIMEOUT 120 LABELS "bus;fleet")
add_test(NAME "bus: stop every private RabbitMQ"
         COMMAND sh -c "for d in '${KILN_BUS_DIR}'/*; do '${CMAKE_SOURCE_DIR}/tools/peers/rabbitmq' purge \"$d\"; done")
set_tests_properties("bus: stop every private RabbitMQ" PROPERTIES FIXTURES_CLEANUP bus TIMEOUT 120 LABELS "bus;fleet")

add_executable(kiln_bus_tests bus/test_bus.cpp bus/bus_support.cpp rpc/kilnd_process.cpp integration/peers.cpp)
target_include_directories(kiln_bus_tests PRIVATE integration rpc)
target_compile_definitions(kiln_bus_tests PRIVATE
  KILN_PEERS_ENV="${KILN_PEERS_ENV}" KILN_KILND="$<TARGET_FILE:kilnd>" KILN_KILNCTL="$<TARGET_FILE:kilnctl>"
  KILN_SOURCE_DIR="${CMAKE_SOURCE_DIR}" KILN_BUS_DIR="${KILN_BUS_DIR}" KILN_RABBITMQ="${CMAKE_SOURCE_DIR}/tools/peers/rabbitmq")
add_dependencies(kiln_bus_tests kilnd kilnctl)
target_link_libraries(kiln_bus_tests PRIVATE kiln_test_support kiln_bus)
catch_discover_tests(kiln_bus_tests TEST_PREFIX "bus: " EXTRA_ARGS -w NoTests TEST_LIST KILN_BUS_TESTS
  PROPERTIES TIMEOUT 300 LABELS bus RESOURCE_LOCK rabbitmq-private)
file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/kiln_bus_fixtures.cmake
  "if(KILN_BUS_TESTS)\n  set_tests_properties(\${KILN_BUS_TESTS} PROPERTIES FIXTURES_REQUIRED \"peers;bus\")\nendif()\n")
set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES ${CMAKE_CURRENT_BINARY_DIR}/kiln_bus_fixtures.cmake)

# A fleet in one test (tests/fleet/fleet-test): 20 kilnd in network namespaces
# on a bridge it makes, one private RabbitMQ restarted mid-storm, one host cut
# from it for 30 s, 200 boots over 3 images through kilnctl fleet. Budget: the
# storm 150 s, the whole test under 5 min (TIMEOUT 300); under the sanitizers,
# where 20 kilnd and 200 kilnctl runs each cost several times more CPU, 450 s
# and 10 min. Label `fleet`; its namespaces, bridge and broker are removed by
# the cleanup even when it dies.
set(KILN_FLEET_DIR ${CMAKE_BINARY_DIR}/fleet-work)
if(KILN_SANITIZE)
  set(KILN_FLEET_BUDGET 450)
  set(KILN_FLEET_TIMEOUT 600)
else()
  set(KILN_FLEET_BUDGET 150)
  set(KILN_FLEET_TIMEOUT 300)
endif()
add_test(NAME "fleet: 200 boots on 20 kilnd hosts over RabbitMQ survive a broker restart and a 30 s cut, Glance serves each image once per host"
         COMMAND ${CMAKE_SOURCE_DIR}/tests/fleet/fleet-test ${KILN_PEERS_ENV} $<TARGET_FILE:kilnd> $<TARGET_FILE:kilnctl>
                 ${CMAKE_SOURCE_DIR}/tools/peers/rabbitmq ${KILN_FLEET_DIR} 20 200 30 ${KILN_FLEET_BUDGET})
set_tests_properties("fleet: 200 boots on 20 kilnd hosts over RabbitMQ survive a broker restart and a 30 s cut, Glance serves each image once per host"
  PROPERTIES FIXTURES_REQUIRED "peers;fleet" TIMEOUT ${KILN_FLEET_TIMEOUT} LABELS fleet RESOURCE_LOCK rabbitmq-private)
add_test(NAME "fleet: remove the namespaces, bridge and broker" COMMAND ${CMAKE_SOURCE_DIR}/tests/fleet/fleet-cleanup ${KILN_FLEET_DIR})
set_tests_properties("fleet: remove the namespaces, bridge and broker" PROPERTIES FIXTURES_CLEANUP fleet TIMEOUT 60 LABELS fleet)
