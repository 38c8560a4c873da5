// Glance over https: Glance has no TLS of its own, so Debian's stunnel4 sits
// in front of the real Glance, as an operator's TLS terminator would. kiln
// must accept the right certificate and refuse a wrong CA or host name.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <thread>

#include "kiln/cache/image_cache.h"
#include "kiln/glance/client.h"
#include "kiln/util/fs.h"
#include "assertions.h"
#include "peers.h"
#include "scratch.h"

namespace fs = std::filesystem;

namespace {

// A test CA, a server certificate signed by it for `names`, and another CA.
void make_certificates(const fs::path& dir, const std::string& subject_alt_names) {
  std::string d = dir.string();
  kiln::run_checked({{"sh", "-c",
                      "cd " + d +
                          " && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2"
                          " -subj '/CN=kiln test CA' 2>/dev/null"
                          " && openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr"
                          " -subj '/CN=glance' 2>/dev/null"
                          " && printf 'subjectAltName=" + subject_alt_names +
                          "\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > server.ext"
                          " && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial"
                          " -out server.crt -days 2 -extfile server.ext 2>/dev/null"
                          " && openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.crt"
                          " -days 2 -subj '/CN=other CA' 2>/dev/null"}});
}

// stunnel4 terminating TLS on a free loopback port, forwarding to Glance.
class TlsFront {
 public:
  explicit TlsFront(const fs::path& dir) {
    std::string glance = kiln::test::peers().glance_url;
    std::string glance_port = glance.substr(glance.rfind(':') + 1);
    port_ = free_port();
    kiln::test::write_text(dir / "stunnel.conf",
                           "foreground = yes\npid = " + (dir / "stunnel.pid").string() + "\noutput = " +
                               (dir / "stunnel.log").string() + "\n[glance]\naccept = 127.0.0.1:" +
                               std::to_string(port_) + "\nconnect = 127.0.0.1:" + glance_port +
                               "\ncert = " + (dir / "server.crt").string() + "\nkey = " +
                               (dir / "server.key").string() + "\n");
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      int log = ::open((dir / "stunnel.stderr").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(log, STDOUT_FILENO);
      ::dup2(log, STDERR_FILENO);
      ::execlp("stunnel4", "stunnel4", (dir / "stunnel.conf").c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    wait_until_listening();
  }
  ~TlsFront() {
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
  }
  int port() const { return port_; }

 private:
  static int free_port() {
    auto out = kiln::run_checked({{"python3", "-c",
                                   "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); "
                                   "print(s.getsockname()[1])"}});
    return std::stoi(out);
  }
  // Polls until stunnel accepts connections (it starts in ~50 ms).
  void wait_until_listening() const {
    for (int attempt = 0; attempt < 200; ++attempt) {
      int probe = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in address{};
      address.sin_family = AF_INET;
      address.sin_port = htons(static_cast<std::uint16_t>(port_));
      address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      bool up = ::connect(probe, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
      ::close(probe);
      if (up) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    FAIL("stunnel4 did not listen on port " << port_);
  }

  int pid_ = -1;
  int port_ = 0;
};

kiln::glance::GlanceClient client(const std::string& url, const kiln::http::TlsOptions& tls) {
  return kiln::glance::GlanceClient({kiln::http::parse_url(url)}, {}, tls);
}

}  // namespace

TEST_CASE("an image is fetched over https when the certificate chain and host name check out") {
  kiln::test::ScratchDir scratch;
  make_certificates(scratch.path(), "IP:127.0.0.1,DNS:localhost");
  TlsFront front(scratch.path());
  kiln::test::make_qcow2(scratch / "image.qcow2", "64M");
  std::string image_id = kiln::test::upload_image("over tls", "qcow2", scratch / "image.qcow2");

  for (std::string host : {"127.0.0.1", "localhost"}) {
    INFO(host);
    auto glance = client("https://" + host + ":" + std::to_string(front.port()), {(scratch / "ca.crt").string(), true});
    kiln::cache::CachePolicy policy;
    policy.reserved_bytes = 0;
    kiln::cache::ImageCache cache(scratch / ("instances-" + host), glance, policy);
    auto lease = cache.acquire(cache.lookup(image_id));
    REQUIRE(lease.base.downloaded_bytes == kiln::file_size(scratch / "image.qcow2"));
  }
}

TEST_CASE("https refuses a certificate from another CA, or for another host, unless told to be insecure") {
  kiln::test::ScratchDir scratch;
  make_certificates(scratch.path(), "DNS:localhost");
  TlsFront front(scratch.path());
  std::string image_id = kiln::test::upload_image("tls refused", "qcow2", "");
  std::string port = std::to_string(front.port());

  auto wrong_ca = client("https://localhost:" + port, {(scratch / "other-ca.crt").string(), true});
  REQUIRE_THROWS_WITH(wrong_ca.get_image(image_id), Catch::Contains("TLS failure"));
  // The certificate names localhost only; 127.0.0.1 is another host.
  auto wrong_host = client("https://127.0.0.1:" + port, {(scratch / "ca.crt").string(), true});
  REQUIRE_THROWS_WITH(wrong_host.get_image(image_id), Catch::Contains("TLS failure"));
  auto no_ca = client("https://localhost:" + port, {"", true});
  REQUIRE_THROWS_WITH(no_ca.get_image(image_id), Catch::Contains("TLS failure"));

  auto insecure = client("https://127.0.0.1:" + port, {"", false});
  REQUIRE(insecure.get_image(image_id).status == "queued");
}

TEST_CASE("plain http to a TLS port fails cleanly") {
  kiln::test::ScratchDir scratch;
  make_certificates(scratch.path(), "IP:127.0.0.1");
  TlsFront front(scratch.path());
  auto plain = client("http://127.0.0.1:" + std::to_string(front.port()), {});
  REQUIRE_KILN_ERROR(plain.get_image(kiln::test::random_uuid()), kiln::ErrorCode::kHttpError);
}
