// The wall behind the inspector: every qemu-img kiln runs can open only its
// input and output (kiln/util/sandbox.h), is bounded by what was verified
// (kiln/image/converter.h), and qemu-img info must read an image as the
// inspector did (kiln/image/second_opinion.h). Hostile images here are made so
// that plain qemu-img, run on the same file, does copy host bytes: each test
// shows that first, so it would fail if the sandbox let qemu through.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>

#include "kiln/disk/overlay.h"
#include "kiln/image/converter.h"
#include "kiln/image/inspector.h"
#include "kiln/image/second_opinion.h"
#include "kiln/util/error.h"
#include "kiln/util/fs.h"
#include "kiln/util/sandbox.h"
#include "kiln/util/subprocess.h"
#include "assertions.h"
#include "scratch.h"

namespace fs = std::filesystem;
using kiln::ErrorCode;

namespace {

std::string read_prefix(const fs::path& path, std::size_t bytes) {
  std::ifstream in(path, std::ios::binary);
  std::string data(bytes, '\0');
  in.read(data.data(), static_cast<std::streamsize>(bytes));
  data.resize(static_cast<std::size_t>(in.gcount()));
  return data;
}

// The first line of /etc/passwd: what a leak would copy into a disk.
std::string host_secret() {
  std::string head = read_prefix("/etc/passwd", 256);
  REQUIRE(head.starts_with("root:"));
  return head.substr(0, head.find('\n'));
}

void qemu_img(std::vector<std::string> args) {
  args.insert(args.begin(), "qemu-img");
  kiln::run_checked({args});
}

// A monolithicFlat descriptor whose one extent is `extent` (an absolute host
// path, or a bare name qemu resolves next to the descriptor).
void write_flat_vmdk(const fs::path& file, const std::string& extent) {
  kiln::test::write_text(file, "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
                               "createType=\"monolithicFlat\"\n\nRW 8 FLAT \"" + extent + "\" 0\n");
}

// -u: qemu-img records the name without opening it; the host file is only named.
void write_qcow2_backed_by(const fs::path& file, const std::string& backing) {
  qemu_img({"create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", backing, file.string(), "1M"});
}

// A qcow2 whose raw external data file is /etc/passwd. Made with a scratch
// data file whose path is as long as "/etc/passwd" (qemu-img create truncates
// the data file it is given: never name a host file there), then renamed.
void write_qcow2_with_data_file_passwd(const fs::path& file) {
  char scratch_data[] = "/tmp/XXXXXX";
  int fd = ::mkstemp(scratch_data);
  REQUIRE(fd >= 0);
  ::close(fd);
  REQUIRE(std::string(scratch_data).size() == std::string("/etc/passwd").size());
  qemu_img({"create", "-q", "-f", "qcow2", "-o", std::string("data_file=") + scratch_data + ",data_file_raw=on",
            file.string(), "1M"});
  fs::remove(scratch_data);
  std::string image = kiln::read_file(file);
  auto at = image.find(scratch_data);
  REQUIRE(at != std::string::npos);
  image.replace(at, std::strlen(scratch_data), "/etc/passwd");
  std::ofstream(file, std::ios::binary | std::ios::trunc) << image;
}

// What plain qemu-img (no sandbox, as kiln ran it before issue 12) writes.
std::string plain_conversion(const fs::path& source, const std::string& format, const fs::path& out) {
  qemu_img({"convert", "-q", "-f", format, "-O", "raw", source.string(), out.string()});
  return read_prefix(out, 64);
}

bool contains(const std::string& text, const std::string& fragment) {
  return text.find(fragment) != std::string::npos;
}

std::vector<std::string> sandbox_root_entries() {
  kiln::Sandbox sandbox;
  auto result = kiln::run({{"/usr/bin/ls", "-A", "/"}, {}, std::chrono::seconds(10), sandbox});
  REQUIRE(result.exit_code == 0);
  std::vector<std::string> entries;
  std::istringstream lines(result.out);
  for (std::string line; std::getline(lines, line);) entries.push_back(line);
  return entries;
}

}  // namespace

