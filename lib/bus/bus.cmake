# lib/bus: kiln's message bus (RabbitMQ through rabbitmq-c), the module above
# rpc: it carries the same requests to the same rpc::Service. Included from
# lib/CMakeLists.txt.
find_package(rabbitmq-c CONFIG REQUIRED)
kiln_module(bus USES rpc SOURCES
  bus/amqp_link.cpp
  bus/topology.cpp
  bus/agent_bus.cpp
  bus/fleet_client.cpp
)
target_link_libraries(kiln_bus PRIVATE rabbitmq::rabbitmq spdlog::spdlog)
