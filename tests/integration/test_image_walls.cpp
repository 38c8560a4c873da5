// The walls behind the inspector, through the real Glance (issue 12): with
// the inspector turned off (a test-only policy switch), hostile images still
// put no host byte in a base, because qemu-img info's second opinion and the
// sandboxed conversion each stop them; and a download stops the moment it
// passes the size Glance recorded, or [image_cache] max_download_bytes when
// Glance recorded none, with nothing past it written.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <sstream>

#include "assertions.h"
#include "kiln/cache/image_cache.h"
#include "kiln/util/fs.h"
#include "peers.h"
#include "scratch.h"

namespace fs = std::filesystem;
using kiln::ErrorCode;

namespace {

constexpr std::uint64_t kMiB = 1024 * 1024;

// A proxy in front of the real Glance that lies as a broken or hostile server
// would: --extra N serves N bytes more than the image (Content-Length
// included), --no-size makes image records say "size": null.
const char* const kLyingProxy = R"PY(
import http.client, http.server, json, sys
upstream, extra, no_size = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
class Lie(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        conn = http.client.HTTPConnection("127.0.0.1", upstream)
        conn.request("GET", self.path, headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
        answer = conn.getresponse()
        body = answer.read()
        if self.path.endswith("/file"):
            body += b"\xAA" * extra
        elif no_size and self.path.startswith("/v2/images/"):
            record = json.loads(body)
            record["size"] = None
            body = json.dumps(record).encode()
        self.send_response(answer.status)
        for k, v in answer.getheaders():
            if k.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
class Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, address): pass  # kiln hanging up mid-body is the point
server = Server(("127.0.0.1", 0), Lie)
print(server.server_address[1], flush=True)
server.serve_forever()
)PY";

class LyingGlance {
 public:
  LyingGlance(std::uint64_t extra_bytes, bool no_size)
      : process_({"python3", "-c", kLyingProxy, kiln::test::glance_port(), std::to_string(extra_bytes),
                  no_size ? "1" : "0"}) {}
  std::string url() const { return process_.url(); }