TEST_CASE("a sandboxed program runs as nobody in an empty root that holds only /usr, its links and /dev/null") {
  auto entries = sandbox_root_entries();
  for (const auto& entry : entries) {
    INFO(entry);
    REQUIRE((entry == "usr" || entry == "dev" || entry.starts_with("lib") || entry == "bin" || entry == "sbin"));
  }
  REQUIRE(std::find(entries.begin(), entries.end(), "usr") != entries.end());

  kiln::Sandbox sandbox;
  auto who = kiln::run({{"/usr/bin/id", "-u"}, {}, std::chrono::seconds(10), sandbox});
  REQUIRE(who.out == std::to_string(kiln::kSandboxUid) + "\n");
  auto host_file = kiln::run({{"/usr/bin/cat", "/etc/passwd"}, {}, std::chrono::seconds(10), sandbox});
  REQUIRE(host_file.exit_code != 0);
  REQUIRE(contains(host_file.err, "No such file or directory"));
  // No /proc: nothing to learn about the host or other processes.
  auto proc = kiln::run({{"/usr/bin/ls", "/proc"}, {}, std::chrono::seconds(10), sandbox});
  REQUIRE(proc.exit_code != 0);
  auto env = kiln::run({{"/usr/bin/env"}, {}, std::chrono::seconds(10), sandbox});
  REQUIRE(env.out == "LC_ALL=C\nLANG=C\nPATH=/usr/bin:/bin\n");
}

TEST_CASE("a sandboxed program has no capabilities, no new privileges and no network") {
  kiln::Sandbox sandbox;
  auto dump = kiln::run({{"/usr/bin/setpriv", "--dump"}, {}, std::chrono::seconds(10), sandbox});
  INFO(dump.out << dump.err);
  REQUIRE(dump.exit_code == 0);
  REQUIRE(contains(dump.out, "no_new_privs: 1"));
  REQUIRE(contains(dump.out, "Capability bounding set: [none]"));
  for (const char* set : {"Effective capabilities: ", "Permitted capabilities: ", "Ambient capabilities: "}) {
    auto at = dump.out.find(set);
    if (at != std::string::npos) REQUIRE(dump.out.compare(at + std::strlen(set), 6, "[none]") == 0);
  }

  // A listener on the host's loopback, which an unsandboxed child reaches.
  const std::string connect =
      "import socket,sys\ntry:\n socket.create_connection(('127.0.0.1', int(sys.argv[1])), 2)\n print('connected')\n"
      "except OSError as e:\n print(e)\n";
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  REQUIRE(::listen(listener, 4) == 0);
  socklen_t length = sizeof address;
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length);
  std::string port = std::to_string(ntohs(address.sin_port));
  REQUIRE(kiln::run({{"/usr/bin/python3", "-c", connect, port}}).out == "connected\n");
  auto inside = kiln::run({{"/usr/bin/python3", "-c", connect, port}, {}, std::chrono::seconds(10), sandbox});
  INFO(inside.out << inside.err);
  REQUIRE(contains(inside.out, "Network is unreachable"));
  ::close(listener);
}

TEST_CASE("a sandboxed program reaches its input read-only and its output, and nothing next to them") {
  kiln::test::ScratchDir scratch;
  kiln::test::write_text(scratch / "input", "input bytes");
  kiln::test::write_text(scratch / "sibling", "sibling bytes");
  kiln::test::write_text(scratch / "output", "");
  REQUIRE(::chown((scratch / "output").c_str(), kiln::kSandboxUid, kiln::kSandboxGid) == 0);
  kiln::Sandbox sandbox;
  std::string input = sandbox.add_read_only(scratch / "input", "input");
  std::string output = sandbox.add_writable(scratch / "output", "output");
  auto result = kiln::run({{"/usr/bin/sh", "-c",
                            "cat " + input + " > " + output + "; echo x >> " + input + " || echo read-only; "
                            "cat /sibling " + input + ".sibling 2>/dev/null || echo no-sibling; ls /"},
                           {}, std::chrono::seconds(10), sandbox});
  INFO(result.out << result.err);
  REQUIRE(contains(result.out, "read-only\n"));
  REQUIRE(contains(result.out, "no-sibling\n"));
  REQUIRE(kiln::read_file(scratch / "output") == "input bytes");
  REQUIRE(kiln::read_file(scratch / "input") == "input bytes");

  REQUIRE_KILN_ERROR_MENTIONS(sandbox.add_read_only(scratch / "input", "../etc"), ErrorCode::kInvalidArgument,
                              "one path component");
  fs::copy_file("/usr/bin/true", scratch / "true");
  fs::permissions(scratch / "true", fs::perms::owner_all);
  REQUIRE_KILN_ERROR_MENTIONS(
      kiln::run({{(scratch / "true").string()}, {}, std::chrono::seconds(10), kiln::Sandbox{}}),
      ErrorCode::kSubprocessFailed, "only programs under /usr");
}

