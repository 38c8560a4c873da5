# lib/bus: kiln's message bus (RabbitMQ through rabbitmq-c), a library of its
# own above libkiln's rpc: only kilnd and kilnctl link it. Included from
# lib/CMakeLists.txt.
find_package(rabbitmq-c CONFIG REQUIRED)
add_library(kiln_bus STATIC
  bus/amqp_link.cpp
  bus/topology.cpp
  bus/agent_bus.cpp
  bus/fleet_client.cpp
)
target_link_libraries(kiln_bus
  PUBLIC kiln nlohmann_json::nlohmann_json
  PRIVATE rabbitmq::rabbitmq spdlog::spdlog Threads::Threads)