 private:
  kiln::test::PortProcess process_;
};

// Runs a program as kilnd.service would: its capability bounding set, no_new_privs,
// /proc mounted subset=pid, and its SystemCallFilter lines (expanded with
// systemd-analyze) loaded as a seccomp allow-list, EPERM otherwise. Extra
// system calls to deny come after the unit file and the program.
// usage: python3 -c SCRIPT UNIT_FILE EXTRA_DENIED PROGRAM ARGS...
const char* const kUnitFilter = R"PY(
import ctypes, os, subprocess, sys
unit, extra, program = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
def expand(item, seen):
    if not item.startswith("@"):
        return {item}
    names = set()
    out = subprocess.run(["systemd-analyze", "syscall-filter", item], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines()[1:]:
        t = line.strip()
        if t and not t.startswith("#") and t not in seen:
            seen.add(t)
            names |= expand(t, seen)
    return names
allow, deny = set(), set(n for n in extra if n)
for line in open(unit).read().splitlines():
    if line.startswith("SystemCallFilter="):
        value = line.split("=", 1)[1]
        target = deny if value.startswith("~") else allow
        for item in value.lstrip("~").split():
            target |= expand(item, set())
lib = ctypes.CDLL("libseccomp.so.2")
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
context = lib.seccomp_init(0x00050000 | 1)  # SCMP_ACT_ERRNO(EPERM)
for name in sorted(allow - deny):
    number = lib.seccomp_syscall_resolve_name(name.encode())
    if number >= 0:
        assert lib.seccomp_rule_add(context, 0x7fff0000, number, 0) == 0, name
assert ctypes.CDLL(None).prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
assert lib.seccomp_load(context) == 0
os.execv(program[0], program)
)PY";

// The unit's CapabilityBoundingSet lines in setpriv's spelling: ",+chown,+setuid...".
std::string unit_capabilities(const std::string& unit_text) {
  std::string caps;
  std::istringstream lines(unit_text);
  for (std::string line; std::getline(lines, line);) {
    if (!line.starts_with("CapabilityBoundingSet=")) continue;
    std::istringstream names(line.substr(line.find('=') + 1));
    for (std::string name; names >> name;) {
      std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
      caps += ",+" + name.substr(4);  // "cap_setuid" -> "setuid"
    }
  }
  return caps;
}

kiln::CommandResult run_as_kilnd_unit(const std::string& extra_denied, const std::vector<std::string>& program) {
  std::string unit = KILN_SOURCE_DIR "/systemd/kilnd.service";
  // LeakSanitizer (the suite's ASan stage) stops the world with ptrace, which
  // the unit's filter forbids as it should: leaks are checked by every other test.
  std::string script = "export ASAN_OPTIONS=\"${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0\" && "
                       "mount -t proc -o subset=pid,hidepid=invisible proc /proc && exec setpriv --bounding-set=-all" +
                       unit_capabilities(kiln::read_file(unit)) +
                       " --inh-caps=-all --no-new-privs -- python3 -c \"$0\" \"$@\"";
  std::vector<std::string> argv = {"unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                                   kUnitFilter, unit, extra_denied};
  argv.insert(argv.end(), program.begin(), program.end());
  return kiln::run({argv, {}, std::chrono::minutes(2)});
}

std::string host_secret() {
  std::string passwd = kiln::read_file("/etc/passwd");
  REQUIRE(passwd.starts_with("root:"));
  return passwd.substr(0, passwd.find('\n'));
}

void qemu_img(std::vector<std::string> args) {
  args.insert(args.begin(), "qemu-img");
  kiln::run_checked({args});
}

// Every file under `directory`, read whole: where a leaked host byte would be.
bool any_file_contains(const fs::path& directory, const std::string& needle) {
  if (!fs::exists(directory)) return false;
  for (const auto& entry : fs::recursive_directory_iterator(directory)) {
    if (entry.is_regular_file() && kiln::read_file(entry.path()).find(needle) != std::string::npos) return true;
  }
  return false;
}

struct Hostile {
  std::string what;
  std::string disk_format;
  std::string qemu_format;
  std::function<void(const fs::path&)> make;
};

std::vector<Hostile> hostile_images() {
  return {
      {"qcow2 whose backing file is /etc/passwd", "qcow2", "qcow2",
       [](const fs::path& file) {
         qemu_img({"create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", "/etc/passwd", file.string(), "1M"});
       }},
      {"vmdk descriptor whose flat extent is /etc/passwd", "vmdk", "vmdk",
       [](const fs::path& file) {
         kiln::test::write_text(file, "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
                                      "createType=\"monolithicFlat\"\n\nRW 8 FLAT \"/etc/passwd\" 0\n");
       }},
  };
}

kiln::cache::CachePolicy walls_policy() {
  kiln::cache::CachePolicy policy;
  policy.reserved_bytes = 0;
  policy.retry_backoff = std::chrono::milliseconds(10);
  return policy;
}

}  // namespace

TEST_CASE("with the inspector off, qemu-img info's second opinion refuses hostile images from Glance") {
  for (const Hostile& hostile : hostile_images()) {
    DYNAMIC_SECTION(hostile.what) {
      kiln::test::ScratchDir scratch;
      fs::path file = scratch / "hostile";
      hostile.make(file);
      // The proof that the image is hostile: plain qemu-img copies the host file.
      qemu_img({"convert", "-q", "-f", hostile.qemu_format, "-O", "raw", file.string(), (scratch / "plain").string()});
      REQUIRE(kiln::read_file(scratch / "plain").starts_with(host_secret()));

      std::string image_id = kiln::test::upload_image("hostile", hostile.disk_format, file);
      kiln::glance::GlanceClient glance({kiln::http::parse_url(kiln::test::peers().glance_url)});
      auto policy = walls_policy();
      policy.inspect_images = false;
      kiln::cache::ImageCache cache(scratch / "instances", glance, policy);
      REQUIRE_KILN_ERROR_MENTIONS(cache.acquire(cache.lookup(image_id)), ErrorCode::kImageQemuDisagrees,
                                  "/etc/passwd");
      REQUIRE_FALSE(any_file_contains(scratch / "instances", host_secret()));
    }
  }
}

TEST_CASE("with the inspector and the second opinion off, the sandboxed conversion still puts no host byte in a base") {
  for (const Hostile& hostile : hostile_images()) {
    DYNAMIC_SECTION(hostile.what) {
      kiln::test::ScratchDir scratch;
      fs::path file = scratch / "hostile";
      hostile.make(file);
      std::string image_id = kiln::test::upload_image("hostile", hostile.disk_format, file);
      kiln::glance::GlanceClient glance({kiln::http::parse_url(kiln::test::peers().glance_url)});
      auto policy = walls_policy();
      policy.inspect_images = false;
      policy.ask_qemu_second_opinion = false;
      kiln::cache::ImageCache cache(scratch / "instances", glance, policy);
      REQUIRE_KILN_ERROR_MENTIONS(cache.acquire(cache.lookup(image_id)), ErrorCode::kConversionFailed,
                                  "Could not open '/etc/passwd'");
      REQUIRE_FALSE(fs::exists(scratch / "instances" / "_base" / kiln::cache::base_name_for(image_id)));
      REQUIRE_FALSE(any_file_contains(scratch / "instances", host_secret()));
    }
  }
}

TEST_CASE("a download stops the moment it passes the size Glance recorded") {
  kiln::test::ScratchDir scratch;
  fs::path image = scratch / "image.raw";
  kiln::run_checked({{"sh", "-c", "head -c 3145728 /dev/urandom > " + image.string()}});
  std::string image_id = kiln::test::upload_image("oversized", "raw", image);
  LyingGlance lying(2 * kMiB, false);
  kiln::glance::GlanceClient glance({kiln::http::parse_url(lying.url())});
  kiln::cache::ImageCache cache(scratch / "instances", glance, walls_policy());
  auto record = cache.lookup(image_id);
  REQUIRE(record.size == 3 * kMiB);

  std::uint64_t most = 0;
  auto progress = [&](std::uint64_t done, std::optional<std::uint64_t>) { most = std::max(most, done); };
  REQUIRE_KILN_ERROR_MENTIONS(cache.acquire(record, progress), ErrorCode::kImageTooLarge,
                              "more than the 3145728 bytes Glance recorded");
  REQUIRE(most <= 3 * kMiB);  // not a byte past the recorded size reached the .part
  REQUIRE_FALSE(fs::exists(scratch / "instances" / "_base" / kiln::cache::base_name_for(image_id)));
}

TEST_CASE("without a recorded size a download stops past max_download_bytes") {
  kiln::test::ScratchDir scratch;
  fs::path image = scratch / "image.raw";
  kiln::run_checked({{"sh", "-c", "head -c 3145728 /dev/urandom > " + image.string()}});
  std::string image_id = kiln::test::upload_image("sizeless", "raw", image);
  LyingGlance lying(0, true);
  kiln::glance::GlanceClient glance({kiln::http::parse_url(lying.url())});

  auto policy = walls_policy();
  policy.max_download_bytes = kMiB;
  kiln::cache::ImageCache bounded(scratch / "instances", glance, policy);
  auto record = bounded.lookup(image_id);
  REQUIRE_FALSE(record.size);
  std::uint64_t most = 0;
  auto progress = [&](std::uint64_t done, std::optional<std::uint64_t>) { most = std::max(most, done); };
  REQUIRE_KILN_ERROR_MENTIONS(bounded.acquire(record, progress), ErrorCode::kImageTooLarge, "max_download_bytes");
  REQUIRE(most <= kMiB);

  // The same image under the default bound (64 GiB) arrives whole.
  kiln::cache::ImageCache unbounded(scratch / "other-instances", glance, walls_policy());
  auto lease = unbounded.acquire(unbounded.lookup(image_id));
  REQUIRE(kiln::read_file(lease.base.path) == kiln::read_file(image));
}

TEST_CASE("kilnctl fetches and converts an image under kilnd.service's capabilities and system call filter") {
  kiln::test::ScratchDir scratch;
  kiln::test::make_qcow2(scratch / "image.qcow2", "16M");
  std::string image_id = kiln::test::upload_image("under-the-unit", "qcow2", scratch / "image.qcow2");
  kiln::test::write_text(scratch / "kiln.conf", "[image_cache]\nreserved_space_mb = 0\n");
  auto fetch = [&](const std::string& instances, const std::string& extra_denied) {
    return run_as_kilnd_unit(extra_denied, {KILN_KILNCTL, "--json", "--direct", "--config", (scratch / "kiln.conf").string(),
                                            "--glance", kiln::test::peers().glance_url, "--instances-path",
                                            (scratch / instances).string(), "cache", "fetch", image_id});
  };
  auto fetched = fetch("instances", "");
  INFO(fetched.out << fetched.err);
  REQUIRE(fetched.exit_code == 0);
  REQUIRE(kiln::file_size(scratch / "instances" / "_base" / kiln::cache::base_name_for(image_id)) == 16 * kMiB);

  // The same unit without mount for the sandbox (as it was before issue 12): no qemu-img can run.
  auto refused = fetch("other-instances", "mount");
  INFO(refused.out << refused.err);
  REQUIRE(refused.exit_code != 0);
  REQUIRE(refused.out.find("kiln's sandbox") != std::string::npos);
}

TEST_CASE("the private directory of a conversion killed with kiln is removed by the next fetch of that image") {
  kiln::test::ScratchDir scratch;
  kiln::test::make_qcow2(scratch / "image.qcow2", "16M");
  std::string image_id = kiln::test::upload_image("after-a-crash", "qcow2", scratch / "image.qcow2");
  std::string base = kiln::cache::base_name_for(image_id);
  fs::path leftover = scratch / "instances" / "_base" / ("." + base + ".converted.sandbox-Ab12Cd");
  fs::create_directories(leftover);
  kiln::test::write_text(leftover / "file", "half a conversion");
  fs::path other = scratch / "instances" / "_base" / ".someone-else.converted.sandbox-Ab12Cd";
  fs::create_directories(other);

  kiln::glance::GlanceClient glance({kiln::http::parse_url(kiln::test::peers().glance_url)});
  kiln::cache::ImageCache cache(scratch / "instances", glance, walls_policy());
  auto lease = cache.acquire(cache.lookup(image_id));
  REQUIRE(kiln::file_size(lease.base.path) == 16 * kMiB);
  REQUIRE_FALSE(fs::exists(leftover));
  REQUIRE(fs::exists(other));  // not this image's: its own lock guards it
}