TEST_CASE("children inherit no descriptor of kiln's but stdio") {
  // Without O_CLOEXEC on purpose, and far from the numbers the child itself uses.
  int opened = ::open("/etc/hostname", O_RDONLY);
  int leaked = ::dup2(opened, 100);
  ::close(opened);
  REQUIRE(leaked == 100);
  REQUIRE((::fcntl(leaked, F_GETFD) & FD_CLOEXEC) == 0);
  auto result = kiln::run({{"/usr/bin/ls", "/proc/self/fd"}});
  ::close(leaked);
  // ls itself holds one descriptor for the directory it lists.
  std::istringstream lines(result.out);
  std::vector<std::string> fds;
  for (std::string line; std::getline(lines, line);) fds.push_back(line);
  INFO(result.out);
  REQUIRE(fds.size() == 4);
  REQUIRE(std::find(fds.begin(), fds.end(), std::to_string(leaked)) == fds.end());
}

TEST_CASE("a child is killed when the process that started it dies") {
  kiln::test::ScratchDir scratch;
  fs::path pid_file = scratch / "pid";
  pid_t runner = ::fork();
  REQUIRE(runner >= 0);
  if (runner == 0) {
    kiln::run({{"/bin/sh", "-c", "echo $$ > " + pid_file.string() + ".tmp; mv " + pid_file.string() +
                                     ".tmp " + pid_file.string() + "; exec sleep 60"}});
    ::_exit(0);
  }
  for (int i = 0; i < 500 && !fs::exists(pid_file); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  REQUIRE(fs::exists(pid_file));
  pid_t sleeper = std::stoi(kiln::read_file(pid_file));
  REQUIRE(::kill(sleeper, 0) == 0);
  ::kill(runner, SIGKILL);
  ::waitpid(runner, nullptr, 0);
  // Gone, or a zombie waiting for init to reap it: either way no longer sleeping.
  auto state = [&] {
    std::ifstream stat("/proc/" + std::to_string(sleeper) + "/stat");
    std::string pid, name, value;
    stat >> pid >> name >> value;
    return value;
  };
  for (int i = 0; i < 500 && (state() == "S" || state() == "R"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE((state().empty() || state() == "Z" || state() == "X"));
}

TEST_CASE("RLIMIT_FSIZE stops a child's file at the limit") {
  kiln::test::ScratchDir scratch;
  kiln::ResourceLimits limits;
  limits.file_size_bytes = 4096;
  auto result = kiln::run({{"sh", "-c", "head -c 100000 /dev/zero > " + (scratch / "big").string()}, limits});
  REQUIRE(result.exit_code != 0);
  REQUIRE(kiln::file_size(scratch / "big") == 4096);
}

TEST_CASE("a vmdk whose extent is /etc/passwd leaks it through plain qemu-img but not through kiln's converter") {
  kiln::test::ScratchDir scratch;
  fs::path image = scratch / "flat.vmdk";
  write_flat_vmdk(image, "/etc/passwd");
  // The proof that this image is hostile: unsandboxed, qemu copies the host file.
  REQUIRE(plain_conversion(image, "vmdk", scratch / "plain.raw").starts_with(host_secret()));

  REQUIRE_KILN_ERROR_MENTIONS(kiln::image::convert_to_raw(image, "vmdk", scratch / "base", 4096),
                              ErrorCode::kConversionFailed, "Could not open '/etc/passwd'");
  REQUIRE_FALSE(fs::exists(scratch / "base"));
  REQUIRE(kiln::test::tree_listing(scratch.path()).find("sandbox") == std::string::npos);
}

TEST_CASE("a vmdk whose extent is a file next to the input reaches nothing in the sandbox") {
  kiln::test::ScratchDir scratch;
  kiln::test::write_text(scratch / "neighbour.raw", std::string(4096, 'N'));
  fs::path image = scratch / "sibling.vmdk";
  write_flat_vmdk(image, "neighbour.raw");
  REQUIRE(plain_conversion(image, "vmdk", scratch / "plain.raw").starts_with("NNNN"));

  REQUIRE_KILN_ERROR_MENTIONS(kiln::image::convert_to_raw(image, "vmdk", scratch / "base", 4096),
                              ErrorCode::kConversionFailed, "neighbour.raw");
  REQUIRE_FALSE(fs::exists(scratch / "base"));
}

TEST_CASE("a qcow2 whose backing file is /etc/passwd leaks it through plain qemu-img but not through kiln's converter") {
  kiln::test::ScratchDir scratch;
  fs::path image = scratch / "backed.qcow2";
  write_qcow2_backed_by(image, "/etc/passwd");
  REQUIRE(plain_conversion(image, "qcow2", scratch / "plain.raw").starts_with(host_secret()));

  REQUIRE_KILN_ERROR_MENTIONS(kiln::image::convert_to_raw(image, "qcow2", scratch / "base", 1 << 20),
                              ErrorCode::kConversionFailed, "Could not open '/etc/passwd'");
  REQUIRE_FALSE(fs::exists(scratch / "base"));
}

TEST_CASE("a qcow2 whose external data file is /etc/passwd leaks it through plain qemu-img but not through kiln's converter") {
  kiln::test::ScratchDir scratch;
  fs::path image = scratch / "data-file.qcow2";
  write_qcow2_with_data_file_passwd(image);
  REQUIRE(plain_conversion(image, "qcow2", scratch / "plain.raw").starts_with(host_secret()));

  REQUIRE_KILN_ERROR_MENTIONS(kiln::image::convert_to_raw(image, "qcow2", scratch / "base", 1 << 20),
                              ErrorCode::kConversionFailed, "Could not open '/etc/passwd'");
  REQUIRE_FALSE(fs::exists(scratch / "base"));
}

TEST_CASE("the converter makes a root-owned raw base with the image's bytes") {
  kiln::test::ScratchDir scratch;
  fs::path raw = scratch / "data.raw";
  kiln::test::write_text(raw, std::string(65536, 'k') + std::string(65536, '\0'));
  qemu_img({"convert", "-q", "-f", "raw", "-O", "qcow2", raw.string(), (scratch / "data.qcow2").string()});

  kiln::image::convert_to_raw(scratch / "data.qcow2", "qcow2", scratch / "base", 131072);
  REQUIRE(kiln::read_file(scratch / "base") == kiln::read_file(raw));
  struct stat st{};
  REQUIRE(::stat((scratch / "base").c_str(), &st) == 0);
  REQUIRE(st.st_uid == ::geteuid());
  REQUIRE((st.st_mode & 07777) == 0644);
  REQUIRE(kiln::test::tree_listing(scratch.path()).find("sandbox") == std::string::npos);
}

TEST_CASE("a blank qcow2 (an ISO boot's root disk) is made by sandboxed qemu-img and owned by kiln") {
  kiln::test::ScratchDir scratch;
  kiln::disk::create_blank_qcow2(scratch / "disk", 1ULL << 30);
  auto info = kiln::image::parse_qemu_image_info(
      kiln::run_checked({{"qemu-img", "info", "--output=json", "-f", "qcow2", (scratch / "disk").string()}}), "disk");
  REQUIRE(info.virtual_size == 1ULL << 30);
  REQUIRE(info.backing_file.empty());
  struct stat st{};
  REQUIRE(::stat((scratch / "disk").c_str(), &st) == 0);
  REQUIRE(st.st_uid == ::geteuid());
  REQUIRE((st.st_mode & 07777) == 0644);
  REQUIRE(kiln::test::tree_listing(scratch.path()).find("sandbox") == std::string::npos);
  REQUIRE_KILN_ERROR_MENTIONS(kiln::disk::create_blank_qcow2(scratch / "disk", 1ULL << 30), ErrorCode::kIoError,
                              "already exists");
}

TEST_CASE("qemu-img's output may not grow past the verified virtual size") {
  kiln::test::ScratchDir scratch;
  qemu_img({"create", "-q", "-f", "qcow2", (scratch / "big.qcow2").string(), "64M"});
  // As if the parsers had agreed on 1 MiB: the 64 MiB output is refused.
  REQUIRE_KILN_ERROR_MENTIONS(kiln::image::convert_to_raw(scratch / "big.qcow2", "qcow2", scratch / "base", 1 << 20),
                              ErrorCode::kImageTooLarge, "1048576");
  REQUIRE_FALSE(fs::exists(scratch / "base"));
  // And one that writes less than agreed is not a faithful conversion either.
  REQUIRE_KILN_ERROR_MENTIONS(
      kiln::image::convert_to_raw(scratch / "big.qcow2", "qcow2", scratch / "base", 128ULL << 20),
      ErrorCode::kConversionFailed, "not the verified virtual size");
  kiln::image::convert_to_raw(scratch / "big.qcow2", "qcow2", scratch / "base", 64ULL << 20);
  REQUIRE(kiln::file_size(scratch / "base") == 64ULL << 20);
}

TEST_CASE("qemu-img convert's CPU budget grows with the verified virtual size") {
  REQUIRE(kiln::image::conversion_cpu_seconds(0) == 60);
  REQUIRE(kiln::image::conversion_cpu_seconds(1) == 75);
  REQUIRE(kiln::image::conversion_cpu_seconds(1ULL << 30) == 75);
  REQUIRE(kiln::image::conversion_cpu_seconds((1ULL << 30) + 1) == 90);
  REQUIRE(kiln::image::conversion_cpu_seconds(100ULL << 30) == 1560);
}

TEST_CASE("a sandboxed child past its CPU budget is killed") {
  kiln::Sandbox sandbox;
  kiln::ResourceLimits limits;
  limits.cpu_seconds = 1;
  auto start = std::chrono::steady_clock::now();
  auto result = kiln::run({{"/usr/bin/sh", "-c", "while :; do :; done"}, limits, std::chrono::seconds(20), sandbox});
  REQUIRE_FALSE(result.timed_out);
  REQUIRE(result.exit_code == 128 + SIGKILL);
  REQUIRE(std::chrono::steady_clock::now() - start < std::chrono::seconds(10));
}

TEST_CASE("qemu-img info agrees with the inspector on a raw file that is not whole sectors") {
  kiln::test::ScratchDir scratch;
  kiln::test::write_text(scratch / "kernel", std::string(65541, 'k'));
  auto inspection = kiln::image::inspect_file(scratch / "kernel");
  REQUIRE(inspection.virtual_size == 65541);
  auto qemu = kiln::image::require_qemu_agrees(scratch / "kernel", inspection, "raw", "kernel");
  REQUIRE(qemu.virtual_size == 66048);
}

TEST_CASE("qemu-img info agrees with the inspector on a clean qcow2") {
  kiln::test::ScratchDir scratch;
  qemu_img({"create", "-q", "-f", "qcow2", (scratch / "clean.qcow2").string(), "64M"});
  auto inspection = kiln::image::inspect_file(scratch / "clean.qcow2");
  auto qemu = kiln::image::require_qemu_agrees(scratch / "clean.qcow2", inspection, "qcow2", "clean");
  REQUIRE(qemu.format == "qcow2");
  REQUIRE(qemu.virtual_size == 64ULL << 20);
  REQUIRE(qemu.filename == "/image");
}

TEST_CASE("with the inspector off, qemu-img info's second opinion still refuses hostile images") {
  kiln::test::ScratchDir scratch;
  write_qcow2_backed_by(scratch / "backed.qcow2", "/etc/passwd");
  REQUIRE_KILN_ERROR_MENTIONS(
      kiln::image::require_qemu_agrees(scratch / "backed.qcow2", std::nullopt, "qcow2", "backed"),
      ErrorCode::kImageQemuDisagrees, "backing file '/etc/passwd'");
  write_flat_vmdk(scratch / "flat.vmdk", "/etc/passwd");
  REQUIRE_KILN_ERROR_MENTIONS(kiln::image::require_qemu_agrees(scratch / "flat.vmdk", std::nullopt, "vmdk", "flat"),
                              ErrorCode::kImageQemuDisagrees, "Could not open '/etc/passwd'");
  write_qcow2_with_data_file_passwd(scratch / "data-file.qcow2");
  REQUIRE_KILN_ERROR_MENTIONS(
      kiln::image::require_qemu_agrees(scratch / "data-file.qcow2", std::nullopt, "qcow2", "data-file"),
      ErrorCode::kImageQemuDisagrees, "/etc/passwd");
}

TEST_CASE("the second opinion names every difference from the inspector's reading") {
  kiln::image::Inspection inspection;
  inspection.format = "qcow2";
  inspection.virtual_size = 1 << 20;
  kiln::image::QemuImageInfo qemu;
  qemu.format = "qcow2";
  qemu.virtual_size = 1 << 20;
  qemu.filename = "/image";
  kiln::image::require_agreement(inspection, qemu, "qcow2", "same");

  auto differs = [&](kiln::image::QemuImageInfo changed, const std::string& fragment) {
    REQUIRE_KILN_ERROR_MENTIONS(kiln::image::require_agreement(inspection, changed, "qcow2", "img"),
                                ErrorCode::kImageQemuDisagrees, fragment);
  };
  // qemu counts whole sectors: 1000 bytes by the inspector are 1024 by qemu.
  inspection.virtual_size = 1000;
  auto sectors = qemu;
  sectors.virtual_size = 1024;
  kiln::image::require_agreement(inspection, sectors, "qcow2", "rounded");
  REQUIRE_KILN_ERROR_MENTIONS(kiln::image::require_agreement(inspection, qemu, "qcow2", "img"),
                              ErrorCode::kImageQemuDisagrees, "virtual size of 1048576 bytes, the inspector 1000");
  inspection.virtual_size = 1 << 20;

  auto other = qemu;
  other.virtual_size = 2 << 20;
  differs(other, "virtual size of 2097152 bytes, the inspector 1048576");
  other = qemu;
  other.format = "raw";
  differs(other, "reads it as raw, not qcow2");
  other = qemu;
  other.data_file = "/etc/shadow";
  differs(other, "external data file '/etc/shadow'");
  other = qemu;
  other.extent_files = {"/image", "/etc/shadow"};
  differs(other, "vmdk extent in another file, '/etc/shadow'");
}

TEST_CASE("qemu-img info's JSON is read for format, size, backing, data file and extents") {
  auto info = kiln::image::parse_qemu_image_info(
      R"({"virtual-size": 8192, "filename": "/image", "format": "vmdk", "backing-filename": "b",
          "format-specific": {"type": "vmdk", "data": {"extents": [{"filename": "/image"}, {"filename": "x"}]}}})",
      "img");
  REQUIRE(info.format == "vmdk");
  REQUIRE(info.virtual_size == 8192);
  REQUIRE(info.backing_file == "b");
  REQUIRE(info.extent_files == std::vector<std::string>{"/image", "x"});
  auto qcow2 = kiln::image::parse_qemu_image_info(
      R"({"virtual-size": 1, "format": "qcow2", "format-specific": {"type": "qcow2", "data": {"data-file": "/d"}}})", "img");
  REQUIRE(qcow2.data_file == "/d");
  REQUIRE_KILN_ERROR(kiln::image::parse_qemu_image_info("not json", "img"), ErrorCode::kImageQemuDisagrees);
}

// Not run by default: the cost figures quoted in the design notes.
TEST_CASE("the sandbox's cost per qemu-img run", "[.][bench]") {
  kiln::test::ScratchDir scratch;
  qemu_img({"create", "-q", "-f", "qcow2", (scratch / "small.qcow2").string(), "64M"});
  auto median_ms = [](const std::function<void()>& work) {
    std::vector<double> times;
    for (int i = 0; i < 21; ++i) {
      auto start = std::chrono::steady_clock::now();
      work();
      times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    }
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
  };
  std::string image = (scratch / "small.qcow2").string();
  double plain_info = median_ms([&] { kiln::run_checked({{"qemu-img", "info", "--output=json", "-f", "qcow2", image}}); });
  double sandboxed_info = median_ms([&] { kiln::image::qemu_image_info(image, "qcow2", "bench"); });
  double plain_convert = median_ms([&] {
    kiln::run_checked({{"qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", image, (scratch / "p.raw").string()}});
  });
  double sandboxed_convert =
      median_ms([&] { kiln::image::convert_to_raw(image, "qcow2", scratch / "s.raw", 64ULL << 20); });
  WARN("qemu-img info: plain " << plain_info << " ms, sandboxed (second opinion) " << sandboxed_info
                               << " ms; convert: plain " << plain_convert << " ms, sandboxed " << sandboxed_convert
                               << " ms");
  REQUIRE(sandboxed_info < 1000);
}
