#include "checks.h"

#include <algorithm>
#include <cstdio>

#include "kiln/util/error.h"

namespace kiln::virt::detail {

namespace {

constexpr std::size_t kQuotedLength = 64;
constexpr std::size_t kMaxCommandLine = 2048;
constexpr std::size_t kMaxMachineVersion = 32;

bool is_printable_ascii(char c) { return c >= 0x20 && c <= 0x7e; }

bool is_version_character(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == '-';
}

bool is_versioned(std::string_view machine_type, std::string_view prefix) {
  if (!machine_type.starts_with(prefix)) return false;
  std::string_view version = machine_type.substr(prefix.size());
  return !version.empty() && version.size() <= kMaxMachineVersion &&
         std::all_of(version.begin(), version.end(), is_version_character);
}

}  // namespace

void refuse(const std::string& sentence) { throw Error(ErrorCode::kInvalidArgument, sentence); }

std::string quoted(std::string_view value) {
  std::string text = "'";
  for (std::size_t i = 0; i < value.size() && i < kQuotedLength; ++i) {
    char c = value[i];
    if (is_printable_ascii(c) && c != '\\') {
      text += c;
    } else {
      char escaped[5];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", static_cast<unsigned char>(c));
      text += escaped;
    }
  }
  if (value.size() > kQuotedLength) text += "...";
  return text + "'";
}

std::string listing(std::span<const std::string_view> allowed) {
  std::string text;
  for (std::string_view value : allowed) {
    if (!text.empty()) text += ", ";
    text += value;
  }
  return text;
}

bool is_one_of(std::string_view value, std::span<const std::string_view> allowed) {
  return std::find(allowed.begin(), allowed.end(), value) != allowed.end();
}

void require_one_of(const std::string& what, std::string_view value,
                    std::span<const std::string_view> allowed) {
  if (is_one_of(value, allowed)) return;
  refuse(what + " " + quoted(value) + " is not supported; allowed values are " + listing(allowed));
}

bool is_supported_machine_type(std::string_view machine_type) {
  return machine_type == "pc" || machine_type == "q35" || is_versioned(machine_type, "pc-i440fx-") ||
         is_versioned(machine_type, "pc-q35-");
}

void require_command_line(const std::string& what, std::string_view command_line) {
  if (command_line.size() > kMaxCommandLine) {
    refuse(what + " is " + std::to_string(command_line.size()) + " bytes long; Linux accepts at most 2048");
  }
  if (!std::all_of(command_line.begin(), command_line.end(), is_printable_ascii)) {
    refuse(what + " " + quoted(command_line) + " has characters other than printable ASCII");
  }
}

std::string guest_agent_socket_path(const std::string& domain_name) {
  return "/var/lib/libvirt/qemu/org.qemu.guest_agent.0." + domain_name + ".sock";
}

}  // namespace kiln::virt::detail
