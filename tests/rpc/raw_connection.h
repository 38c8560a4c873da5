// A client that speaks bytes, not HTTP: for requests a well-behaved client
// never sends (trickled, oversized, half-finished).
#pragma once

#include <chrono>
#include <filesystem>
#include <string>

namespace kiln::test {

class RawConnection {
 public:
  explicit RawConnection(const std::filesystem::path& socket);
  ~RawConnection();
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  // False when the peer closed the connection.
  bool send(const std::string& bytes);
  // Everything until the peer closes, or until `timeout`.
  std::string read_until_closed(std::chrono::milliseconds timeout);
  // True when the peer closed within `timeout` (reads and drops what it sent).
  bool closed_within(std::chrono::milliseconds timeout);

 private:
  int fd_ = -1;
  bool closed_ = false;
};

}  // namespace kiln::test
